"""An XLA flag for the process on CPU: LLVM fully unrolls no loop of more than 8 iterations.

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
and values equal to the uncapped step's up to float rounding (tests/test_xla_flags.py; the
last bits can differ). A cap of 4 gains no more; 16 gains nothing (it still unrolls the loop
of 10). A cap of 2 made the MNIST CNN's step 1.4x slower.

XLA hands options to LLVM only through its xla_backend_extra_options, a map that jax's
per-program `compiler_options` cannot set, so this is not in `jnn.train_compiler_options()`:
`cap_full_unrolling()` sets it for this process, through XLA_FLAGS, so it must run before
jax starts its backends (before the first computation or `jax.devices()`). `python -m
train` calls it at start-up and the benchmark suite's jnn workers do too
(JNN_CAP_FULL_UNROLLING=0 turns it off). It is a process-wide setting of LLVM's, so the
harness sets it only where the process computes on the CPU alone. In a script of your own,
call it first or set the same before Python starts:

    XLA_FLAGS=--xla_backend_extra_options=-unroll-full-max-count=8 python ...
"""

from __future__ import annotations

import importlib.util
import os

FULL_UNROLL_CAP = 8
FLAG = f"--xla_backend_extra_options=-unroll-full-max-count={FULL_UNROLL_CAP}"
ENV_SWITCH = "JNN_CAP_FULL_UNROLLING"


def cap_full_unrolling() -> str | None:
    """Adds FLAG to $XLA_FLAGS (module docstring). Returns None when it is set, otherwise why
    not: $JNN_CAP_FULL_UNROLLING is 0, $XLA_FLAGS already passes options to LLVM (yours
    win), the process may compute on an accelerator, or jax's backends are already running
    (they read $XLA_FLAGS once, when they start)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return f"${ENV_SWITCH} is 0"
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_extra_options" in flags:
        return "$XLA_FLAGS already sets xla_backend_extra_options"
    accelerator = _accelerator_possible()
    if accelerator is not None:
        return f"the process may compute on an accelerator ({accelerator})"
    from jax._src import xla_bridge

    if xla_bridge._backends:  # no public way to ask; $XLA_FLAGS is read when they start
        return "jax's backends are already running, and read $XLA_FLAGS only when they start"
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
    return None


def _accelerator_possible() -> str | None:
    """Why this process might compute on something other than the CPU, or None: jax's
    platforms are not just "cpu" and a GPU or TPU plugin is installed."""
    import jax

    platforms = jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return None if platforms.strip().lower() == "cpu" else f"JAX_PLATFORMS={platforms}"
    if importlib.util.find_spec("jax_plugins") is not None:
        return "a jax_plugins package is installed"
    if importlib.util.find_spec("libtpu") is not None:
        return "libtpu is installed"
    from importlib.metadata import entry_points

    if entry_points(group="jax_plugins"):
        return "a jax plugin is installed"
    return None
