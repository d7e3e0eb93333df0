"""Mixed precision: a compute dtype for the forward and backward pass, float32 everywhere else.

    step = jnn.make_train_step("cross_entropy", compute_dtype=jnp.bfloat16)

With a compute dtype the step casts the float parameters and the model's float inputs to
it before calling the model, and the model's outputs back to float32 before the
objective: parameters, optimizer state, gradients (accumulated through the cast),
losses and metrics stay float32. jnn's own models also take `dtype` / `param_dtype`
fields, as Flax's layers do. Off by default: CPUs gain nothing from it.

float16 needs loss scaling (its gradients underflow): create the state with
`create_train_state(..., loss_scale=jnn.precision.DynamicLossScale.create())`. The step
then multiplies the loss by the scale, divides the gradients by it, skips the update of
a step whose gradients are not finite (halving the scale), and doubles the scale after
`period` finite steps in a row.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

_COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def canonical_dtype(dtype) -> jnp.dtype | None:
    """None, or one of float32, bfloat16, float16 (by name or dtype).

    Raises:
      ValueError: any other dtype.
    """
    if dtype is None:
        return None
    dtype = jnp.dtype(dtype)
    if dtype.name not in _COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {', '.join(_COMPUTE_DTYPES)} (or None), "
                         f"got {dtype.name}")
    return dtype


def cast_floats(tree, dtype):
    """Every floating-point leaf of `tree` cast to `dtype` (None: unchanged)."""
    if dtype is None:
        return tree
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x, tree)


class DynamicLossScale(struct.PyTreeNode):
    """The loss scale of a float16 run, held in the train state.

    Attributes:
      scale: the current multiplier of the loss (float32 scalar).
      good_steps: finite steps since the scale last changed.
      period: finite steps after which the scale doubles (static).
    """

    scale: jax.Array
    good_steps: jax.Array
    period: int = struct.field(pytree_node=False, default=2000)

    @classmethod
    def create(cls, initial_scale: float = 2.0 ** 15, period: int = 2000) -> "DynamicLossScale":
        if initial_scale <= 0 or period < 1:
            raise ValueError("DynamicLossScale needs initial_scale > 0 and period >= 1")
        return cls(jnp.asarray(initial_scale, jnp.float32), jnp.zeros((), jnp.int32), period)

    def adjust(self, grads_finite: jax.Array) -> "DynamicLossScale":
        """The next scale: halved after a non-finite step, doubled after `period` finite ones."""
        grow = self.good_steps + 1 >= self.period
        scale = jnp.where(grads_finite, jnp.where(grow, self.scale * 2.0, self.scale),
                          jnp.maximum(self.scale / 2.0, 1.0))
        good = jnp.where(grads_finite & ~grow, self.good_steps + 1, 0)
        return self.replace(scale=scale, good_steps=good)


def all_finite(tree) -> jax.Array:
    """True when every element of every leaf is finite."""
    leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]
    return jnp.stack(leaves).all() if leaves else jnp.asarray(True)
