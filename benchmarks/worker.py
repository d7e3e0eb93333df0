"""Runs one benchmark spec in this (fresh) process, timed on command over stdin/stdout.

    python -m benchmarks.worker '{"framework": "jnn", "model": "cnn", ...}'

The worker builds the spec (measuring its compile time) and prints one JSON line,
{"records": [train record, eval record]}, with the step fields still empty. It then answers
each command line on stdin, {"step": "train", "warmup": W, "repeats": N, "min_ms": M},
with {"step_ms": [milliseconds]} (at least N timed steps, and as many as add up to M ms,
after W untimed ones), until stdin closes;
benchmarks.interleave drives several workers this way, one at a time, and fills the step
fields (`finish`). Two kinds of worker only compile, and exit after their first line: with
spec["warm"] (the persistent cache is already filled) its records are complete; with
spec["compile_only"] (a cold compile, one more sample of it) they are as `prepare` makes
them, for `finish` with the step times of the worker that timed the spec.

A fresh process per framework keeps frameworks from sharing thread pools or caches,
and lets a second process measure compilation from a warm persistent cache honestly.
Protocol lines are the only output on stdout: whatever else the process prints goes to
stderr.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TextIO

from benchmarks import frameworks, timing

IDENTITY = ("framework", "model", "transform", "devices", "ensemble", "batch")
STEPS = ("train", "eval")
LATER_ROUND_WARMUP = 1


def _configure(spec: dict) -> dict[str, str]:
    """Environment that must be set before jax / torch are imported. Returns the harness
    settings the spec asks for that this process could not make: {spec key: why not}."""
    refused = {}
    if spec.get("keep_freed_memory"):
        from train.allocator import keep_freed_memory

        refused["keep_freed_memory"] = keep_freed_memory()
    if spec.get("cap_full_unrolling"):
        from train.unrolling import cap_full_unrolling

        refused["cap_full_unrolling"] = cap_full_unrolling()
    refused = {key: reason for key, reason in refused.items() if reason is not None}
    for key, reason in refused.items():
        print(f"{key} is not applied: {reason}", file=sys.stderr)
    if spec["devices"] > 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={spec['devices']}")
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(spec["cache_dir"], "inductor")
    import jax

    jax.config.update("jax_compilation_cache_dir", os.path.join(spec["cache_dir"], "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return refused


def warmup_steps(spec: dict, round_index: int) -> int:
    """Untimed steps before a round: spec["warmup"] before the first, one before each later
    round (it refills the caches that the other workers' rounds evicted)."""
    return spec["warmup"] if round_index == 0 else LATER_ROUND_WARMUP


def error_records(spec: dict, message: str) -> list[dict]:
    """The train and eval records of a spec that could not be measured."""
    return [{**{k: spec[k] for k in IDENTITY}, "step": step, "error": message.splitlines()[0]}
            for step in STEPS]


def prepare(spec: dict) -> tuple[frameworks.Bench, list[dict]]:
    """Builds `spec` and measures its compilation; returns the Bench and its train and eval
    records, whose step fields `finish` fills. Frameworks that compile on the first call
    carry that call's seconds as first_call_s until then."""
    bench = frameworks.get(spec["framework"]).build(spec)
    first = {}
    if bench.phases is None:  # compiles on the first call (or never: torch eager)
        first = {"train": timing.first_call_overhead(bench.train),
                 "eval": timing.first_call_overhead(bench.eval)}
    records = []
    for step_name in STEPS:
        record = {k: spec[k] for k in IDENTITY}
        record.update(step=step_name, parameters=bench.parameters, trace_s=None, lower_s=None,
                      compile_s=None, compile_warm_s=None, step_ms=None, step_ms_min=None,
                      step_ms_max=None, examples_per_s=None, round_step_ms=None)
        if bench.phases is not None:
            record.update(bench.phases[step_name])
        elif bench.compiles:
            record["first_call_s"] = first[step_name]
        records.append(record)
    return bench, records


def finish(record: dict, rounds_ms: list[list[float]]) -> dict:
    """A copy of a `prepare` record with the step milliseconds of its rounds (one list per
    round; none for a warm-cache run): step statistics, throughput, and for first-call
    frameworks compile_s, the first call minus a steady step (a warm run has no steady step
    measured: there the first call is reported whole; steps take milliseconds)."""
    record = dict(record)
    first_call_s = record.pop("first_call_s", None)
    steady_s = 0.0
    if rounds_ms:
        record.update(timing.step_stats(rounds_ms))
        record["examples_per_s"] = record["batch"] * record["ensemble"] / (record["step_ms"] / 1e3)
        steady_s = record["step_ms"] / 1e3
    if first_call_s is not None:
        record["compile_s"] = max(0.0, first_call_s - steady_s)
    return record


def run(spec: dict) -> list[dict]:
    """Builds and measures `spec` in this process: spec.get("rounds", 1) rounds of each step,
    back to back (no other worker in between); returns the train and eval records.

    With spec["warm"] or spec["compile_only"], only compile times are measured.
    """
    bench, records = prepare(spec)
    steps = {"train": bench.train, "eval": bench.eval}
    rounds = 0 if spec.get("warm") or spec.get("compile_only") else spec.get("rounds", 1)
    return [finish(record, [timing.time_steps(steps[record["step"]],
                                              warmup=warmup_steps(spec, i),
                                              repeats=spec["repeats"],
                                              min_ms=spec.get("min_round_ms", 0.0))
                            for i in range(rounds)])
            for record in records]


def _send(replies: TextIO, message: dict) -> None:
    replies.write(json.dumps(message) + "\n")
    replies.flush()


def serve(spec: dict, commands: TextIO, replies: TextIO,
          refused: dict[str, str] | None = None) -> None:
    """Builds `spec`, sends its records, then times steps on each command until `commands`
    ends (the protocol of the module docstring). `refused`: the harness settings this
    process could not make (`_configure`), which every record carries as "refused"."""
    bench, records = prepare(spec)
    if refused:
        records = [{**record, "refused": refused} for record in records]
    if spec.get("warm"):
        _send(replies, {"records": [finish(record, []) for record in records]})
        return
    if spec.get("compile_only"):
        _send(replies, {"records": records})
        return
    _send(replies, {"records": records})
    steps = {"train": bench.train, "eval": bench.eval}
    for line in iter(commands.readline, ""):
        command = json.loads(line)
        _send(replies, {"step_ms": timing.time_steps(steps[command["step"]],
                                                     warmup=command["warmup"],
                                                     repeats=command["repeats"],
                                                     min_ms=command.get("min_ms", 0.0))})


def main() -> None:
    spec = json.loads(sys.argv[1])
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # library prints go to stderr
    serve(spec, sys.stdin, replies, _configure(spec))


if __name__ == "__main__":
    main()
