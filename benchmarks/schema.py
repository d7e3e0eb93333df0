"""The shape of results.json, checked by the tests and by every run before it writes."""

from __future__ import annotations

NUMBER_OR_NULL = (int, float, type(None))
RECORD_FIELDS = {
    "framework": str, "model": str, "transform": str, "devices": int, "ensemble": int,
    "batch": int, "step": str, "parameters": int,
    "trace_s": NUMBER_OR_NULL, "lower_s": NUMBER_OR_NULL, "compile_s": NUMBER_OR_NULL,
    "compile_warm_s": NUMBER_OR_NULL, "step_ms": NUMBER_OR_NULL, "step_ms_min": NUMBER_OR_NULL,
    "step_ms_max": NUMBER_OR_NULL, "examples_per_s": NUMBER_OR_NULL,
}
TRANSFORMS = ("jit", "vmap", "pmap", "shard")


def record_problems(record: dict) -> list[str]:
    """What is wrong with one record (an error record needs only its identity fields)."""
    problems = []
    fields = RECORD_FIELDS
    if record.get("error"):
        fields = {k: RECORD_FIELDS[k] for k in ("framework", "model", "transform", "devices",
                                                "ensemble", "batch", "step")}
    for name, kind in fields.items():
        if name not in record:
            problems.append(f"missing {name}")
        elif not isinstance(record[name], kind):
            problems.append(f"{name}={record[name]!r} is not {kind}")
    # each round's median step ms, and each round's cold compile seconds; optional (results
    # from before rounds lack them, and frameworks that do not compile lack the second)
    for key in ("round_step_ms", "round_compile_s"):
        rounds = record.get(key)
        if rounds is not None and not (isinstance(rounds, list) and
                                       all(isinstance(v, (int, float)) for v in rounds)):
            problems.append(f"{key}={rounds!r} is not a list of numbers")
    # XLA's FLOPs per step; optional (frameworks that compile on the first call lack it)
    if not isinstance(record.get("flops"), NUMBER_OR_NULL):
        problems.append(f"flops={record['flops']!r} is not a number")
    # the harness settings its worker was asked for but could not make: {spec key: why}
    refused = record.get("refused", {})
    if not (isinstance(refused, dict) and
            all(isinstance(k, str) and isinstance(v, str) for k, v in refused.items())):
        problems.append(f"refused={refused!r} is not a mapping of setting to reason")
    if record.get("transform") not in TRANSFORMS:
        problems.append(f"transform {record.get('transform')!r} is not one of {TRANSFORMS}")
    return problems


def results_problems(results: dict) -> list[str]:
    """What is wrong with a whole results.json object."""
    problems = [f"missing {k}" for k in ("machine", "command", "settings", "records")
                if k not in results]
    for i, record in enumerate(results.get("records", [])):
        problems += [f"record {i}: {p}" for p in record_problems(record)]
    return problems
