"""Weight initialisers by name (Gaussian, uniform, Glorot, He, LeCun)."""

from __future__ import annotations

import functools

import jax
from jax.nn import initializers as jinit


def _symmetric_uniform(limit: float):
    def init(key, shape, dtype=None):
        dtype = float if dtype is None else dtype
        return jax.random.uniform(key, shape, dtype, minval=-limit, maxval=limit)

    return init


def _traced_once(init):
    """`init`, traced once per key type, shape and dtype in a process, same values.

    Flax's apply checks every existing parameter's shape against its initialiser's output
    by tracing the initialiser again (`jax.eval_shape`), in each step function the model
    is traced into: a Gaussian initialiser is a few dozen operations, 20-30 ms of a seed
    model's train-step trace. As a jit, the initialiser is traced once, at init, and the
    checks reuse that trace. A raw key is made a typed key first, as jax.random does, so
    that init (raw keys) and the check (a typed key) share the trace."""
    jitted = jax.jit(init, static_argnums=(1, 2))

    @functools.wraps(init)
    def traced_once(key, shape, dtype=None, **kwargs):
        if kwargs:  # e.g. out_sharding: the initialiser as it is
            return init(key, shape, dtype, **kwargs)
        if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.wrap_key_data(key)
        return jitted(key, tuple(shape), dtype)

    return traced_once


# The fixed-scale schemes use the scales classic tutorials use: N(0, 0.01^2) and
# U(-0.05, 0.05). The fan-scaled ones are jax's.
_INITIALIZERS = {name: _traced_once(init) for name, init in {
    "normal": jinit.normal(stddev=0.01),
    "uniform": _symmetric_uniform(0.05),
    "glorot_normal": jinit.glorot_normal(),
    "glorot_uniform": jinit.glorot_uniform(),
    "he_normal": jinit.he_normal(),
    "he_uniform": jinit.he_uniform(),
    "lecun_normal": jinit.lecun_normal(),
    "lecun_uniform": jinit.lecun_uniform(),
}.items()}


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
