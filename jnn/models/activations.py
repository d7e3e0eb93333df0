"""Activation functions by name."""

from __future__ import annotations

import jax

_ACTIVATIONS = {
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jax.numpy.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
}


def activation_names() -> list[str]:
    """The names `get_activation` accepts."""
    return sorted(_ACTIVATIONS)


def get_activation(name: str):
    """Returns the element-wise activation `name` (see `activation_names()`).

    Raises:
      ValueError: `name` is not known; the message lists the known names.
    """
    if name not in _ACTIVATIONS:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(activation_names())}")
    return _ACTIVATIONS[name]
