"""Batches with grain: shuffle, batch, pad the last batch with a mask, normalise, augment.

Every batch has exactly `batch_size` rows. The last partial batch is filled with
copies of its own first rows and carries `mask` = False on them, so the loss and the
metrics ignore them, BatchNorm sees real-looking data, and no shape ever changes (no
recompiles). Pipelines are `grain.MapDataset`s: random access, so a position in an
epoch is just (epoch, batch index) and a run can restart from it exactly.
"""

from __future__ import annotations

import functools
from typing import Callable

import grain
import numpy as np


class ArraySource:
    """A grain random-access source over a dict of equal-length arrays; rows are dicts."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        lengths = {len(v) for v in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"arrays must have equal lengths, got {sorted(lengths)}")
        self._arrays = arrays
        self._len = lengths.pop()

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {k: v[index] for k, v in self._arrays.items()}


class BatchSource:
    """A grain random-access source of batches: batch i holds the rows
    order[i * batch_size:(i + 1) * batch_size] of `arrays`, gathered at once (one
    fancy index per array instead of one read per row; the last batch may be short)."""

    def __init__(self, arrays: dict[str, np.ndarray], order: np.ndarray, batch_size: int):
        ArraySource(arrays)  # the same length check
        self._arrays, self._order, self._batch_size = arrays, order, batch_size

    def __len__(self) -> int:
        return num_batches(len(self._order), self._batch_size)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        rows = self._order[index * self._batch_size:(index + 1) * self._batch_size]
        return {k: v[rows] for k, v in self._arrays.items()}


def pad_batch(batch: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """Pads a batch of n <= batch_size rows to batch_size rows and adds `mask` (batch_size,).

    The padding rows repeat the batch's own rows (cyclically); mask marks the n real ones.
    """
    n = len(next(iter(batch.values())))
    if n > batch_size:
        raise ValueError(f"batch of {n} rows is larger than batch_size {batch_size}")
    index = np.arange(batch_size) % n
    padded = {k: v[index] for k, v in batch.items()}
    mask = np.arange(batch_size) < n
    if "mask" in batch:
        mask = mask & np.asarray(batch["mask"], bool)[index]
    padded["mask"] = mask
    return padded


def normalize(batch: dict, *, scale: float, mean: np.ndarray, std: np.ndarray) -> dict:
    """x -> (x * scale - mean) / std as float32; the other keys pass through."""
    x = batch["x"].astype(np.float32) * np.float32(scale)
    return {**batch, "x": (x - mean) / std}


def random_crop_and_flip(batch: dict, rng: np.random.Generator, *, padding: int = 4,
                         flip: bool = True) -> dict:
    """The seed's CIFAR augmentation on an NHWC batch: RandomCrop(H, padding) + horizontal flip.

    Each image is zero-padded by `padding` pixels on each side, cropped back to (H, W) at
    a random offset, and mirrored left-right with probability 1/2.
    """
    x = batch["x"]
    b, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    dy = rng.integers(0, 2 * padding + 1, size=b)
    dx = rng.integers(0, 2 * padding + 1, size=b)
    rows = dy[:, None] + np.arange(h)[None, :]  # (B, H)
    cols = dx[:, None] + np.arange(w)[None, :]  # (B, W)
    out = padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    if flip:
        mirror = rng.random(b) < 0.5
        out[mirror] = out[mirror, :, ::-1]
    return {**batch, "x": out}


def num_batches(num_examples: int, batch_size: int) -> int:
    """Batches per epoch with the last partial batch kept (padded)."""
    return -(-num_examples // batch_size)


def epoch_batches(arrays: dict[str, np.ndarray], batch_size: int, *,
                  transform: Callable[[dict], dict] | None = None,
                  augment: Callable[[dict, np.random.Generator], dict] | None = None,
                  shuffle_seed: int | None = None, epoch: int = 0) -> grain.MapDataset:
    """One epoch of padded, masked batches over `arrays` as a grain MapDataset.

    Args:
      arrays: {"x": (N, ...), "y": (N, ...)} host arrays.
      transform: a deterministic per-batch function (e.g. `normalize` with its stats bound).
      augment: a random per-batch function `(batch, rng) -> batch`, applied after transform.
      shuffle_seed: None keeps the order (evaluation); an int shuffles, differently in
        every epoch and reproducibly for the same (seed, epoch).
      epoch: the epoch index, mixed into the shuffle and augmentation seeds.

    Returns:
      A MapDataset of `num_batches(N, batch_size)` dicts with x, y and mask (batch_size,).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    if augment is not None and shuffle_seed is None:
        raise ValueError("augmentation needs a shuffle_seed (it is applied to training data)")
    n = len(ArraySource(arrays))
    order = np.arange(n)
    if shuffle_seed is not None:  # this epoch's permutation, and its augmentation seed
        shuffle_state, augment_seed = np.random.SeedSequence([shuffle_seed, epoch]).spawn(2)
        order = np.random.default_rng(shuffle_state).permutation(n)
    ds = grain.MapDataset.source(BatchSource(arrays, order, batch_size))
    ds = ds.map(functools.partial(pad_batch, batch_size=batch_size))
    if transform is not None:
        ds = ds.map(transform)
    if augment is not None:  # batch i's generator: grain's, from (augment_seed, i)
        ds = ds.random_map(augment, seed=int(augment_seed.generate_state(1)[0]))
    return ds
