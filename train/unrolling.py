"""LLVM's full unrolling capped at 8 iterations, for the process, on CPU.

XLA:CPU compiles each fused kernel through LLVM, which fully unrolls every loop whose trip
count it knows and whose body is small enough. A kernel over an array whose minor
dimension is 10 (every seed model's Dense(10) output: its softmax, its argmax, the Adam
updates of its kernel and bias) gets its loop of 10 written out 10 times, and then
vectorized piece by piece: the optimized IR of one such Adam update is 96 KB against
10.7 KB for a (784, 128) one, and it compiles 2-3x slower (125-175 ms against 58). Capped
at 8 iterations, that loop stays a loop. Measured on a 2-core CPU (batch 128, each in fresh
processes, rounds alternating, median of per-round ratios), the train step compiled in
- MLP: 0.76-0.80x the time; MNIST CNN: 0.76-0.89x; CIFAR-10 CNN: 0.86x;
with the step itself as fast (train step 1.04x, 1.03x, 0.99x: within the rounds' spread)
and values equal to the uncapped step's up to float rounding (tests/test_unrolling.py;
the last bits can differ). A cap of 4 gains no more; 16 gains nothing (it still unrolls
the loop of 10). A cap of 2 made the MNIST CNN's step 1.4x slower.

XLA hands options to LLVM only through its xla_backend_extra_options, a map that jax's
per-program `compiler_options` cannot set, so this is not in `jnn.train_compiler_options()`:
`cap_full_unrolling()` sets it for this process, through $XLA_FLAGS, which XLA reads once,
when jax starts its backends (the first computation, or `jax.devices()`). `python -m
train` calls it at start-up, and so do `python -m benchmarks`' jnn workers by default
(JNN_CAP_FULL_UNROLLING=0 turns it off). LLVM's options are the process's, for every
backend it compiles for, so it is set only where jax computes on the CPU alone. In a script
of your own, call it first or set the same before Python starts:

    XLA_FLAGS=--xla_backend_extra_options=-unroll-full-max-count=8 python ...

-unroll-full-max-count is one of LLVM's hidden options; tests/test_unrolling.py checks
that the jaxlib installed still takes it and still keeps the loop of 10 a loop.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os

FULL_UNROLL_CAP = 8
UNROLL_CAP_FLAG = f"--xla_backend_extra_options=-unroll-full-max-count={FULL_UNROLL_CAP}"
ENV_SWITCH = "JNN_CAP_FULL_UNROLLING"


def cap_full_unrolling() -> str | None:
    """Adds UNROLL_CAP_FLAG to $XLA_FLAGS (module docstring). Returns None when the cap is
    set (or already was), otherwise why not: $JNN_CAP_FULL_UNROLLING is 0, $XLA_FLAGS
    passes options of its own to LLVM (they win), jax may compute on an accelerator, or
    jax's backends have started (XLA has read $XLA_FLAGS already)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return f"${ENV_SWITCH} is 0"
    flags = os.environ.get("XLA_FLAGS", "")
    if UNROLL_CAP_FLAG in flags.split():
        return None
    if "xla_backend_extra_options" in flags:
        return "$XLA_FLAGS already sets xla_backend_extra_options"
    accelerator = accelerator_possible()
    if accelerator is not None:
        return f"jax may compute on an accelerator ({accelerator})"
    if backends_started():
        return "jax's backends have started, and XLA read $XLA_FLAGS when they did"
    os.environ["XLA_FLAGS"] = f"{flags} {UNROLL_CAP_FLAG}".strip()
    return None


def accelerator_possible(platforms: str | None = None) -> str | None:
    """Why jax might compute on something other than the CPU in this process, or None:
    its platforms (by default jax.config.jax_platforms, which jax reads from $JAX_PLATFORMS
    at import) are set and not just "cpu", or (unset) a GPU or TPU plugin is installed."""
    if platforms is None:
        import jax

        platforms = jax.config.jax_platforms
    if platforms:
        return None if platforms.strip().lower() == "cpu" else f"jax_platforms={platforms}"
    if importlib.util.find_spec("jax_plugins") is not None:
        return "a jax_plugins package is installed"
    if importlib.util.find_spec("libtpu") is not None:
        return "libtpu is installed"
    if importlib.metadata.entry_points(group="jax_plugins"):
        return "a jax plugin is installed"
    return None


def backends_started() -> bool:
    """Whether jax has started its backends in this process (an older or newer jax without
    the check counts as started: then the cap is left out rather than set too late)."""
    from jax._src import xla_bridge

    started = getattr(xla_bridge, "backends_are_initialized", None)
    return True if started is None else bool(started())
