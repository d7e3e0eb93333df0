"""tfds builders over the real datasets scikit-learn ships (no download needed).

`SklearnDigits`: the UCI handwritten digits, 1,797 8x8 grey images with values 0..16,
10 classes. `SklearnDiabetes`: 442 patients, 10 standardised features, a disease
progression target (25..346). Neither has an official test split; each gets a fixed,
stratified (digits) or random (diabetes) 80/20 train/test split with seed 0, so every
machine sees the same split. Features are `tfds.features.Tensor`, so preparing into
array_record needs no TensorFlow.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

_TEST_FRACTION = 0.2


def _split_indices(n: int, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(n), test_size=_TEST_FRACTION, random_state=0,
                                   stratify=labels)
    return np.sort(train), np.sort(test)


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
    """UCI handwritten digits (scikit-learn's bundled copy) as a tfds dataset."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Stratified 80/20 train/test split, seed 0."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="UCI ML handwritten digits, 8x8 images, values 0..16.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the data ships with scikit-learn
        from sklearn.datasets import load_digits

        digits = load_digits()
        train, test = _split_indices(len(digits.target), digits.target)
        return {"train": self._generate_examples(digits, train),
                "test": self._generate_examples(digits, test)}

    def _generate_examples(self, digits, indices):
        for i in indices:
            yield int(i), {"image": digits.images[i].astype(np.uint8)[..., None],
                           "label": int(digits.target[i])}


class SklearnDiabetes(tfds.core.GeneratorBasedBuilder):
    """The diabetes regression data (scikit-learn's bundled copy) as a tfds dataset."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Random 80/20 train/test split, seed 0."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Diabetes: 10 standardised features, disease progression target.",
            features=tfds.features.FeaturesDict({
                "features": tfds.features.Tensor(shape=(10,), dtype=np.float32),
                "target": tfds.features.Tensor(shape=(), dtype=np.float32),
            }),
            supervised_keys=("features", "target"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        from sklearn.datasets import load_diabetes

        data = load_diabetes()
        train, test = _split_indices(len(data.target), None)
        return {"train": self._generate_examples(data, train),
                "test": self._generate_examples(data, test)}

    def _generate_examples(self, data, indices):
        for i in indices:
            yield int(i), {"features": data.data[i].astype(np.float32),
                           "target": np.float32(data.target[i])}
