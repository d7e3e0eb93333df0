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
    group = parser.add_argument_group("transforms (shorthands for --set FIELD=VALUE)")
    group.add_argument("--parallel", choices=("auto", "none", "pmap", "shard"),
                       help="auto (default): sharded jit over all devices when there are several")
    group.add_argument("--fsdp", action="store_true",
                       help="with shard: split parameters and optimizer state over the devices")
    group.add_argument("--ensemble", type=int, metavar="K", help="train K members in one vmapped step")
    group.add_argument("--batch-size", type=int, metavar="N", help="global batch size")
    group.add_argument("--per-device-batch-size", type=int, metavar="N",
                       help="global batch = N x the device count")
    group = parser.add_argument_group("multi-process (jax.distributed)")
    group.add_argument("--distributed", action="store_true",
                       help="call jax.distributed.initialize() (auto-detects SLURM, Cloud TPU, ...)")
    group.add_argument("--coordinator", metavar="HOST:PORT", help="explicit coordinator address")
    group.add_argument("--num-processes", type=int, metavar="N")
    group.add_argument("--process-id", type=int, metavar="I")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--traceback", action="store_true",
                        help="on an error, show the full traceback instead of one line")
    return parser.parse_args(argv)


def _transform_overrides(args) -> list[str]:
    overrides = []
    if args.parallel:
        overrides.append(f"parallel={args.parallel}")
    if args.fsdp:
        overrides.append("fsdp=true")
    for field in ("ensemble", "batch_size", "per_device_batch_size"):
        if getattr(args, field) is not None:
            overrides.append(f"{field}={getattr(args, field)}")
    return overrides


def _initialize_distributed(args) -> None:
    explicit = (args.coordinator, args.num_processes, args.process_id)
    if not args.distributed and all(v is None for v in explicit):
        return
    if any(v is None for v in explicit) and not all(v is None for v in explicit):
        raise ValueError("an explicit multi-process set-up needs all of --coordinator HOST:PORT, "
                         "--num-processes N and --process-id I (or --distributed alone to "
                         "auto-detect)")
    import jax

    # CPU devices need a collectives implementation across processes; GPUs/TPUs ignore it.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if args.coordinator is None:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(args.coordinator, num_processes=args.num_processes,
                                   process_id=args.process_id)


def _quiet_libraries() -> None:
    # tfds logs through absl (warnings about dataset folders, "downloading and preparing")
    # and draws its own progress bars; the harness reports what matters itself.
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()


def main(argv=None) -> int:
    args = _parse_args(argv)
    from train import config as configs

    if args.list:
        for name in configs.config_names():
            print(f"{name:16s} {configs.config_doc(name)}")
        return 0
    try:
        config = configs.get_config(args.config)
        for assignment in _transform_overrides(args) + args.overrides:
            configs.apply_override(config, assignment)
        configs.validate(config)
        if args.show:
            print(json.dumps(config, indent=2))
            return 0
        _initialize_distributed(args)
        _quiet_libraries()
        from train.loop import train_and_evaluate

        workdir = args.workdir or os.path.join("runs", args.config)
        summary = train_and_evaluate(config, workdir,
                                     progress=False if args.no_progress else None)
    except (ValueError, FileNotFoundError) as err:  # jnn.data.DatasetUnavailableError included
        if args.traceback:
            raise
        print("error: " + " ".join(str(err).split()), file=sys.stderr)  # always one line
        return 2
    import jax

    if jax.process_index() != 0:
        return 0
    metric = ("test_accuracy", "test accuracy") if "test_accuracy" in summary else \
        ("test_mse", "test MSE")
    baseline = summary.get("test_mse_of_train_mean")
    print(f"{metric[1]}: {summary[metric[0]]:.4f}"
          + (f" (predicting the training mean: {baseline:.4f})" if baseline is not None else "")
          + f"  test loss: {summary['test_loss']:.4f}")
    print(f"{summary['steps']} steps in {summary['train_time_s']:.1f} s "
          f"({summary['examples_per_s']:.0f} examples/s), compile {summary['compile_time_s']:.2f} s, "
          f"wall {summary['wall_time_s']:.1f} s; {summary['parallel']} over {summary['devices']} "
          f"device(s) in {summary['processes']} process(es); "
          f"summary: {os.path.join(workdir, 'summary.json')}")
    if "test_member_accuracies" in summary:
        members = ", ".join(f"{a:.4f}" for a in summary["test_member_accuracies"])
        print(f"ensemble of {len(summary['test_member_accuracies'])}: averaged prediction "
              f"{summary['test_accuracy']:.4f}; members {members}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
