"""2x2 max pooling with a fast gradient.

XLA lowers the gradient of `flax.linen.max_pool` to select_and_scatter, which on CPU
took 37 ms of a 64 ms MNIST CNN step on this project's machines. Here the gradient's
forward pass reshapes the input into windows and records, in one reduce, the max of each
and which position won; the gradient is a one-hot multiply. Without a gradient the
pooled values are XLA's reduce_window. On a (128, 26, 26, 32) input the gradient takes
about 11 ms against flax's 42 ms on 2 CPU cores (`tests/test_models.py` checks that values
and gradients are identical for inputs without NaN, the first maximum winning ties as in
select_and_scatter; a window holding a NaN sends its gradient to its first NaN, as
jnp.argmax picks it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def _windows(x):
    # (B, H, W, C) -> (B, H/2, 2, W/2, 2, C); odd trailing rows/columns are dropped,
    # as 'VALID' pooling drops them.
    b, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2, :]
    return x.reshape(b, h // 2, 2, w // 2, 2, c)


def _flat_windows(x):
    # (B, H, W, C) -> (B, H/2, W/2, 4, C): the four values of each window, row-major.
    win = _windows(x)
    b, h2, _, w2, _, c = win.shape
    return win.transpose(0, 1, 3, 2, 4, 5).reshape(b, h2, w2, 4, c)


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling with stride 2 over an NHWC array: (B, H, W, C) -> (B, H//2, W//2, C)."""
    # Without a gradient (eval, predict) XLA's own reduce_window, which the CPU backend
    # takes into one YNNPACK fusion with the layers around it (the MNIST CNN's whole eval
    # forward pass is one fused op): eval steps 0.84x on the MNIST CNN, 0.87x on CIFAR-10
    # against a reshape and max. The gradient's forward pass is _max_pool_fwd.
    return lax.reduce_window(x, _lowest(x.dtype), lax.max, (1, 2, 2, 1), (1, 2, 2, 1),
                             "VALID")


def _lowest(dtype) -> jax.Array:
    """The identity of max for `dtype`: -inf, the lowest finite value of a float type
    without infinities, the lowest integer, or False."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating):
        minus_inf = np.array(-np.inf).astype(dtype)  # NaN where the type has no infinity
        return jnp.array(minus_inf if np.isinf(minus_inf) else jnp.finfo(dtype).min, dtype)
    if jnp.issubdtype(dtype, jnp.integer):
        return jnp.array(jnp.iinfo(dtype).min, dtype)
    return jnp.array(False, dtype)


def _max_and_winner(flat):
    """The max over axis 3 of (B, H/2, W/2, 4, C) and the position that holds it (the
    first on ties, a NaN winning as in jnp.argmax), in one variadic reduce: one pass over
    the windows instead of a max and an argmax that each read them (XLA does not merge
    those, and the duplicate pass cost about 4 ms of the CIFAR-10 CNN's train step)."""
    position = lax.broadcasted_iota(jnp.int8, flat.shape, 3)

    def keep_first_max(a, b):
        (a_value, a_position), (b_value, b_position) = a, b
        a_nan, b_nan = a_value != a_value, b_value != b_value
        first = a_position < b_position
        a_wins = jnp.where(a_nan | b_nan, a_nan & (~b_nan | first),
                           (a_value > b_value) | ((a_value == b_value) & first))
        return (jnp.where(a_wins, a_value, b_value), jnp.where(a_wins, a_position, b_position))

    init = (_lowest(flat.dtype), jnp.array(0, jnp.int8))
    return lax.reduce((flat, position), init, keep_first_max, (3,))


def _max_pool_fwd(x):
    # The forward pass records which of the four positions won (the first on ties); the
    # backward pass sends the gradient there. Comparing x with the pooled value in the
    # backward pass instead is fragile: XLA may recompute x (say a fused BatchNorm) with
    # different rounding there, and then no position matches and the gradient is lost.
    pooled, winner = _max_and_winner(_flat_windows(x))  # (B, H/2, W/2, C) each
    return pooled, (x.shape, winner)


def _max_pool_bwd(res, g):
    shape, winner = res
    b, h2, w2, c = g.shape
    onehot = winner[:, :, :, None, :] == jnp.arange(4, dtype=jnp.int8)[None, None, None, :, None]
    grad_flat = onehot.astype(g.dtype) * g[:, :, :, None, :]  # (B, H/2, W/2, 4, C)
    grad = grad_flat.reshape(b, h2, w2, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    grad = grad.reshape(b, 2 * h2, 2 * w2, c)
    grad = jnp.pad(grad, ((0, 0), (0, shape[1] - 2 * h2), (0, shape[2] - 2 * w2), (0, 0)))
    return (grad,)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)
