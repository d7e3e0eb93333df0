"""XLA compiler options, chosen per backend and per program: for a train step, an eval
step, and a state's init.

    step = jnn.make_train_step()
    options = jnn.train_compiler_options(jaxpr=jax.make_jaxpr(step)(state, batch))
    train_step = jax.jit(step, donate_argnums=0, compiler_options=options)

or, ahead of time, from the one trace that jit makes anyway (the executable then takes
only these shapes):

    traced = jax.jit(step, donate_argnums=0).trace(state, batch)
    train_step = traced.lower().compile(jnn.train_compiler_options(jaxpr=traced.jaxpr))

Without a jaxpr, `jnn.train_compiler_options()` gives the options that suit every model,
convolutions included. `jnn.parallel.jit_sharded` and the harness pass each step they
compile the options for its own program (the harness's pmap steps too, in one process).

The options change which kernels XLA runs, not what the step computes: results equal the
step compiled without them up to float rounding (the order of the additions inside a dot
or a convolution changes).

On CPU, XLA hands dots, reductions, elementwise ops and convolutions to YNNPACK by
default. YNNPACK is fast on a convolution's forward pass (an eval step's whole forward
pass is one fused op), but slow on its gradients: the kernel gradient is a convolution
whose window is the whole image. So a train step that computes convolutions is compiled
with convolutions left out of YNNPACK's fusions: XLA runs them with its own (Eigen)
kernels, and YNNPACK keeps the dots and reductions. Measured on the seed models (batch
128, 2-core CPU, interleaved in one process), the train step took:
- CIFAR-10 CNN: 0.76x the time;
- MNIST CNN: 0.65x;
- a vmap ensemble of 4 CIFAR-10 CNNs: 0.20x; of one MNIST CNN: 0.85x.
Its eval step keeps XLA's defaults: YNNPACK's fused forward pass is the faster one (with
YNNPACK off the CNNs' eval steps took 1.6-2.1x the time).

A program without convolutions (the MLP, the residual MLP) runs faster with YNNPACK off
altogether, train and eval: with the convolution options the MLP's and the residual MLP's
(depth 2 and 8) train steps took 1.09-1.16x the time, their eval steps with XLA's defaults
1.07-1.20x (`python -m benchmarks.cpu_fusion_options`, 2-core AMD EPYC Zen 4, 15
interleaved rounds: benchmarks/results/cpu-2core-epyc-avx512/34dd135/).
Which kind a program is comes from its jaxpr (`jaxpr=`, searched by
`jnn.convolution_search`); without one the options are those for convolutions, which
cost a dense model those 10%. Other backends get no options.

One more CPU setting belongs to the process, not to a program: LLVM's full unrolling,
capped at 8 iterations by `train.unrolling` (`python -m train` sets it), which cut the
seed models' train-step compile times by 11-24%.
"""

from __future__ import annotations

import jax

from jnn.convolution_search import computes_convolution

# The YNNPACK fusion kinds to keep: single dots and reductions; no convolutions. The option
# is a full list, not a change to XLA's default, so a kind that a later XLA adds to its
# default is left out here; tests/test_compiler_options.py checks that the option still
# moves convolutions out of YNNPACK and keeps its dots and reductions. DOT in place of
# INDIVIDUAL_DOT also fuses other ops into the dots: it made a single-member vmap of the
# MNIST CNN 2.3x slower (the pooling gradient's broadcast and multiply fused into a dot).
CPU_YNN_FUSION_TYPES = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
# For a program without convolutions: no YNNPACK fusions at all (XLA's own kernels).
CPU_YNN_FUSION_TYPES_DENSE = ""
# The XLA:CPU option that takes such a list.
CPU_YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"


KNOWN_PLATFORMS = frozenset({"cpu", "gpu", "cuda", "rocm", "tpu", "metal"})


def train_compiler_options(platform: str | None = None, *, jaxpr=None) -> dict[str, str]:
    """The XLA compiler options for a train step on `platform` ("cpu", "gpu", "tpu"; by
    default jax's default backend), for `jax.jit(..., compiler_options=...)` or
    `Lowered.compile(...)`. `jaxpr`: the step's (a `Traced`'s `.jaxpr`, or
    `jax.make_jaxpr`'s) to choose for its program; without it, the options that suit
    every model (see the module)."""
    program = _cpu_program(platform, jaxpr)
    if program == "dense":
        return {CPU_YNN_FUSION_OPTION: CPU_YNN_FUSION_TYPES_DENSE}
    if program == "convolutions":
        return {CPU_YNN_FUSION_OPTION: CPU_YNN_FUSION_TYPES}
    return {}


def eval_compiler_options(platform: str | None = None, *, jaxpr=None) -> dict[str, str]:
    """The XLA compiler options for an eval (or predict) step on `platform`, as
    `train_compiler_options`: on CPU, YNNPACK off for a program without convolutions;
    XLA's defaults otherwise, and without `jaxpr`."""
    if _cpu_program(platform, jaxpr) == "dense":
        return {CPU_YNN_FUSION_OPTION: CPU_YNN_FUSION_TYPES_DENSE}
    return {}


def _cpu_program(platform: str | None, jaxpr) -> str | None:
    """None off the CPU; on it "dense" for a jaxpr without convolutions, "convolutions"
    for one with them or no jaxpr. A jaxpr that is not one is an error on every platform."""
    convolutions = jaxpr is None or computes_convolution(jaxpr)
    if _checked(platform) != "cpu":
        return None
    return "convolutions" if convolutions else "dense"


def _checked(platform: str | None) -> str:
    """`platform` in lower case (jax's default backend for None); a clear error if unknown."""
    platform = jax.default_backend() if platform is None else platform
    if not isinstance(platform, str) or platform.lower() not in KNOWN_PLATFORMS:
        raise ValueError(f"unknown platform {platform!r}: pass one of {sorted(KNOWN_PLATFORMS)}"
                         " (a device's .platform), or None for jax.default_backend()")
    return platform.lower()


def init_compiler_options(platform: str | None = None) -> dict[str, str | int | bool]:
    """The XLA compiler options for a program that runs once, such as a state's init
    (`jnn.create_train_state` uses them), where only the compile's time counts: on CPU,
    LLVM's optimization level 1 instead of XLA's default, and XLA's older (non-MLIR)
    fusion emitters. An init's program is mostly random-number kernels, one per
    parameter. At level 1 the seed models' init took 3-4x less time (CIFAR-10 CNN 1.5 s
    against 6.6 s eager and 3.7 s at the default level, 2-core CPU), with the same bits
    as the default level and as eager dispatch (tests/test_state_init.py checks). Level 0
    is faster still but changes the last bit of some values, so it is not used. The older
    emitters compile the init program in two thirds of the time (CIFAR-10 CNN 0.49-0.51 s
    against 0.74-0.79 s, MLP 0.20-0.26 s against 0.34 s; create_train_state as a whole
    1.11 s against 1.37 s, MNIST CNN 0.64 s against 0.81 s, 2-core AMD EPYC Zen 4), with
    the same bits; they are not used for the train step, whose program they made 5-30%
    slower to run.
    Other backends get no options."""
    platform = _checked(platform)
    if platform != "cpu":
        return {}
    return {"xla_backend_optimization_level": 1, "xla_cpu_use_fusion_emitters": False}
