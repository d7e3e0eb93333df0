"""Multi-layer perceptrons: the seed MLP (784-128-10) and a residual MLP for depth studies."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jnn.models.activations import get_activation
from jnn.models.dropout import Dropout
from jnn.models.initializers import get_initializer


class MLP(nn.Module):
    """Dense layers with an activation and optional dropout between them.

    Input (B, ...) is flattened to (B, D); output is (B, num_outputs) logits or values.
    The defaults are the seed's 784-128-10 ReLU network (the input size comes from x).
    """

    hidden_sizes: Sequence[int] = (128,)
    num_outputs: int = 10
    activation: str = "relu"
    dropout_rate: float = 0.0
    kernel_init: str = "lecun_normal"
    axis_name: str | None = None  # the pmap batch axis, for split-invariant dropout
    dtype: Any = None  # computation dtype (None: that of the inputs and parameters)
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        act = get_activation(self.activation)
        dense = functools.partial(nn.Dense, kernel_init=get_initializer(self.kernel_init),
                                  dtype=self.dtype, param_dtype=self.param_dtype)
        x = x.reshape((x.shape[0], -1))  # (B, D)
        for width in self.hidden_sizes:
            x = act(dense(width)(x))
            if self.dropout_rate > 0:
                x = Dropout(self.dropout_rate, self.axis_name)(x, deterministic=not train)
        return dense(self.num_outputs)(x)  # (B, num_outputs)


class ResidualBlock(nn.Module):
    """x + Dense(act(Dense(LayerNorm(x)))): a pre-norm residual MLP block of width D."""

    width: int
    activation: str = "relu"
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, _=None):
        dense = functools.partial(nn.Dense, self.width,
                                  kernel_init=get_initializer("lecun_normal"),
                                  dtype=self.dtype, param_dtype=self.param_dtype)
        h = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype)(x)
        h = get_activation(self.activation)(dense()(h))
        return x + dense()(h), None


class ResMLP(nn.Module):
    """A deep residual MLP: Dense(width) -> `depth` residual blocks -> Dense(num_outputs).

    With `scan=True` (the default) the blocks are one `nn.scan` over stacked parameters,
    so the traced program (and its compile time) does not grow with depth: at depth 128,
    width 128, batch 128 on 2 CPU cores, 2.7 s to compile against 27 s unrolled, with the
    same step time (median ratio 1.01 over 5 interleaved rounds). `scan=False` unrolls.
    """

    depth: int = 8
    width: int = 128
    num_outputs: int = 10
    activation: str = "relu"
    scan: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
        x = dense(self.width)(x.reshape((x.shape[0], -1)))  # (B, width)
        block = functools.partial(ResidualBlock, self.width, self.activation, self.dtype,
                                  self.param_dtype)
        if self.scan:
            blocks = nn.scan(ResidualBlock, variable_axes={"params": 0},
                             split_rngs={"params": True}, length=self.depth)
            x, _ = blocks(self.width, self.activation, self.dtype, self.param_dtype)(x, None)
        else:
            for _ in range(self.depth):
                x, _ = block()(x)
        return dense(self.num_outputs)(x)  # (B, num_outputs)
