"""XLA compiler options, chosen per backend: for a train step, and for a state's init.

    train_step = jax.jit(jnn.make_train_step(), donate_argnums=0,
                         compiler_options=jnn.train_compiler_options())

`jnn.parallel.jit_sharded` (and so the harness) passes them to every train step it
compiles. They change which kernels XLA runs, not what the step computes: results equal
the step compiled without them up to float rounding (the order of the additions inside
a convolution changes).

On CPU, XLA hands each convolution to YNNPACK by default. YNNPACK is fast on the
forward pass (an eval step's whole forward pass is one fused op), but slow on the
gradients of a convolution: the kernel gradient is a convolution whose window is the
whole image. With convolutions left out of YNNPACK's fusions, XLA runs them with its
own (Eigen) kernels, and YNNPACK keeps the dots and reductions. Measured on the seed
models (batch 128, 2-core CPU, interleaved in one process), the train step took:
- CIFAR-10 CNN: 0.76x the time;
- MNIST CNN: 0.65x;
- a vmap ensemble of 4 CIFAR-10 CNNs: 0.20x; of one MNIST CNN: 0.85x;
- MLP 0.92x; residual MLP (depth 8 and 128): 0.98-1.04x, within noise.
Eval steps gain nothing from this (YNNPACK's fused forward pass is the faster one), so
they keep XLA's defaults. Other backends get no options. With the dots out of YNNPACK too,
the dense models' steps (MLP, residual MLP) took 0.83-0.94x the time but the CNNs' train
steps 1.00-1.19x and eval steps 1.6-2.1x (`python -m benchmarks.cpu_fusion_options`, 2-core
AMD EPYC with AVX-512), so one list serves every model for now.

One more CPU setting belongs to the process, not to a program: LLVM's full unrolling,
capped at 8 iterations by `train.unrolling` (`python -m train` sets it), which cut the
seed models' train-step compile times by 11-24%.
"""

from __future__ import annotations

import jax

# The YNNPACK fusion kinds to keep: single dots and reductions; no convolutions. The option
# is a full list, not a change to XLA's default, so a kind that a later XLA adds to its
# default is left out here; tests/test_compiler_options.py checks that the option still
# moves convolutions out of YNNPACK and keeps its dots and reductions. DOT in place of
# INDIVIDUAL_DOT also fuses other ops into the dots: it made a single-member vmap of the
# MNIST CNN 2.3x slower (the pooling gradient's broadcast and multiply fused into a dot).
CPU_YNN_FUSION_TYPES = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
# The XLA:CPU option that takes such a list.
CPU_YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"


KNOWN_PLATFORMS = frozenset({"cpu", "gpu", "cuda", "rocm", "tpu", "metal"})


def train_compiler_options(platform: str | None = None) -> dict[str, str]:
    """The XLA compiler options for a train step on `platform` ("cpu", "gpu", "tpu"; by
    default jax's default backend), for `jax.jit(..., compiler_options=...)`."""
    if _checked(platform) == "cpu":
        return {CPU_YNN_FUSION_OPTION: CPU_YNN_FUSION_TYPES}
    return {}


def _checked(platform: str | None) -> str:
    """`platform` in lower case (jax's default backend for None); a clear error if unknown."""
    platform = jax.default_backend() if platform is None else platform
    if not isinstance(platform, str) or platform.lower() not in KNOWN_PLATFORMS:
        raise ValueError(f"unknown platform {platform!r}: pass one of {sorted(KNOWN_PLATFORMS)}"
                         " (a device's .platform), or None for jax.default_backend()")
    return platform.lower()


def init_compiler_options(platform: str | None = None) -> dict[str, str]:
    """The XLA compiler options for a program that runs once, such as a state's init
    (`jnn.create_train_state` uses them): on CPU, LLVM's optimization level 1 instead of
    XLA's default. An init's program is mostly random-number kernels, one per parameter;
    at level 1 the seed models' init took 3-4x less time (CIFAR-10 CNN 1.5 s against 6.6 s
    eager and 3.7 s at the default level, 2-core CPU), with the same bits as the default
    level and as eager dispatch (tests/test_state_init.py checks). Level 0 is faster still
    but changes the last bit of some values, so it is not used.
    Other backends get no options."""
    platform = _checked(platform)
    return {"xla_backend_optimization_level": 1} if platform == "cpu" else {}
