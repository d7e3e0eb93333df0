"""`python -m train`: train a named config. Kept short: the logic lives in train.loop.

    python -m train                                   # the seed CNN on the bundled digits
    python -m train --config mnist_cnn --set epochs=2 --workdir runs/mnist
    python -m train --list
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="digits_cnn", help="a named config (see --list)")
    parser.add_argument("--list", action="store_true", help="list the named configs and exit")
    parser.add_argument("--show", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--workdir", default=None, help="where summary.json and metrics.jsonl go "
                        "(default: runs/CONFIG)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="FIELD=VALUE", help="override a config field (repeatable; dotted "
                        "names for nested fields, e.g. model_kwargs.dropout_rate=0.2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--traceback", action="store_true",
                        help="on an error, show the full traceback instead of one line")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = _parse_args(argv)
    from train import config as configs

    if args.list:
        for name in configs.config_names():
            print(f"{name:16s} {configs.config_doc(name)}")
        return 0
    try:
        config = configs.get_config(args.config)
        for assignment in args.overrides:
            configs.apply_override(config, assignment)
        configs.validate(config)
        if args.show:
            print(json.dumps(config, indent=2))
            return 0
        from train.loop import train_and_evaluate

        workdir = args.workdir or os.path.join("runs", args.config)
        summary = train_and_evaluate(config, workdir,
                                     progress=False if args.no_progress else None)
    except (ValueError, FileNotFoundError) as err:  # jnn.data.DatasetUnavailableError included
        if args.traceback:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    metric = ("test_accuracy", "test accuracy") if "test_accuracy" in summary else \
        ("test_mse", "test MSE")
    baseline = summary.get("test_mse_of_train_mean")
    print(f"{metric[1]}: {summary[metric[0]]:.4f}"
          + (f" (predicting the training mean: {baseline:.4f})" if baseline is not None else "")
          + f"  test loss: {summary['test_loss']:.4f}")
    print(f"{summary['steps']} steps in {summary['train_time_s']:.1f} s "
          f"({summary['examples_per_s']:.0f} examples/s), compile {summary['compile_time_s']:.2f} s, "
          f"wall {summary['wall_time_s']:.1f} s; summary: {os.path.join(workdir, 'summary.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
