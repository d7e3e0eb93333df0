"""Metric sums: adding them over batches and turning them into means.

A step returns {"name": (sum, count)}; a metric is reported as its total sum over its
total count, so it is exact however the data was split into batches, microbatches,
devices and processes. A metric named "perplexity" holds the sum of token negative
log-likelihoods and is reported as exp(sum / count).
"""

from __future__ import annotations

from typing import Iterable

import jax
import numpy as np

EXPONENTIATED = ("perplexity",)  # summed as log values, reported as exp(mean)


def sum_metrics(batches: Iterable[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Adds a sequence of per-batch metric dicts (device or host arrays) in float64 on the host.

    One device-to-host transfer for the whole sequence, so a loop can collect a whole
    epoch's metrics without a sync per step. Values keep any leading ensemble axis: each
    sum and count is 0-d for a single model, (K,) for a vmapped ensemble of K.
    """
    host = jax.device_get(list(batches))
    if not host:
        return {}
    as_float64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
    return jax.tree.map(lambda *xs: np.sum([as_float64(x) for x in xs], axis=0), *host)


def summarize(sums: dict) -> dict[str, np.ndarray]:
    """Means from sums: {"name": sum / count} (count 0 gives 0); perplexity as exp(mean).

    A sum may have more axes than its count (e.g. a (K, C, C) confusion matrix per
    ensemble member over (K,) counts): the count applies to the trailing axes alike.
    """
    out = {}
    for name, (total, count) in sums.items():
        total, count = np.asarray(total, np.float64), np.asarray(count, np.float64)
        count = count.reshape(count.shape + (1,) * (total.ndim - count.ndim))
        mean = np.where(count > 0, total / np.maximum(count, 1e-12), 0.0)
        out[name] = np.exp(mean) if name in EXPONENTIATED else mean
    return out


def count(sums: dict, name: str = "loss") -> np.ndarray:
    """The number of units a metric was averaged over (e.g. real examples or tokens)."""
    return np.asarray(sums[name][1])
