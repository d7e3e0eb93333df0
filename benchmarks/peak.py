"""The machine's matmul throughput, measured in the run itself: the reference a model's
achieved FLOP/s is read against (a step that reaches it is as fast as the hardware's
best-supported operation allows)."""

from __future__ import annotations

import statistics
import time

MATMUL_SIZE = 1024  # float32 square matrices: large enough to reach the BLAS peak
REPEATS = 20


def matmul_flops_per_s(size: int = MATMUL_SIZE, repeats: int = REPEATS) -> float:
    """Median FLOP/s of a jitted float32 (size x size) @ (size x size) on the default device."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        seconds.append(time.perf_counter() - start)
    return 2.0 * size ** 3 / statistics.median(seconds)
