"""Datasets by name: tfds data sources read into memory, a validation split carved from train.

    ds = jnn.data.load("digits", validation_fraction=0.2)
    ds.train["x"].shape  # (N, 8, 8, 1) uint8

`digits` and `diabetes` are built here from scikit-learn's bundled copies (prepared
into the tfds data dir on first use, in well under a second). `mnist`,
`fashion_mnist` and `cifar10` are read with `tfds.data_source` (no TensorFlow needed)
when prepared in array_record format; when they are not, `DatasetUnavailableError`
says how to prepare them. Your own in-memory arrays join them by name:

    jnn.data.register_arrays("blobs", train={"x": x, "y": y}, test={"x": xt, "y": yt})
    ds = jnn.data.load("blobs", validation_fraction=0.2)
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from jnn.data.builders import SklearnDiabetes, SklearnDigits


class DatasetUnavailableError(FileNotFoundError):
    """A tfds dataset is not prepared in the data dir (and cannot be downloaded here)."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What jnn knows of a dataset: where its arrays are and how to scale them.

    Inputs are normalised as (x * scale - mean) / std, per channel where mean and std
    are tuples; mean and std None: computed from the training split (see `load`).
    """

    name: str
    tfds_name: str
    x_key: str
    y_key: str
    task: str  # "classification" or "regression"
    scale: float = 1.0
    mean: tuple[float, ...] | None = (0.0,)
    std: tuple[float, ...] | None = (1.0,)
    num_classes: int = 10  # classification only
    builder: type | None = None  # a builder jnn ships; None: from the tfds catalog
    # registered arrays, {"train": {"x", "y"}, "test": {"x", "y"}}; None: a tfds dataset
    arrays: dict | None = dataclasses.field(default=None, repr=False, compare=False)


SPECS = {
    # digits: 0..16 -> [0, 1] -> [-1, 1]
    "digits": DatasetSpec("digits", "sklearn_digits", "image", "label", "classification",
                          scale=1 / 16, mean=(0.5,), std=(0.5,), builder=SklearnDigits),
    # diabetes features are already centred and scaled by scikit-learn; standardise
    # further from the training split (see `load`).
    "diabetes": DatasetSpec("diabetes", "sklearn_diabetes", "features", "target", "regression",
                            builder=SklearnDiabetes),
    "mnist": DatasetSpec("mnist", "mnist", "image", "label", "classification",
                         scale=1 / 255, mean=(0.1307,), std=(0.3081,)),
    "fashion_mnist": DatasetSpec("fashion_mnist", "fashion_mnist", "image", "label",
                                 "classification", scale=1 / 255, mean=(0.2860,), std=(0.3530,)),
    # cifar10: the seed's Normalize(mean=0.5, std=0.5) per channel
    "cifar10": DatasetSpec("cifar10", "cifar10", "image", "label", "classification",
                           scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
}


_TASKS = ("classification", "regression")


def dataset_names() -> list[str]:
    """The dataset names `load` accepts (the built-in ones and those registered)."""
    return sorted(SPECS)


def _check_split(name: str, split: str, arrays, task: str) -> dict:
    if not isinstance(arrays, dict) or set(arrays) != {"x", "y"}:
        keys = sorted(arrays) if isinstance(arrays, dict) else type(arrays).__name__
        raise ValueError(f"{name}/{split} must be a dict with the keys 'x' and 'y', got {keys}")
    x, y = np.asarray(arrays["x"]), np.asarray(arrays["y"])
    for key, value in (("x", x), ("y", y)):
        if value.ndim == 0 or not (np.issubdtype(value.dtype, np.number)
                                   or value.dtype == bool):
            raise ValueError(f"{name}/{split}: {key} must be a numeric array (N, ...), got "
                             f"dtype {value.dtype} and shape {value.shape}")
    if len(x) != len(y):
        raise ValueError(f"{name}/{split}: x has {len(x)} examples but y has {len(y)}; give "
                         "one label per example")
    if task == "regression" and y.ndim != 1:
        raise ValueError(f"{name}/{split}: regression targets must be one value per example "
                         f"(N,), got shape {y.shape}")
    return {"x": x, "y": y}


def register_arrays(name: str, *, train: dict, test: dict, task: str = "classification",
                    num_classes: int | None = None) -> None:
    """Makes in-memory arrays a dataset that `load(name)` returns like a tfds one.

    `load` carves the validation split from `train` as for any dataset and normalises
    inputs with statistics of the training split (per channel for (N, H, W, C) images,
    per feature for (N, D) rows); regression targets are standardised as for diabetes.
    Registering a name again replaces its arrays.

    Args:
      name: the dataset's name (not one of the built-in datasets).
      train, test: {"x": (N, ...) inputs, "y": (N,) labels or targets}.
      task: "classification" (integer labels) or "regression" (one float target each).
      num_classes: classification only; None: the largest label plus one.

    Raises:
      ValueError: a built-in name, an unknown task, arrays of the wrong form, or labels
        outside [0, num_classes).
    """
    if name in SPECS and SPECS[name].arrays is None:
        raise ValueError(f"{name!r} is a built-in dataset; register your arrays under another "
                         "name")
    if task not in _TASKS:
        raise ValueError(f"task must be one of {', '.join(_TASKS)}, got {task!r}")
    splits = {split: _check_split(name, split, arrays, task)
              for split, arrays in (("train", train), ("test", test))}
    if task == "regression":
        if num_classes is not None:
            raise ValueError(f"{name}: num_classes is for classification; a regression task "
                             "has one output (leave num_classes out)")
        num_classes = 1
    else:
        if num_classes is not None and (type(num_classes) is not int or num_classes < 1):
            raise ValueError(f"{name}: num_classes must be a positive integer, got "
                             f"{num_classes!r}")
        labels = np.concatenate([splits["train"]["y"], splits["test"]["y"]])
        if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
            raise ValueError(f"{name}: class labels must be integers >= 0 (0 .. num_classes-1), "
                             f"got dtype {labels.dtype}" + (
                                 f" and labels down to {labels.min()}" if labels.size else ""))
        if num_classes is None:
            num_classes = int(labels.max()) + 1 if labels.size else 1
        elif labels.size and labels.max() >= num_classes:
            raise ValueError(f"{name}: labels go up to {labels.max()} but num_classes is "
                             f"{num_classes}; pass num_classes={labels.max() + 1} or remap "
                             "the labels")
    SPECS[name] = DatasetSpec(name, name, "x", "y", task, mean=None, std=None,
                              num_classes=num_classes, arrays=splits)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Splits as dicts of host arrays {"x": (N, ...), "y": (N,)}, plus what models need.

    Attributes:
      num_outputs: classes for classification, 1 for scalar regression.
      x_mean, x_std: per-feature normalisation (broadcast against one example).
      y_mean, y_std: target standardisation for regression (0 and 1 otherwise).
    """

    spec: DatasetSpec
    train: dict
    validation: dict
    test: dict
    num_outputs: int
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float = 0.0
    y_std: float = 1.0

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train["x"].shape[1:])


def default_data_dir() -> str:
    """$TFDS_DATA_DIR, else tfds's default (~/tensorflow_datasets)."""
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def _prepare_instructions(spec: DatasetSpec, data_dir: str) -> str:
    return (f"dataset {spec.name!r} is not prepared in {data_dir}; on a machine with internet run "
            f"`pip install tensorflow tensorflow-datasets && tfds build {spec.tfds_name} "
            f"--file_format=array_record --data_dir {data_dir}` (or copy a prepared "
            f"{spec.tfds_name}/ folder there, or pass data_dir=DIR pointing at one)")


def _read_split(source, spec: DatasetSpec) -> dict:
    # Element by element: the same path for real array_record sources and for
    # tfds.testing.mock_data (whose batched __getitems__ is broken in tfds 4.9.10).
    rows = [source[i] for i in range(len(source))]
    return {"x": np.stack([np.asarray(r[spec.x_key]) for r in rows]),
            "y": np.asarray([r[spec.y_key] for r in rows])}


def read_tfds_split(name: str, split: str, data_dir: str | None = None) -> dict:
    """Reads one split of a jnn dataset into memory: {"x": (N, ...), "y": (N,)}.

    Registered arrays (`register_arrays`) are returned as they are; `data_dir` is for
    tfds datasets.

    Raises:
      ValueError: unknown dataset name (lists the known ones).
      DatasetUnavailableError: the dataset is not prepared in `data_dir`.
    """
    if name not in SPECS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(dataset_names())}")
    spec = SPECS[name]
    if spec.arrays is not None:
        return dict(spec.arrays[split])
    data_dir = data_dir or default_data_dir()
    if spec.builder is not None:
        builder = spec.builder(data_dir=data_dir, file_format="array_record")
        if not builder.is_prepared():
            builder.download_and_prepare()
        source = builder.as_data_source(split=split)
    else:
        try:
            source = tfds.data_source(spec.tfds_name, split=split, data_dir=data_dir,
                                      download=False)
        except Exception as err:  # tfds raises several types for "not there"
            raise DatasetUnavailableError(_prepare_instructions(spec, data_dir)) from err
    return _read_split(source, spec)


def check_labels(labels: np.ndarray, num_classes: int, where: str = "labels") -> None:
    """Raises ValueError unless `labels` are integers in [0, num_classes)."""
    if labels.size == 0:
        return
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{where}: class labels must be integers, got dtype {labels.dtype}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"{where}: labels range over [{low}, {high}] but the model has "
                         f"{num_classes} classes; labels must lie in [0, {num_classes - 1}]")


def load(name: str, *, data_dir: str | None = None, validation_fraction: float = 0.2,
         split_seed: int = 0) -> Dataset:
    """Loads dataset `name` with a validation split carved from its training split.

    Inputs are normalised by the dataset's fixed statistics (tfds datasets) or by those of
    the training split (registered arrays, regression); regression targets are
    standardised by the training split's mean and std.

    Args:
      name: one of `dataset_names()` (tfds datasets and `register_arrays` names).
      data_dir: the tfds data dir (default: `default_data_dir()`).
      validation_fraction: the share of the training split held out for validation
        (the seed holds out 20%); 0 for none.
      split_seed: seeds which training examples are held out.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    train = read_tfds_split(name, "train", data_dir)
    test = read_tfds_split(name, "test", data_dir)
    spec = SPECS[name]
    order = np.random.default_rng(split_seed).permutation(len(train["y"]))
    n_val = int(round(validation_fraction * len(order)))
    validation = {k: v[np.sort(order[:n_val])] for k, v in train.items()}
    train = {k: v[np.sort(order[n_val:])] for k, v in train.items()}
    if spec.task == "classification":
        for split, arrays in (("train", train), ("validation", validation), ("test", test)):
            check_labels(arrays["y"], spec.num_classes, f"{name}/{split}")
        if spec.mean is None:  # registered arrays: statistics of the training split
            x_mean, x_std = _input_statistics(train["x"])
        else:
            x_mean, x_std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
        return Dataset(spec, train, validation, test, spec.num_classes, x_mean, x_std)
    x = train["x"].astype(np.float32)
    if not len(x):  # nothing to take statistics of (the harness refuses such a split)
        return Dataset(spec, train, validation, test, num_outputs=1,
                       x_mean=np.zeros(x.shape[1:], np.float32),
                       x_std=np.ones(x.shape[1:], np.float32))
    return Dataset(spec, train, validation, test, num_outputs=1,
                   x_mean=x.mean(axis=0), x_std=x.std(axis=0) + 1e-8,
                   y_mean=float(train["y"].mean()), y_std=float(train["y"].std()))


def _input_statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of training inputs (N, ...): per channel of (N, H, W, C) images, per
    feature of (N, D) rows (broadcast against one example); a constant channel gets std 1."""
    x = x.astype(np.float32)
    axes = tuple(range(x.ndim - 1)) if x.ndim > 2 else (0,)
    shape = tuple(x.shape[a] for a in range(x.ndim) if a not in axes)
    if not len(x):
        return np.zeros(shape, np.float32), np.ones(shape, np.float32)
    mean, std = x.mean(axis=axes), x.std(axis=axes)
    return mean, np.where(std > 0, std, 1.0).astype(np.float32)
