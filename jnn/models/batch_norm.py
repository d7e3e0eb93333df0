"""BatchNorm whose statistics are those of the real rows of the global batch, however the
batch is split over devices.

`flax.linen.BatchNorm(axis_name=...)` averages each device's masked mean with
`lax.pmean`, unweighted: under pmap, a device holding 3 real rows counts as much as one
holding 16, and a device holding only padding (the end of an epoch) contributes 0/0 and
makes every statistic NaN. This layer sums values, squares and row counts over the
devices first and divides once, so pmap, sharded jit and one device normalise with the
same statistics. Its variables and results are those of `flax.linen.BatchNorm` (same
names, shapes, defaults and fast-variance formula), so checkpoints carry over.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class BatchNorm(nn.Module):
    """Batch normalisation over every axis but the last (features).

    Attributes:
      use_running_average: True in evaluation (the stored statistics), False in training
        (the batch's, which also update the stored ones).
      axis_name: under pmap / shard_map, the mapped batch axis; None otherwise.
      momentum, epsilon: as in flax.linen.BatchNorm.
      dtype: the output dtype (None: that of the inputs and parameters).
    """

    use_running_average: bool
    axis_name: str | None = None
    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """x (B, ..., C); mask (B,) bool marks the real rows (None: all of them)."""
        features = (x.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(features, jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones(features, jnp.float32))
        scale = self.param("scale", nn.initializers.ones, features, self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, features, self.param_dtype)

        if self.use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            if mask is not None and jnp.shape(mask) != x.shape[:1]:
                raise ValueError(f"BatchNorm's mask marks rows: shape {x.shape[:1]}, got "
                                 f"{jnp.shape(mask)}; pass mask[:, 0] for a per-row mask "
                                 "spread over other axes")
            rows = jnp.ones(x.shape[:1], bool) if mask is None else mask.astype(bool)
            real = rows.reshape((-1,) + (1,) * (x.ndim - 1))
            stats_dtype = jnp.promote_types(x.dtype, jnp.float32)  # as flax: float32 or more
            values = jnp.where(real, x.astype(stats_dtype), 0.0)  # (B, ..., C)
            axes = tuple(range(x.ndim - 1))
            per_row = x.size // (x.shape[0] * x.shape[-1])  # positions per row (H*W)
            sums = (values.sum(axes), jnp.square(values).sum(axes),
                    rows.sum(dtype=stats_dtype) * per_row)
            if self.axis_name is not None and not self.is_initializing():  # init: no devices
                sums = jax.lax.psum(sums, self.axis_name)
            total, total_sq, count = sums
            # a batch (or microbatch) of padding only: statistics 0 and 0, nothing stored
            mean = total / jnp.maximum(count, 1)
            var = jnp.maximum(0.0, total_sq / jnp.maximum(count, 1) - jnp.square(mean))
            if not self.is_initializing():
                real_rows = count > 0
                ra_mean.value = jnp.where(
                    real_rows, self.momentum * ra_mean.value + (1 - self.momentum) * mean,
                    ra_mean.value)
                ra_var.value = jnp.where(
                    real_rows, self.momentum * ra_var.value + (1 - self.momentum) * var,
                    ra_var.value)

        y = (x - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
        return y.astype(self.dtype or jnp.result_type(x, scale, bias))
