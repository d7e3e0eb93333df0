"""Runs one benchmark spec in this (fresh) process and prints its records as one JSON line.

    python -m benchmarks.worker '{"framework": "jnn", "model": "cnn", ...}'

A fresh process per measurement keeps frameworks from sharing thread pools or caches,
and lets a second process measure compilation from a warm persistent cache honestly.
"""

from __future__ import annotations

import json
import os
import sys


def _configure(spec: dict) -> None:
    """Environment that must be set before jax / torch are imported."""
    if spec["devices"] > 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={spec['devices']}")
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(spec["cache_dir"], "inductor")
    import jax

    jax.config.update("jax_compilation_cache_dir", os.path.join(spec["cache_dir"], "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def run(spec: dict) -> list[dict]:
    """Builds and measures `spec`; returns one record for the train step and one for eval.

    With spec["warm"], only compile times are measured (the persistent cache is warm).
    """
    from benchmarks import frameworks, timing

    bench = frameworks.get(spec["framework"]).build(spec)
    first = {}
    if bench.phases is None:  # compiles on the first call (or never: torch eager)
        first = {"train": timing.first_call_overhead(bench.train),
                 "eval": timing.first_call_overhead(bench.eval)}
    records = []
    for step_name, step in (("train", bench.train), ("eval", bench.eval)):
        record = {k: spec[k] for k in ("framework", "model", "transform", "devices", "ensemble",
                                       "batch")}
        record.update(step=step_name, parameters=bench.parameters, trace_s=None, lower_s=None,
                      compile_s=None, compile_warm_s=None, step_ms=None, step_ms_min=None,
                      step_ms_max=None, examples_per_s=None)
        if bench.phases is not None:
            record.update(bench.phases[step_name])
        if not spec.get("warm"):
            record.update(timing.step_times(step, warmup=spec["warmup"], repeats=spec["repeats"]))
            record["examples_per_s"] = spec["batch"] * spec["ensemble"] / (record["step_ms"] / 1e3)
        if bench.phases is None and bench.compiles:
            # first call minus a steady step (a warm run has no steady step measured:
            # there the first call is reported whole; steps take milliseconds)
            steady = (record["step_ms"] or 0.0) / 1e3
            record["compile_s"] = max(0.0, first[step_name] - steady)
        records.append(record)
    return records


def main() -> None:
    spec = json.loads(sys.argv[1])
    _configure(spec)
    print(json.dumps(run(spec)))


if __name__ == "__main__":
    main()
