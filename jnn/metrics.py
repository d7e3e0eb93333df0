"""Summing per-batch metric sums and turning them into means."""

from __future__ import annotations

from typing import Iterable

import jax
import numpy as np


def sum_metrics(batches: Iterable[dict]) -> dict[str, np.ndarray]:
    """Adds a sequence of per-batch metric dicts (device or host arrays) in float64 on the host.

    One device-to-host transfer for the whole sequence, so a loop can collect a whole
    epoch's metrics without a sync per step. Values keep any leading ensemble axis: each
    result is 0-d for a single model, (K,) for a vmapped ensemble of K.
    """
    host = jax.device_get(list(batches))
    if not host:
        return {}
    return {key: np.sum([np.asarray(b[key], np.float64) for b in host], axis=0) for key in host[0]}


def summarize(sums: dict) -> dict[str, np.ndarray]:
    """Means from sums: `loss` = loss_sum / count, `accuracy` = correct / count (if counted)."""
    count = np.maximum(np.asarray(sums["count"], np.float64), 1.0)
    out = {"count": np.asarray(sums["count"]), "loss": np.asarray(sums["loss_sum"]) / count}
    if "correct" in sums:
        out["accuracy"] = np.asarray(sums["correct"]) / count
    return out
