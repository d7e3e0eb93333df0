"""Weight initialisers by name (Gaussian, uniform, Glorot, He, LeCun)."""

from __future__ import annotations

import jax
from jax.nn import initializers as jinit


def _symmetric_uniform(limit: float):
    def init(key, shape, dtype=float):
        return jax.random.uniform(key, shape, dtype, minval=-limit, maxval=limit)

    return init


# The fixed-scale schemes use the scales classic tutorials use: N(0, 0.01^2) and
# U(-0.05, 0.05). The fan-scaled ones are jax's.
_INITIALIZERS = {
    "normal": jinit.normal(stddev=0.01),
    "uniform": _symmetric_uniform(0.05),
    "glorot_normal": jinit.glorot_normal(),
    "glorot_uniform": jinit.glorot_uniform(),
    "he_normal": jinit.he_normal(),
    "he_uniform": jinit.he_uniform(),
    "lecun_normal": jinit.lecun_normal(),
    "lecun_uniform": jinit.lecun_uniform(),
}


def initializer_names() -> list[str]:
    """The names `get_initializer` accepts."""
    return sorted(_INITIALIZERS)


def get_initializer(name: str):
    """Returns the kernel initialiser `name` (see `initializer_names()`).

    Raises:
      ValueError: `name` is not known; the message lists the known names.
    """
    if name not in _INITIALIZERS:
        raise ValueError(
            f"unknown initializer {name!r}; choose one of {', '.join(initializer_names())}")
    return _INITIALIZERS[name]
