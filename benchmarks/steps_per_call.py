"""`python -m benchmarks.steps_per_call`: the harness's training time with several train steps
per compiled call (config field steps_per_call) against one step per call.

    python -m benchmarks.steps_per_call --out benchmarks/results/cpu-2core
    python -m benchmarks.steps_per_call --configs digits_mlp --values 1,4 --rounds 3

Each round runs every (config, steps_per_call) pair once, in turn, in this process (the
runs of one round are interleaved, so a drift of the machine lands in every pair alike),
with checkpoints off so that only the loop is timed. A ratio is the median over rounds of
the round's train time with K steps per call over its time with one. The runs' test losses
are compared too: several steps per call must give the same run, up to float rounding
(SAME_RUN_RTOL; exit code 1 otherwise).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile

from benchmarks.report import publish_study


# The scanned steps are the same steps, but XLA compiles the loop body on its own, so float
# rounding may differ: bit for bit for the MLP, 3e-4 apart in the CNN's test loss after 30
# epochs (2026-12-01).
SAME_RUN_RTOL = 1e-3


def measure(configs_: list[str], values: list[int], rounds: int, epochs: int | None) -> dict:
    from train import config as configs
    from train.loop import train_and_evaluate

    times = {(c, k): [] for c in configs_ for k in values}
    losses = {}
    for r in range(rounds + 1):  # round 0 warms the data and the compilation cache
        for name in configs_:
            for k in values:
                config = configs.get_config(name)
                config.update({"steps_per_call": k, "save_checkpoint": False})
                if epochs:
                    config.epochs = epochs
                with tempfile.TemporaryDirectory() as workdir:
                    summary = train_and_evaluate(config, workdir, progress=False,
                                                 log=lambda _: None)
                if r:
                    times[name, k].append(summary["train_time_s"])
                losses[name, k] = summary["test_loss"]
                steps = summary["steps"]
            print(f"round {r}/{rounds} {name}: {steps} steps", file=sys.stderr)
    rows = []
    for name in configs_:
        base = times[name, values[0]]
        for k in values:
            ratios = [t / b for t, b in zip(times[name, k], base)]
            rows.append({"config": name, "steps_per_call": k,
                         "train_time_s": statistics.median(times[name, k]),
                         "ratio": statistics.median(ratios), "ratio_min": min(ratios),
                         "ratio_max": max(ratios), "test_loss": losses[name, k],
                         "test_loss_of_one_step_per_call": losses[name, values[0]],
                         "same_run": math.isclose(losses[name, k], losses[name, values[0]],
                                                  rel_tol=SAME_RUN_RTOL)})
    return {"rounds": rounds, "epochs": epochs, "rows": rows}


def markdown(result: dict, device: str) -> str:
    lines = [f"# Several train steps per compiled call ({device})", "",
             f"`python -m benchmarks.steps_per_call`: the harness's train time (checkpoints "
             f"off), median of {result['rounds']} interleaved rounds; ratio = time with K "
             "steps per call / time with 1, the median of per-round ratios [min-max].", "",
             "| config | steps_per_call | train time (s) | ratio | test loss (K / 1) | same run "
             f"(rel. {SAME_RUN_RTOL:g}) |",
             "|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['config']} | {row['steps_per_call']} | {row['train_time_s']:.2f} "
                     f"| {row['ratio']:.2f}x [{row['ratio_min']:.2f}-{row['ratio_max']:.2f}] "
                     f"| {row['test_loss']:.6f} / {row['test_loss_of_one_step_per_call']:.6f} "
                     f"| {'yes' if row['same_run'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.steps_per_call",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="digits_mlp,digits_cnn",
                        help="named harness configs, comma-separated")
    parser.add_argument("--values", default="1,4,12",
                        help="steps_per_call values, comma-separated; the first is the baseline")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=None, help="instead of each config's own")
    parser.add_argument("--out", default=None, help="write steps_per_call.{json,md} into DIR")
    args = parser.parse_args(argv)
    try:
        values = [int(v) for v in args.values.split(",")]
    except ValueError:
        parser.error(f"--values takes integers separated by commas, not {args.values!r}")
    if args.rounds < 1 or any(v < 1 for v in values):
        parser.error("--rounds and every --values entry must be >= 1")
    result = measure(args.configs.split(","), values, args.rounds, args.epochs)
    publish_study(result, markdown, args.out, "steps_per_call")
    return 0 if all(row["same_run"] for row in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
