"""jnn at another git revision against the working tree, timed interleaved in one run.

    python -m benchmarks.versus_revision 1492c44 --out benchmarks/results/cpu-2core/vs-1492c44.md

For each seed model, two worker processes run jnn's jit train and eval steps: one
imports jnn from the working tree, the other jnn as it was at REVISION (extracted with
`git archive` beside a copy of today's benchmarks/, so both speak the same worker
protocol). They are timed in turns over several rounds (benchmarks.interleave), and
each ratio is the median of the per-round ratios with their spread. Answers "did this
change make jnn slower?" without the drift of two separate runs.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

from benchmarks import interleave, plan, report

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def extract_revision(revision: str, into: str) -> str:
    """A folder holding jnn/ at `revision` and today's benchmarks/; returns its path."""
    archive = subprocess.run(["git", "archive", revision, "jnn"], cwd=HERE, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    shutil.copytree(os.path.join(HERE, "benchmarks"), os.path.join(into, "benchmarks"),
                    ignore=shutil.ignore_patterns("results", "__pycache__"))
    return into


def compare(revision: str, models: list[str], rounds: int, quick: bool,
            compile_rounds: int = 1) -> list[str]:
    """Markdown lines: per model, step ms and compile s of REVISION and the working tree
    (compile s: the median of `compile_rounds` cold compiles, each in a fresh process)."""
    # fewer rounds than the suite's (7 by default), so longer ones unless --quick
    timing = plan.QUICK_TIMING if quick else {**plan.FULL_TIMING, "min_round_ms": 200.0}
    lines = [f"# jnn at {revision} vs the working tree (interleaved, {rounds} rounds)", "",
             "| model | step | ms at " + revision + " | ms now | now / then (min-max) "
             "| compile s then | compile s now | now / then (min-max) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory(prefix="jnn-versus-") as tmp:
        tree = extract_revision(revision, os.path.join(tmp, "revision"))
        cache_root = os.path.join(tmp, "cache")
        os.makedirs(cache_root)
        for model in models:
            base = {"framework": "jnn", "model": model, "transform": "jit", "devices": 1,
                    "ensemble": 1, "batch": plan.BATCH, **timing, "rounds": rounds,
                    "compile_rounds": compile_rounds}
            specs = [{**base, "tree": tree}, {**base, "tree": None}]

            def start(spec):
                return interleave.WorkerProcess(spec, cwd=spec["tree"])

            records = interleave.measure_group(specs, cache_root, rounds=rounds, start=start,
                                               warm_frameworks=(), progress=print)
            for step in ("train", "eval"):
                then, now = [r for r in records if r["step"] == step]
                if then.get("error") or now.get("error"):
                    error = then.get("error") or now.get("error")
                    lines.append(f"| {model} | {step} | {error} |")
                    continue
                ratio = report.step_ratio(now, then)
                compiled = report.compile_ratio(now, then)
                lines.append(f"| {model} | {step} | {then['step_ms']:.2f} | {now['step_ms']:.2f} "
                             f"| {ratio[0]:.2f}x ({ratio[1]:.2f}-{ratio[2]:.2f}) "
                             f"| {report.compile_total(then):.2f} | {report.compile_total(now):.2f} "
                             f"| {compiled[0]:.2f}x ({compiled[1]:.2f}-{compiled[2]:.2f}) |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.versus_revision",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("revision", help="a git revision, e.g. HEAD~3 or a commit hash")
    parser.add_argument("--models", default=",".join(plan.SEED_MODELS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="fewer steps per round")
    parser.add_argument("--compile-rounds", type=int, default=1, metavar="K",
                        help="cold compiles of each, each in a fresh process (default 1)")
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.compile_rounds < 1:
        parser.error("--rounds and --compile-rounds must be at least 1")
    lines = compare(args.revision, args.models.split(","), args.rounds, args.quick,
                    args.compile_rounds)
    text = "\n".join(lines + ["", f"Command: python -m benchmarks.versus_revision "
                              f"{' '.join(argv or sys.argv[1:])}", ""])
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
