"""Data: datasets by name (tfds, or your in-memory arrays via `register_arrays`), and grain
pipelines of fixed-shape, masked batches."""

from jnn.data.builders import SklearnDiabetes, SklearnDigits
from jnn.data.pipeline import (ArraySource, BatchSource, epoch_batches, normalize, num_batches,
                               pad_batch, random_crop_and_flip)
from jnn.data.sources import (SPECS, Dataset, DatasetSpec, DatasetUnavailableError, check_labels,
                              dataset_names, default_data_dir, load, read_tfds_split,
                              register_arrays)

__all__ = [
    "ArraySource", "BatchSource", "Dataset", "DatasetSpec", "DatasetUnavailableError", "SPECS",
    "SklearnDiabetes", "SklearnDigits", "check_labels", "dataset_names", "default_data_dir",
    "epoch_batches", "load", "normalize", "num_batches", "pad_batch", "random_crop_and_flip",
    "read_tfds_split", "register_arrays",
]
