"""The train state: one pytree of step, params, model state, optimizer state and RNG.

    state = jnn.create_train_state(module, optax.adam(1e-3), jax.random.PRNGKey(0), sample)

The model adapter (jnn.model) and the optimizer are static parts of the state: the
arrays are all there is to transform, shard or checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jnn.compiler_options import init_compiler_options
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
    params, model_state, state_rng = run_once(initial_arrays, model, rng, as_batch(sample))
    return new_train_state(model, tx, params, model_state, state_rng, loss_scale)


def initial_arrays(model: Model, rng: jax.Array, batch: dict):
    """(params, model_state, the state's rng) of `model` initialised from `rng` on `batch`."""
    init_rng, _, state_rng = jax.random.split(rng, 3)  # the split of jnn 0.1: same inits
    params, model_state = model.init(init_rng, batch)
    return params, model_state, state_rng


def new_train_state(model: Model, tx: optax.GradientTransformation, params, model_state,
                    rng: jax.Array, loss_scale: DynamicLossScale | None = None) -> TrainState:
    """A state at step 0 around initial arrays, with the optimizer's initial state."""
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      model_state=model_state, rng=rng, loss_scale=loss_scale, model=model,
                      tx=tx)


def run_once(init: Callable, model: Model, *args):
    """`init(model, *args)`, compiled as one program with `init_compiler_options` (eager
    dispatch compiles a program per operation: 3-4x slower for the seed models' init) and
    kept for equal models, or run as it is where compiling does not apply: when it is
    already being traced (the enclosing jit or vmap compiles it), when an argument is not
    an array, when the model's init returns values it holds (an NNX instance: they would
    become constants of the program), when the model is not hashable, or when the module's
    init needs concrete values (Python control flow on data)."""
    if _compiles(model, args):
        try:
            return _compiled(init, jax.default_backend())(model, *args)
        except _NEEDS_CONCRETE_VALUES:
            pass
    return init(model, *args)


# What a module's init raises when it needs concrete values
_NEEDS_CONCRETE_VALUES = (jax.errors.ConcretizationTypeError,
                          jax.errors.TracerArrayConversionError,
                          jax.errors.TracerIntegerConversionError)


def _compiles(model: Model, args) -> bool:
    leaves = jax.tree.leaves(args)
    if not getattr(model, "fresh_init", True) or any(isinstance(x, jax.core.Tracer)
                                                     for x in leaves):
        return False
    if not all(isinstance(x, (jax.Array, np.ndarray, np.generic)) for x in leaves):
        return False
    try:
        hash(model)
    except TypeError:
        return False
    return True


@functools.cache
def _compiled(init: Callable, platform: str) -> Callable:
    return jax.jit(init, static_argnums=0, compiler_options=init_compiler_options(platform))


def array_fields(state: TrainState) -> dict:
    """The state's arrays by field name (what a checkpoint holds); new fields included."""
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
            if f.metadata.get("pytree_node", True)}


def parameter_count(params: Any) -> int:
    """Number of scalars in a parameter pytree."""
    return int(sum(np.size(p) for p in jax.tree.leaves(params)))
