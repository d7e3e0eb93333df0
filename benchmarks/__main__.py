"""`python -m benchmarks`: compile time and step time of jnn side by side with its peers.

    python -m benchmarks --quick --out /tmp/b        # under 5 minutes on 2 CPU cores
    python -m benchmarks --out benchmarks/results/cpu-2core   # the full run, under 30
    python -m benchmarks --only '*/mlp/jit/*'         # one model, every framework

Every measurement runs in a fresh process (python -m benchmarks.worker); JAX-based
frameworks and torch.compile run a second fresh process on the filled persistent cache
for the warm compile time. Writes DIR/results.json, DIR/results.md and PNG plots.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile

from tqdm.auto import tqdm

from benchmarks import frameworks, machine, plan, report, schema

WORKER_TIMEOUT_S = 900


def _run_worker(spec: dict) -> list[dict]:
    result = subprocess.run([sys.executable, "-m", "benchmarks.worker", json.dumps(spec)],
                            capture_output=True, text=True, timeout=WORKER_TIMEOUT_S,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"worker exited {result.returncode}: {tail[0][:300]}")
    return json.loads(lines[-1])


def measure(spec: dict, cache_root: str, *, warm: bool = True) -> list[dict]:
    """Cold records of `spec`, with compile_warm_s from a second process where it applies
    (JAX-based frameworks; torch.compile too unless `warm` is False)."""
    cache_dir = tempfile.mkdtemp(dir=cache_root)
    spec = {**spec, "cache_dir": cache_dir}
    try:
        records = _run_worker(spec)
        warm_frameworks = frameworks.JAX_FRAMEWORKS + (("torch-compile",) if warm else ())
        if spec["framework"] in warm_frameworks:
            warm = _run_worker({**spec, "warm": True})
            for record, warm_record in zip(records, warm):
                record["compile_warm_s"] = warm_record["compile_s"]
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        base = {k: spec[k] for k in ("framework", "model", "transform", "devices", "ensemble",
                                      "batch")}
        records = [{**base, "step": step, "error": str(err).splitlines()[0]}
                   for step in ("train", "eval")]
    return records


def check_parameter_counts(records: list[dict]) -> list[str]:
    """Problems where frameworks disagree on a model's parameter count (should be none)."""
    from benchmarks.models import expected_parameter_count

    problems = []
    for r in records:
        if r.get("parameters") is not None and r["parameters"] != expected_parameter_count(r["model"]):
            problems.append(f"{r['framework']}/{r['model']}: {r['parameters']} parameters, "
                            f"expected {expected_parameter_count(r['model'])}")
    return problems


def write_report(out: str) -> int:
    """results.md and the plots of an existing DIR/results.json."""
    path = os.path.join(out, "results.json")
    if not os.path.exists(path):
        print(f"error: no {path}; run python -m benchmarks --out {out} first", file=sys.stderr)
        return 2
    with open(path) as f:
        results = json.load(f)
    report.write_markdown(results, os.path.join(out, "results.md"))
    plots = report.write_plots(results, out)
    print(f"wrote {out}/results.md, " + ", ".join(os.path.basename(p) for p in plots))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer models and steps (< 5 min)")
    parser.add_argument("--only", metavar="PATTERN",
                        help="fnmatch on framework/model/transform/Ndev/kK, e.g. 'jnn/*'")
    parser.add_argument("--out", default=None, help="output folder (default: "
                        "benchmarks/results/<machine>)")
    parser.add_argument("--report", metavar="DIR", help="only rewrite DIR/results.md and the "
                        "plots from DIR/results.json (no measuring)")
    args = parser.parse_args(argv)
    if args.report:
        return write_report(args.report)

    specs = plan.make_plan(quick=args.quick, only=args.only)
    if not specs:
        print(f"error: --only {args.only!r} matches no measurement; try '*/mlp/*'",
              file=sys.stderr)
        return 2
    info = machine.describe()
    out = args.out or os.path.join("benchmarks", "results", machine.slug(info))
    os.makedirs(out, exist_ok=True)
    records = []
    with tempfile.TemporaryDirectory(prefix="jnn-bench-cache-") as cache_root:
        bar = tqdm(specs, unit="measurement", file=sys.stderr)
        for spec in bar:
            bar.set_postfix_str(plan.spec_name(spec))
            new = measure(spec, cache_root, warm=not args.quick)
            records += new
            if new[0].get("error"):
                tqdm.write(f"{plan.spec_name(spec)}: {new[0]['error']}", file=sys.stderr)
    results = {
        "machine": info,
        "command": "python -m benchmarks " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "settings": {"quick": args.quick, "only": args.only, "batch": plan.BATCH,
                     "warmup": specs[0]["warmup"], "repeats": specs[0]["repeats"]},
        "parameter_count_problems": check_parameter_counts(records),
        "records": records,
    }
    problems = schema.results_problems(results)
    if problems:
        raise AssertionError(f"results do not fit the schema: {problems[:5]}")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {out}/results.json")
    write_report(out)
    for problem in results["parameter_count_problems"]:
        print(f"parameter count mismatch: {problem}", file=sys.stderr)
    failed = [r for r in records if r.get("error")]
    return 1 if results["parameter_count_problems"] or failed else 0


if __name__ == "__main__":
    sys.exit(main())
