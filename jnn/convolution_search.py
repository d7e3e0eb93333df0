"""Where a traced program computes convolutions, as XLA:CPU will see them.

Two choices that jnn makes per program read a step's jaxpr (traced once, never run):
the way an ensemble runs its members (`jnn.ensemble.resolve_members`) and the CPU
compiler options of a step (`jnn.train_compiler_options(jaxpr=...)`,
`jnn.eval_compiler_options(jaxpr=...)`).
"""

from __future__ import annotations

from typing import Iterator

from jax.extend import core as jex_core


def cpu_convolutions(jaxpr, ours: bool = False) -> Iterator[tuple[object, bool]]:
    """(equation, ours) for each convolution that the CPU runs in `jaxpr` (a Jaxpr or a
    ClosedJaxpr), nested jaxprs (scan, cond, custom gradients, ...) included. Of a
    platform-dependent conditional (jnn's convolutions, `jnn.models.convolution`) only
    the CPU branch is looked at, and its convolutions are `ours`."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)  # a ClosedJaxpr's own
    if not hasattr(jaxpr, "eqns"):
        raise TypeError(f"expected a jaxpr (a Traced's .jaxpr, or jax.make_jaxpr(step)(...)), "
                        f"got {type(jaxpr).__name__}")
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            yield eqn, ours
        platforms = eqn.params.get("branches_platforms") if eqn.primitive.name == "cond" else None
        if platforms is not None:
            cpu = [i for i, names in enumerate(platforms) if names and "cpu" in names]
            index = cpu[0] if cpu else len(platforms) - 1  # else the default branch
            yield from cpu_convolutions(eqn.params["branches"][index].jaxpr, ours=bool(cpu))
            continue
        for inner in jex_core.jaxprs_in_params(eqn.params):
            yield from cpu_convolutions(inner, ours)


def computes_convolution(jaxpr) -> bool:
    """Whether the CPU runs at least one convolution for `jaxpr`."""
    return next(cpu_convolutions(jaxpr), None) is not None
