"""Measuring functions: ahead-of-time compile phases, timed steps and their statistics."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def compile_phases(jitted, *args, options: Callable | None = None
                   ) -> tuple[Any, dict[str, float | None]]:
    """Traces, lowers and compiles a jitted function for `args`; returns the executable and
    the seconds of each phase. `options(traced)` gives the compiler options from the traced
    program (its time counts in the trace phase). Functions without `.trace` report trace
    and lower together as lower_s (trace_s None) and compile with their own options."""
    if options is not None and not hasattr(jitted, "trace"):
        raise ValueError(f"options= needs a function with .trace (jax.jit's); "
                         f"{type(jitted).__name__} has none: compile it with its own options")
    start = time.perf_counter()
    compiler_options = None
    if hasattr(jitted, "trace"):
        traced = jitted.trace(*args)
        if options is not None:
            compiler_options = options(traced)
        traced_at = time.perf_counter()
        lowered = traced.lower()
        trace_s = traced_at - start
    else:
        traced_at = start
        lowered = jitted.lower(*args)
        trace_s = None
    lowered_at = time.perf_counter()
    compiled = lowered.compile(compiler_options)
    done = time.perf_counter()
    return compiled, {"trace_s": trace_s, "lower_s": lowered_at - traced_at,
                      "compile_s": done - lowered_at, "flops": program_flops(compiled)}


def cold_compile_s(record: dict) -> float | None:
    """A record's trace + lower + compile seconds, what a user waits for before the first
    step (None where the framework does not compile)."""
    if record.get("compile_s") is None:
        return None
    return sum(record.get(k) or 0.0 for k in ("trace_s", "lower_s", "compile_s"))


def program_flops(compiled) -> float | None:
    """The floating-point operations of one call of a compiled program, as XLA's cost
    analysis counts them (None where the backend gives none)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend or version offers it
        return None
    if isinstance(cost, (list, tuple)):  # older jax: one dict per program
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def time_steps(step: Callable[[], Any], *, warmup: int, repeats: int,
               min_ms: float = 0.0) -> list[float]:
    """Runs `step` (which must block until its work is done) `warmup` times unmeasured, then
    at least `repeats` times measured, and on until the measured steps add up to `min_ms`
    milliseconds (a sub-millisecond step is then timed over many steps, not 3); returns
    the milliseconds of each measured step."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(warmup):
        step()
    times = []
    while len(times) < repeats or sum(times) < min_ms:
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def step_stats(rounds: list[list[float]]) -> dict[str, Any]:
    """Statistics of the step milliseconds of several rounds (one list per round): median,
    min and max over every step of every round, and each round's median (round_step_ms,
    what per-round ratios are taken of)."""
    steps = [t for times in rounds for t in times]
    if not steps:
        raise ValueError("no timed steps")
    return {"step_ms": statistics.median(steps), "step_ms_min": min(steps),
            "step_ms_max": max(steps),
            "round_step_ms": [statistics.median(times) for times in rounds]}


def first_call_overhead(step: Callable[[], Any]) -> float:
    """Seconds of one (first) call: for frameworks that compile on first use."""
    start = time.perf_counter()
    step()
    return time.perf_counter() - start
