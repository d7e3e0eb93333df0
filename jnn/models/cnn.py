"""The seed convolutional networks: the MNIST CNN and the CIFAR-10 CNN."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jnn.models.activations import get_activation
from jnn.models.batch_norm import BatchNorm
from jnn.models.convolution import conv_general_dilated
from jnn.models.dropout import Dropout
from jnn.models.initializers import get_initializer
from jnn.models.pooling import max_pool_2x2


class CNN(nn.Module):
    """The seed MNIST CNN: Conv 32 3x3 ReLU -> MaxPool 2 -> Flatten -> Dense 128 ReLU -> Dense 10.

    Convolution padding is 'VALID' as in the seed (Keras' default), so a (B, 28, 28, 1)
    input gives 26x26x32 -> 13x13x32 -> 5408 features (693,962 parameters in all) and the
    8x8 digits give 6x6x32 -> 3x3x32 -> 288. Returns (B, num_outputs) logits.
    """

    num_outputs: int = 10
    features: int = 32
    hidden: int = 128
    activation: str = "relu"
    dropout_rate: float = 0.0
    kernel_init: str = "lecun_normal"
    batch_norm: bool = False  # BatchNorm after the convolution (not in the seed)
    axis_name: str | None = None  # the pmap batch axis: BatchNorm statistics and dropout
    # masks then cover the global batch, as on one device
    dtype: Any = None  # computation dtype (None: that of the inputs and parameters)
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, mask: jax.Array | None = None
                 ) -> jax.Array:
        """x (B, H, W, C) -> logits (B, num_outputs); `mask` (B,) keeps padded rows out of
        the BatchNorm statistics."""
        act = get_activation(self.activation)
        layer = dict(kernel_init=get_initializer(self.kernel_init), dtype=self.dtype,
                     param_dtype=self.param_dtype)
        # A bias before BatchNorm is removed by its mean: its gradient is float noise,
        # which Adam would amplify into full-size steps. BatchNorm's own bias replaces it.
        x = nn.Conv(self.features, (3, 3), padding="VALID", use_bias=not self.batch_norm,
                    conv_general_dilated=conv_general_dilated, **layer)(x)
        if self.batch_norm:  # statistics of the real rows of the global batch
            x = BatchNorm(use_running_average=not train, axis_name=self.axis_name,
                          dtype=self.dtype, param_dtype=self.param_dtype)(x, mask=mask)
        x = act(x)
        x = max_pool_2x2(x)  # (B, H', W', features)
        x = x.reshape((x.shape[0], -1))
        x = act(nn.Dense(self.hidden, **layer)(x))
        if self.dropout_rate > 0:
            x = Dropout(self.dropout_rate, self.axis_name)(x, deterministic=not train)
        return nn.Dense(self.num_outputs, **layer)(x)


class CifarCNN(nn.Module):
    """The seed CIFAR-10 CNN (the PyTorch tutorial shape, widened).

    Conv 3->32 3x3 pad 1, ReLU, MaxPool 2; Conv 32->64 3x3 pad 1, ReLU, MaxPool 2;
    FC 4096->120->84->num_outputs. Input (B, 32, 32, 3); 522,046 parameters.
    """

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
        layer = dict(kernel_init=get_initializer(self.kernel_init), dtype=self.dtype,
                     param_dtype=self.param_dtype)
        conv = dict(padding=1, conv_general_dilated=conv_general_dilated, **layer)
        x = max_pool_2x2(act(nn.Conv(32, (3, 3), **conv)(x)))  # (B, 16, 16, 32)
        x = max_pool_2x2(act(nn.Conv(64, (3, 3), **conv)(x)))  # (B, 8, 8, 64)
        x = x.reshape((x.shape[0], -1))  # (B, 4096)
        x = act(nn.Dense(120, **layer)(x))
        x = act(nn.Dense(84, **layer)(x))
        if self.dropout_rate > 0:
            x = Dropout(self.dropout_rate, self.axis_name)(x, deterministic=not train)
        return nn.Dense(self.num_outputs, **layer)(x)
