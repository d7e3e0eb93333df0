"""Flax Linen models by name.

    model = jnn.models.get("cnn", num_outputs=10)

Every model is a pure `flax.linen.Module` whose `__call__(x, train=False)` maps a batch
(B, ...) to (B, num_outputs), with `dtype` (computation) and `param_dtype` fields as
Flax's layers have. Your own Linen or NNX modules need no registry: pass them to
jnn.create_train_state (see jnn.model for the conventions).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from jnn.models.activations import activation_names, get_activation
from jnn.models.batch_norm import BatchNorm
from jnn.models.cnn import CNN, CifarCNN
from jnn.models.convolution import conv_general_dilated
from jnn.models.dropout import Dropout
from jnn.models.initializers import get_initializer, initializer_names
from jnn.models.mlp import MLP, ResMLP
from jnn.models.pooling import max_pool_2x2

_REGISTRY: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "cnn": CNN,
    "cifar_cnn": CifarCNN,
    "resmlp": ResMLP,
}


def names() -> list[str]:
    """The model names `get` accepts."""
    return sorted(_REGISTRY)


def register(name: str, module_cls: type[nn.Module]) -> None:
    """Makes `module_cls` available as `get(name, ...)` (and so to the harness's configs)."""
    _REGISTRY[name] = module_cls


def fields(name: str) -> list[str]:
    """The configurable fields of the model registered as `name`."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(names())}")
    return [f.name for f in dataclasses.fields(_REGISTRY[name]) if f.name not in ("parent", "name")]


def get(name: str, **kwargs) -> nn.Module:
    """Builds the model registered as `name` with the given field values.

    Raises:
      ValueError: an unknown name (the message lists the known ones), an unknown field,
        or an unknown activation / initialiser name.
    """
    known = fields(name)
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ValueError(
            f"model {name!r} has no field {', '.join(unknown)}; its fields are {', '.join(known)}")
    if "activation" in kwargs:
        get_activation(kwargs["activation"])
    if "kernel_init" in kwargs:
        get_initializer(kwargs["kernel_init"])
    return _REGISTRY[name](**kwargs)


__all__ = [
    "BatchNorm", "CNN", "CifarCNN", "Dropout", "MLP", "ResMLP", "activation_names",
    "conv_general_dilated", "fields",
    "get", "get_activation", "get_initializer", "initializer_names", "max_pool_2x2", "names",
    "register",
]
