"""The train state: one pytree of step, params, model state, optimizer state and RNG.

    state = jnn.create_train_state(module, optax.adam(1e-3), jax.random.PRNGKey(0), sample)

The model adapter (jnn.model) and the optimizer are static parts of the state: the
arrays are all there is to transform, shard or checkpoint.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jnn.model import Model, as_model
from jnn.precision import DynamicLossScale


class TrainState(struct.PyTreeNode):
    """Everything a step reads and writes.

    Attributes:
      step: the number of updates applied (int32 scalar).
      params: the trainable parameters (nested dict of arrays).
      opt_state: the optimizer's state.
      model_state: the module's other variables, e.g. {"batch_stats": ...} ({} if none).
      rng: a raw uint32 PRNG key; the key of step t is fold_in(rng, t).
      loss_scale: a DynamicLossScale for float16 training, else None.
      model: the model adapter (static).
      tx: the optax optimizer (static).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    model_state: Any
    rng: jax.Array
    loss_scale: DynamicLossScale | None
    model: Model = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    def apply_gradients(self, grads, **changes) -> "TrainState":
        """One optimizer update with `grads`; other fields replaced from `changes`."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        return self.replace(step=self.step + 1, params=params, opt_state=opt_state, **changes)

    @property
    def batch_stats(self):
        """The BatchNorm statistics of a Linen model ({} when it has none)."""
        return self.model_state.get("batch_stats", {}) if isinstance(self.model_state, dict) else {}


def as_batch(sample) -> dict:
    """A batch dict from a batch dict or a bare input array (which becomes {"x": array})."""
    if isinstance(sample, dict):
        return sample
    return {"x": sample}


def create_train_state(module, tx: optax.GradientTransformation, rng: jax.Array, sample,
                       *, loss_scale: DynamicLossScale | None = None,
                       **model_options) -> TrainState:
    """Initialises `module` on `sample` and the optimizer on its parameters.

    Args:
      module: a flax.linen.Module, a flax.nnx.Module (or a function rngs -> nnx.Module),
        or a model adapter from jnn.as_model.
      rng: a PRNG key (`jax.random.PRNGKey(seed)`): split into init and training keys.
      sample: a sample batch (dict of arrays, (B, ...) each) or its input array `x`.
      loss_scale: for float16 compute (see jnn.precision).
      model_options: for the adapter (inputs, mode, mask; see jnn.model).
    """
    model = as_model(module, **model_options)
    init_rng, _, state_rng = jax.random.split(rng, 3)  # the split of jnn 0.1: same inits
    params, model_state = model.init(init_rng, as_batch(sample))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      model_state=model_state, rng=state_rng, loss_scale=loss_scale,
                      model=model, tx=tx)


def array_fields(state: TrainState) -> dict:
    """The state's arrays by field name (what a checkpoint holds); new fields included."""
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
            if f.metadata.get("pytree_node", True)}


def parameter_count(params: Any) -> int:
    """Number of scalars in a parameter pytree."""
    return int(sum(np.size(p) for p in jax.tree.leaves(params)))
