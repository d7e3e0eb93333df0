"""`python -m benchmarks`: compile time and step time of jnn side by side with its peers.

    python -m benchmarks --quick --out /tmp/b        # about 5 minutes on 2 CPU cores
    python -m benchmarks --out benchmarks/results/cpu-2core   # the full run, about 90 min
    python -m benchmarks --only '*/mlp/jit/*'         # one model, every framework
    python -m benchmarks --quick --rounds 7           # more rounds: tighter ratios
    python -m benchmarks --only '*/mlp/jit/*' --compile-rounds 9   # more cold compiles

Every measurement runs in its own fresh process (python -m benchmarks.worker), so that
frameworks never share thread pools. The measurements compared with each other (the
frameworks of one model; the ensemble sizes or device counts of one transform) are timed
interleaved: all their processes build and compile, one after another, then take turns
timing steps over several rounds (benchmarks.interleave), and every ratio in the report is
the median of its per-round ratios, with their spread; under jit each framework also
compiles cold several times, each in a fresh process, in rounds of their own (compile
ratios: the median of per-round ratios, like step ratios). JAX-based frameworks and
torch.compile run a second fresh process on the filled persistent cache for the warm
compile time. Writes DIR/results.json, DIR/results.md and PNG plots.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile

from tqdm.auto import tqdm

from benchmarks import frameworks, interleave, machine, peak, plan, report, schema


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
    parser.add_argument("--rounds", type=int, metavar="N", help="rounds of interleaved "
                        f"timing (default: {plan.QUICK_TIMING['rounds']} with --quick, else "
                        f"{plan.FULL_TIMING['rounds']})")
    parser.add_argument("--compile-rounds", type=int, metavar="K", help="cold compiles per "
                        "framework and model under jit, each in a fresh process (default: 1 "
                        f"with --quick, else {plan.FULL_SEED_COMPILE_ROUNDS} for the seed "
                        f"models, {plan.FULL_COMPILE_ROUNDS} for the residual MLPs)")
    parser.add_argument("--allocator", choices=plan.HARNESS_SETTING_CHOICES, default="harness",
                        help="which workers keep freed memory (train.allocator): harness "
                        "(default), jnn's alone, as python -m train runs it; all; none")
    parser.add_argument("--unroll-cap", choices=plan.HARNESS_SETTING_CHOICES, default="harness",
                        help="which workers cap LLVM's full unrolling at 8 iterations "
                        "(train.unrolling): harness (default), jnn's alone, as python -m train "
                        "runs it; all: every JAX framework's; none: no worker")
    parser.add_argument("--report", metavar="DIR", help="only rewrite DIR/results.md and the "
                        "plots from DIR/results.json (no measuring)")
    args = parser.parse_args(argv)
    if args.report:
        return write_report(args.report)

    for flag, value in (("--rounds", args.rounds), ("--compile-rounds", args.compile_rounds)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be at least 1")
    specs = plan.make_plan(quick=args.quick, only=args.only, rounds=args.rounds,
                           compile_rounds=args.compile_rounds, allocator=args.allocator,
                           unroll_cap=args.unroll_cap)
    if not specs:
        print(f"error: --only {args.only!r} matches no measurement; try '*/mlp/*'",
              file=sys.stderr)
        return 2
    info = machine.describe()
    out = args.out or os.path.join("benchmarks", "results", machine.slug(info))
    os.makedirs(out, exist_ok=True)
    records = []
    matmul_flops = [peak.matmul_flops_per_s()]  # again at the end: the machine may drift
    # --quick skips torch.compile's warm compile, to stay short
    warm_frameworks = frameworks.JAX_FRAMEWORKS + (() if args.quick else ("torch-compile",))
    with tempfile.TemporaryDirectory(prefix="jnn-bench-cache-") as cache_root:
        bar = tqdm(total=len(specs), unit="measurement", file=sys.stderr)
        for group in plan.groups(specs):
            name = f"{group[0]['model']}/{group[0]['transform']}"
            new = interleave.measure_group(
                group, cache_root, rounds=group[0]["rounds"], warm_frameworks=warm_frameworks,
                progress=lambda message: bar.set_postfix_str(f"{name}: {message}"))
            records += new
            for record in new:
                if record.get("error") and record["step"] == "train":
                    tqdm.write(f"{plan.spec_name(record)}: {record['error']}", file=sys.stderr)
            bar.update(len(group))
        bar.close()
    matmul_flops.append(peak.matmul_flops_per_s())
    results = {
        "machine": {**info, "matmul_flops_per_s": matmul_flops},
        "command": "python -m benchmarks " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "settings": {"quick": args.quick, "only": args.only, "batch": plan.BATCH,
                     "allocator": args.allocator, "unroll_cap": args.unroll_cap,
                     "warmup": specs[0]["warmup"], "repeats": specs[0]["repeats"],
                     "rounds": specs[0]["rounds"], "min_round_ms": specs[0]["min_round_ms"],
                     "compile_rounds": max(s["compile_rounds"] for s in specs)},
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
