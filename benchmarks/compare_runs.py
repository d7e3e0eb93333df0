"""Does a rerun reproduce a run's ratios? Per seed model, step and peer, jnn's step-time
ratio (median of per-round ratios) in each of two results.json files and their difference;
and per seed model and compiling peer, jnn's train-step compile-time ratio the same way.

    python -m benchmarks.compare_runs RUN/results.json RERUN/results.json [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from benchmarks import plan, report

PEERS = ("flax", "nnx", "keras", "torch", "torch-compile")
# Two runs whose measured matmul throughputs differ by more than this are on unlike machines.
MATMUL_TOLERANCE = 0.25


def machine_differences(first: dict, second: dict) -> list[str]:
    """How the machines of two runs (results.json's "machine") differ, in words: CPU model,
    vector instruction set, cores, measured matmul throughput, library versions. Empty
    when nothing recorded in both differs."""
    out = []
    for key, what in (("cpu", "CPU"), ("vector_isa", "vector instructions"), ("cores", "cores")):
        a, b = first.get(key), second.get(key)
        if a is not None and b is not None and a != b and "unknown" not in (a, b):
            out.append(f"{what} {a} vs {b}")
    peaks = [statistics.median(m["matmul_flops_per_s"]) if m.get("matmul_flops_per_s") else None
             for m in (first, second)]
    if None not in peaks and abs(peaks[1] / peaks[0] - 1.0) > MATMUL_TOLERANCE:
        out.append(f"matmul {peaks[0] / 1e9:.0f} vs {peaks[1] / 1e9:.0f} GFLOP/s")
    versions = [m.get("versions") or {} for m in (first, second)]
    changed = sorted(k for k in set(versions[0]) & set(versions[1])
                     if versions[0][k] != versions[1][k])
    if changed:
        out.append("versions of " + ", ".join(
            f"{k} ({versions[0][k]} vs {versions[1][k]})" for k in changed))
    return out


# what a row compares: (its name, the step, the ratio of two records)
MEASURES = (("step time", "train", report.step_ratio), ("step time", "eval", report.step_ratio),
            ("compile", "train", report.compile_ratio))


def ratio_differences(first: list[dict], second: list[dict]) -> list[dict]:
    """For each seed model, measure (step time of the train and eval steps, compile time of
    the train step) and peer present in both runs: jnn's ratio to the peer in each run
    (median, min, max over rounds) and the relative difference of the medians."""
    rows = []
    for model in plan.SEED_MODELS:
        for measure, step, ratio_of in MEASURES:
            for peer in PEERS:
                ratios = []
                for records in (first, second):
                    find = lambda fw: report._find(  # noqa: E731
                        records, framework=fw, model=model, transform="jit", step=step)
                    ratios.append(ratio_of(find("jnn"), find(peer)))
                if None in ratios:
                    continue
                rows.append({"model": model, "measure": measure, "step": step, "peer": peer,
                             "first": ratios[0], "second": ratios[1],
                             "difference": ratios[1][0] / ratios[0][0] - 1.0})
    return rows


def markdown(rows: list[dict], first: str, second: str, machines: list[str] = ()) -> list[str]:
    def fmt(r):
        return f"{r[0]:.2f}x ({r[1]:.2f}–{r[2]:.2f})"

    lines = [f"jnn's step-time and compile-time ratios to each peer in `{first}` and in "
             f"`{second}`, and the second's median over the first's.", ""]
    if machines:
        lines += ["The two runs come from unlike machines (" + "; ".join(machines) + "): a "
                  "ratio to a framework with kernels of its own (PyTorch's) need not carry from "
                  "one to the other. Compare runs from one machine.", ""]
    lines += ["| model | measure | step | jnn / | first | second | difference |",
              "|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['measure']} | {r['step']} | {r['peer']} | "
                     f"{fmt(r['first'])} | {fmt(r['second'])} | {r['difference']:+.0%} |")
    for measure in dict.fromkeys(r["measure"] for r in rows):
        worst = max((r for r in rows if r["measure"] == measure),
                    key=lambda r: abs(r["difference"]))
        lines += ["", f"Largest difference in {measure}: {worst['difference']:+.0%} "
                      f"({worst['model']} {worst['step']}, jnn / {worst['peer']})."]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare_runs",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    runs, machines = [], []
    for path in (args.first, args.second):
        try:
            with open(path) as f:
                results = json.load(f)
            runs.append(results["records"])
            machines.append(results.get("machine") or {})
        except (OSError, ValueError, KeyError, TypeError) as err:
            print(f"error: cannot read {path} as a results.json ({err})", file=sys.stderr)
            return 2
    text = "\n".join(markdown(ratio_differences(*runs), args.first, args.second,
                              machine_differences(*machines))) + "\n"
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
