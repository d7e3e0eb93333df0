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


@pytest.mark.parametrize("n,batch_size", [(3, 8), (1, 4), (5, 6), (4, 4)])
def test_pad_batch_marks_exactly_the_real_rows_and_keeps_them(n, batch_size):
    batch = {"x": np.arange(n * 6, dtype=np.float32).reshape(n, 3, 2) + 1,
             "y": np.arange(n) + 10}
    original = {k: v.copy() for k, v in batch.items()}
    padded = data.pad_batch(batch, batch_size)
    assert padded["mask"].dtype == bool
    np.testing.assert_array_equal(padded["mask"], np.arange(batch_size) < n)
    for k in ("x", "y"):
        assert padded[k].shape == (batch_size,) + original[k].shape[1:]
        np.testing.assert_array_equal(padded[k][:n], original[k])  # real rows unchanged
        # the pads repeat the batch's own rows, cyclically
        np.testing.assert_array_equal(padded[k][n:], original[k][np.arange(n, batch_size) % n])
        np.testing.assert_array_equal(batch[k], original[k])  # the input is left alone


def test_pad_batch_keeps_an_existing_mask_and_refuses_an_oversized_batch():
    batch = {"y": np.array([1, 2, 3]), "mask": np.array([True, False, True])}
    padded = data.pad_batch(batch, 5)
    np.testing.assert_array_equal(padded["mask"], [True, False, True, False, False])
    np.testing.assert_array_equal(padded["y"], [1, 2, 3, 1, 2])
    with pytest.raises(ValueError, match="larger than batch_size"):
        data.pad_batch({"y": np.arange(6)}, 5)


@pytest.mark.parametrize("shuffle_seed", [None, 4])
def test_the_last_batch_is_padded_and_masked_and_rows_keep_their_labels(shuffle_seed):
    n, batch_size = 21, 8  # batches of 8, 8 and 5 real rows
    arrays = {"x": np.repeat(np.arange(n, dtype=np.float32), 4).reshape(n, 2, 2, 1),
              "y": np.arange(n) * 3}
    batches = list(data.epoch_batches(arrays, batch_size, shuffle_seed=shuffle_seed))
    assert len(batches) == 3
    for i, batch in enumerate(batches):
        assert batch["x"].shape == (8, 2, 2, 1) and batch["y"].shape == (8,)
        np.testing.assert_array_equal(batch["mask"], np.arange(8) < (8 if i < 2 else 5))
        # every row, real or pad, is an example with its own label
        np.testing.assert_array_equal(batch["x"][:, 0, 0, 0] * 3, batch["y"])
    last = batches[-1]
    np.testing.assert_array_equal(last["y"][5:], last["y"][:3])  # pads repeat real rows
    real = np.concatenate([b["y"][b["mask"]] for b in batches])
    if shuffle_seed is None:
        np.testing.assert_array_equal(real, arrays["y"])  # in order, unchanged
    else:
        assert sorted(real) == list(arrays["y"]) and not np.array_equal(real, arrays["y"])


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


def _distinct_images(b, h=8, w=8, c=2):
    """b images whose pixels are all distinct and nonzero: no image equals a shift or a
    mirror of itself or of another image, so every crop is identified by its offset."""
    return np.arange(1, b * h * w * c + 1, dtype=np.float32).reshape(b, h, w, c)


def _crop_offsets(out, x, padding, mirrored=False):
    """For each image, the (dy, dx) of the padded window that it equals (or None)."""
    h, w = x.shape[1:3]
    offsets = []
    for img, orig in zip(out, x):
        padded = np.pad(orig, ((padding, padding), (padding, padding), (0, 0)))
        found = [(i, j) for i in range(2 * padding + 1) for j in range(2 * padding + 1)
                 if np.array_equal(img, padded[i:i + h, j:j + w][:, ::-1] if mirrored
                                   else padded[i:i + h, j:j + w])]
        offsets.append(found[0] if found else None)
    return offsets


def test_random_crop_shifts_by_up_to_the_padding_in_both_directions():
    x = _distinct_images(256)
    # the default padding is the seed's RandomCrop(H, padding=4)
    out = data.random_crop_and_flip({"x": x, "y": np.arange(256)}, np.random.default_rng(0),
                                    flip=False)
    assert out["x"].shape == x.shape
    np.testing.assert_array_equal(out["y"], np.arange(256))
    offsets = _crop_offsets(out["x"], x, 4)
    assert None not in offsets  # each image is a zero-padded shifted copy of its original
    dy, dx = np.array(offsets).T
    # offsets cover 0..8 in each direction (4 = unshifted), uniformly
    assert set(dy) == set(dx) == set(range(9))
    assert abs(dy.mean() - 4) < 0.6 and abs(dx.mean() - 4) < 0.6
    assert ((dy == 4) & (dx == 4)).mean() < 0.05  # most images really moved
    assert not np.array_equal(dy, dx)  # rows and columns shift independently
    shifted = [i for i in range(256) if dy[i] == 0 and dx[i] == 8][0]
    # a crop at the top-right corner: 4 rows of zeros on top, 4 columns of zeros right
    np.testing.assert_array_equal(out["x"][shifted, :4], 0)
    np.testing.assert_array_equal(out["x"][shifted, :, 4:], 0)
    np.testing.assert_array_equal(out["x"][shifted, 4:, :4], x[shifted, :4, 4:])


def test_random_flip_mirrors_left_right_half_the_images():
    x = _distinct_images(256)
    out = data.random_crop_and_flip({"x": x}, np.random.default_rng(1), padding=0)["x"]
    same = np.array([np.array_equal(o, i) for o, i in zip(out, x)])
    mirrored = np.array([np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x)])
    assert np.all(same | mirrored) and not np.any(same & mirrored)
    assert 0.4 < mirrored.mean() < 0.6


def test_random_crop_and_flip_together_give_a_shifted_copy_or_its_mirror():
    x = _distinct_images(128)
    out = data.random_crop_and_flip({"x": x}, np.random.default_rng(2), padding=4)["x"]
    plain, flipped = _crop_offsets(out, x, 4), _crop_offsets(out, x, 4, mirrored=True)
    assert all(p is not None or f is not None for p, f in zip(plain, flipped))
    n_flipped = sum(f is not None for f in flipped)
    assert 0.35 * 128 < n_flipped < 0.65 * 128


def test_augmentation_differs_between_epochs_and_batches_and_is_reproducible():
    # every example is the same image: only the augmentation (not the shuffle) moves pixels
    n = 32
    arrays = {"x": np.repeat(_distinct_images(1), n, axis=0), "y": np.arange(n)}
    aug = lambda epoch, seed=3: data.epoch_batches(  # noqa: E731
        arrays, 16, augment=data.random_crop_and_flip, shuffle_seed=seed, epoch=epoch)
    plain = data.epoch_batches(arrays, 16, shuffle_seed=3, epoch=0)[0]
    e0, e1 = aug(0)[0], aug(1)[0]
    assert not np.array_equal(e0["x"], plain["x"])  # augmentation is applied
    np.testing.assert_array_equal(e0["y"], plain["y"])
    np.testing.assert_array_equal(e0["mask"], plain["mask"])
    assert not np.array_equal(e0["x"], e1["x"])  # another epoch, other crops and flips
    assert not np.array_equal(e0["x"], aug(0)[1]["x"])  # another batch, other crops
    assert not np.array_equal(e0["x"], aug(0, seed=4)[0]["x"])  # another seed
    np.testing.assert_array_equal(aug(0)[0]["x"], e0["x"])  # same (seed, epoch): the same
    # within a batch the images get their own crops
    assert len({img.tobytes() for img in e0["x"]}) > 8


def test_augmentation_needs_a_seed(digits):
    with pytest.raises(ValueError, match=r"^augmentation needs a shuffle_seed \(it is applied "
                                         r"to training data\)$"):
        data.epoch_batches(digits.train, 16, augment=data.random_crop_and_flip)


@pytest.mark.parametrize("batch_size", [0, -3])
def test_a_batch_size_below_one_is_refused(batch_size):
    arrays = {"x": np.zeros((5, 2), np.float32), "y": np.arange(5)}
    with pytest.raises(ValueError, match=rf"^batch_size must be a positive integer, got "
                                         rf"{batch_size}$"):
        data.epoch_batches(arrays, batch_size)


def test_batches_of_one_and_the_default_epoch_zero():
    arrays = {"x": np.arange(5, dtype=np.float32)[:, None], "y": np.arange(5)}
    ones = data.epoch_batches(arrays, 1)
    assert len(ones) == 5 and [int(b["y"][0]) for b in ones] == [0, 1, 2, 3, 4]
    assert all(b["mask"].tolist() == [True] for b in ones)
    default = [b["y"].tolist() for b in data.epoch_batches(arrays, 2, shuffle_seed=7)]
    epoch0 = [b["y"].tolist() for b in data.epoch_batches(arrays, 2, shuffle_seed=7, epoch=0)]
    epoch1 = [b["y"].tolist() for b in data.epoch_batches(arrays, 2, shuffle_seed=7, epoch=1)]
    assert default == epoch0 and default != epoch1


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


def test_pad_batch_turns_an_integer_mask_into_a_boolean_one():
    padded = data.pad_batch({"y": np.arange(3), "mask": np.array([1, 0, 1])}, 5)
    assert padded["mask"].dtype == bool
    assert padded["mask"].tolist() == [True, False, True, False, False]


def test_a_batch_source_gathers_the_rows_of_its_order_and_keeps_a_short_last_batch():
    arrays = {"x": np.arange(10.0)[:, None], "y": np.arange(10)}
    source = data.BatchSource(arrays, np.array([9, 0, 8, 1, 7, 2, 6]), 3)
    assert len(source) == 3
    np.testing.assert_array_equal(source[0]["y"], [9, 0, 8])
    np.testing.assert_array_equal(source[2]["x"][:, 0], [6.0])
    with pytest.raises(ValueError, match="equal lengths"):
        data.BatchSource({"x": np.zeros(3), "y": np.zeros(4)}, np.arange(3), 2)
