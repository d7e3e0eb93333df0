import functools

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jnn import data


def test_digits_builder_holds_every_digit_once_in_a_stratified_split(digits):
    total = len(digits.train["y"]) + len(digits.validation["y"]) + len(digits.test["y"])
    assert total == 1797 and len(digits.test["y"]) == 360
    assert digits.input_shape == (8, 8, 1) and digits.num_outputs == 10
    # stratified: each of the 10 classes holds 35-37 of the 360 test images
    counts = np.bincount(digits.test["y"], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    assert digits.train["x"].max() == 16


def test_validation_split_is_the_requested_share_of_train():
    ds = data.load("digits", validation_fraction=0.25)
    n_train = len(ds.train["y"]) + len(ds.validation["y"])
    assert len(ds.validation["y"]) == round(0.25 * n_train)
    assert len(data.load("digits", validation_fraction=0.0).validation["y"]) == 0
    with pytest.raises(ValueError, match="validation_fraction"):
        data.load("digits", validation_fraction=1.0)


def test_diabetes_is_a_regression_set_with_target_statistics_from_train():
    ds = data.load("diabetes")
    assert ds.spec.task == "regression" and ds.num_outputs == 1 and ds.input_shape == (10,)
    assert np.isclose(ds.y_mean, ds.train["y"].mean()) and ds.y_std > 10


def test_pad_batch_repeats_rows_and_marks_them():
    batch = {"x": np.arange(3)[:, None] * np.ones((3, 2)), "y": np.array([7, 8, 9])}
    padded = data.pad_batch(batch, 5)
    np.testing.assert_array_equal(padded["y"], [7, 8, 9, 7, 8])
    np.testing.assert_array_equal(padded["mask"], [True, True, True, False, False])


def test_an_epoch_covers_every_example_once_in_fixed_shape_batches(digits):
    batches = list(data.epoch_batches(digits.train, 128, shuffle_seed=0, epoch=0))
    assert len(batches) == data.num_batches(len(digits.train["y"]), 128)
    assert {b["x"].shape for b in batches} == {(128, 8, 8, 1)}
    kept = np.concatenate([b["x"][b["mask"]].reshape(-1, 64) for b in batches])
    expected = digits.train["x"].reshape(-1, 64)
    assert len(kept) == len(expected)
    assert sorted(map(bytes, kept)) == sorted(map(bytes, expected))


def test_shuffling_is_reproducible_and_differs_between_epochs(digits):
    order = lambda epoch, seed=0: data.epoch_batches(digits.train, 64, shuffle_seed=seed,
                                                     epoch=epoch)[0]["y"]
    np.testing.assert_array_equal(order(0), order(0))
    assert not np.array_equal(order(0), order(1))
    assert not np.array_equal(order(0), order(0, seed=1))
    unshuffled = data.epoch_batches(digits.train, 64)[0]["y"]
    np.testing.assert_array_equal(unshuffled, digits.train["y"][:64])


def test_normalize_scales_then_standardises(digits):
    transform = functools.partial(data.normalize, scale=1 / 16, mean=np.float32(0.5),
                                  std=np.float32(0.5))
    batch = data.epoch_batches(digits.train, 32, transform=transform)[0]
    assert batch["x"].dtype == np.float32
    np.testing.assert_allclose(batch["x"], (digits.train["x"][:32] / 16 - 0.5) / 0.5, rtol=1e-6)


def test_random_crop_and_flip_shifts_and_mirrors_within_the_padding():
    x = np.arange(2 * 6 * 6).reshape(2, 6, 6, 1).astype(np.float32) + 1
    out = data.random_crop_and_flip({"x": x}, np.random.default_rng(0), padding=2)["x"]
    assert out.shape == x.shape
    for img, orig in zip(out, x):
        padded = np.pad(orig, ((2, 2), (2, 2), (0, 0)))
        windows = [padded[i:i + 6, j:j + 6] for i in range(5) for j in range(5)]
        assert any(np.array_equal(img, w) or np.array_equal(img, w[:, ::-1]) for w in windows)


def test_augmentation_varies_between_epochs_and_needs_a_seed(digits):
    aug = lambda epoch: data.epoch_batches(digits.train, 16, augment=data.random_crop_and_flip,
                                           shuffle_seed=3, epoch=epoch)[0]["x"]
    np.testing.assert_array_equal(aug(0), aug(0))
    with pytest.raises(ValueError, match="shuffle_seed"):
        data.epoch_batches(digits.train, 16, augment=data.random_crop_and_flip)


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("fashion_mnist", (28, 28, 1)),
                                        ("cifar10", (32, 32, 3))])
def test_tfds_datasets_load_through_data_source(tmp_path, name, shape):
    with tfds.testing.mock_data(num_examples=30):
        ds = data.load(name, data_dir=str(tmp_path))
    assert ds.input_shape == shape and ds.num_outputs == 10
    assert len(ds.train["y"]) + len(ds.validation["y"]) == 30


def test_a_missing_dataset_says_how_to_prepare_it(tmp_path):
    with pytest.raises(data.DatasetUnavailableError, match="tfds build cifar10 --file_format=array_record"):
        data.load("cifar10", data_dir=str(tmp_path))


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*cifar10, diabetes, digits"):
        data.load("imagenet")


@pytest.mark.parametrize("labels,match", [(np.array([0, 10]), r"\[0, 10\].*\[0, 9\]"),
                                          (np.array([-1, 3]), "labels must lie"),
                                          (np.array([0.0, 1.0]), "must be integers")])
def test_labels_out_of_range_are_rejected(labels, match):
    with pytest.raises(ValueError, match=match):
        data.check_labels(labels, 10)


def test_unequal_array_lengths_are_rejected():
    with pytest.raises(ValueError, match="equal lengths"):
        data.ArraySource({"x": np.zeros(3), "y": np.zeros(4)})
