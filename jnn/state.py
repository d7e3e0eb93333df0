"""The train state: a pytree of step, params, optimizer state, batch_stats and rng."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


@dataclasses.dataclass(frozen=True)
class ModelApply:
    """`module.apply` as a hashable value: equal for equal modules, so states built
    from the same module stack (vmap) and hit the same compiled step.

    Called as apply(variables, x, train=..., rngs=..., mutable=...); `train` reaches the
    module only if its `__call__` accepts it.
    """

    module: nn.Module

    @property
    def takes_train(self) -> bool:
        return "train" in inspect.signature(type(self.module).__call__).parameters

    def __call__(self, variables, x, *, train: bool, **kwargs):
        if self.takes_train:
            kwargs["train"] = train
        return self.module.apply(variables, x, **kwargs)


class TrainState(train_state.TrainState):
    """flax's TrainState with `batch_stats` (BatchNorm; {} when the model has none) and
    `rng`, a raw uint32 PRNG key from which each step's dropout key is folded."""

    batch_stats: Any = None
    rng: jax.Array = None


def create_train_state(module: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                       sample_x: jax.Array) -> TrainState:
    """Initialises `module` on `sample_x` (a batch of the input shape, (B, ...)).

    Args:
      rng: a PRNG key (`jax.random.PRNGKey(seed)`); split into init and training keys.
    """
    init_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
    apply = ModelApply(module)
    kwargs = {"train": False} if apply.takes_train else {}
    variables = module.init({"params": init_rng, "dropout": dropout_rng}, sample_x, **kwargs)
    params = variables["params"]
    return TrainState.create(
        apply_fn=apply, params=params, tx=tx,
        batch_stats=variables.get("batch_stats", {}), rng=state_rng)


def parameter_count(params: Any) -> int:
    """Number of scalars in a parameter pytree."""
    return int(sum(jnp.size(p) for p in jax.tree.leaves(params)))
