"""Dropout whose mask does not depend on how the batch is split over devices.

`flax.linen.Dropout` draws one mask for the array it sees. Under pmap every device sees
its own slice of the batch, so the masks differ from a single-device run of the same
global batch (and with one key on every device, the devices would share a mask
pattern). This layer draws each example's mask from fold_in(key, global example
index): a single device, sharded jit and pmap (pass `axis_name`) drop the same units.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class Dropout(nn.Module):
    """Inverted dropout on (B, ...) with per-example masks keyed by global example index.

    Attributes:
      rate: the probability of dropping a unit.
      axis_name: under pmap / shard_map, the mapped batch axis, so that example indices
        are global (device i holds examples i*b .. i*b + b - 1); None otherwise.
    """

    rate: float
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        key = self.make_rng("dropout")
        local = x.shape[0]
        offset = 0 if self.axis_name is None else jax.lax.axis_index(self.axis_name) * local
        ids = offset + jnp.arange(local)  # (B,) global example indices
        keep_prob = 1.0 - self.rate
        keep = jax.vmap(lambda i: jax.random.bernoulli(jax.random.fold_in(key, i), keep_prob,
                                                       x.shape[1:]))(ids)
        return jnp.where(keep, x / keep_prob, jnp.zeros_like(x))
