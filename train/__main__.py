"""`python -m train`: train a named config or your own config file. Kept short: the logic
lives in train.loop and train.config.

    python -m train                                   # the seed CNN on the bundled digits
    python -m train --config mnist_cnn --set epochs=2 --workdir runs/mnist
    python -m train --config path/to/my_config.py     # a file defining get_config()
    python -m train --list
    python -m train plot WORKDIR                      # the PNG plots of a run, again
    python -m train export WORKDIR                    # WORKDIR/export: StableHLO + weights
    python -m train predict EXPORT_DIR INPUT.npy [--out PRED.npy]

Running the same command again resumes the run in its workdir from its last checkpoint;
Ctrl-C or SIGTERM saves first and says how to resume. The first word may name a command (`COMMANDS`); without one the command is `train`.
Bad input ends with one line, "error: ...", on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


class UsageError(ValueError):
    """A command line that argparse refuses (reported in one line like any bad input)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints the usage too; one line is enough
        raise UsageError(f"{message} ({self.prog} --help lists the flags)")


# ------------------------------------------------------------------------- train
def _train_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="digits_cnn",
                        help="a named config (see --list) or the path of a .py file whose "
                        "get_config() returns a ConfigDict")
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
    group.add_argument("--ensemble", type=int, metavar="K",
                       help="train K members in one vmapped step")
    group.add_argument("--batch-size", type=int, metavar="N", help="global batch size")
    group.add_argument("--per-device-batch-size", type=int, metavar="N",
                       help="global batch = N x the device count")
    group = parser.add_argument_group("multi-process (jax.distributed)")
    group.add_argument("--distributed", action="store_true", help="call "
                       "jax.distributed.initialize() (auto-detects SLURM, Cloud TPU, ...)")
    group.add_argument("--coordinator", metavar="HOST:PORT", help="explicit coordinator address")
    group.add_argument("--num-processes", type=int, metavar="N")
    group.add_argument("--process-id", type=int, metavar="I")
    parser.add_argument("--restart", action="store_true", help="start over in a used workdir "
                        "(its outputs are moved to WORKDIR/previous-N) instead of resuming")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--traceback", action="store_true",
                        help="on an error, show the full traceback instead of one line")
    return parser


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


def _use_compilation_cache() -> None:
    """jax's persistent compilation cache, on by default: a second run of a config loads
    its compiled programs instead of compiling them. $JAX_COMPILATION_CACHE_DIR picks the
    folder (default ~/.cache/jnn/jax-compilation-cache); JNN_COMPILATION_CACHE=0 turns it off."""
    if os.environ.get("JNN_COMPILATION_CACHE", "1") == "0":
        return
    import jax

    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.path.join(
            os.path.expanduser("~"), ".cache", "jnn", "jax-compilation-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _default_workdir(config_arg: str) -> str:
    """runs/NAME for a named config, runs/STEM for a config file."""
    return os.path.join("runs", os.path.splitext(os.path.basename(config_arg))[0])


def _print_summary(summary: dict, workdir: str) -> None:
    metric = ("test_accuracy", "test accuracy") if "test_accuracy" in summary else \
        ("test_mse", "test MSE")
    baseline = summary.get("test_mse_of_train_mean")
    print(f"{metric[1]}: {summary[metric[0]]:.4f}"
          + (f" (predicting the training mean: {baseline:.4f})" if baseline is not None else "")
          + f"  test loss: {summary['test_loss']:.4f}")
    print(f"{summary['steps']} steps in {summary['train_time_s']:.1f} s "
          f"({summary['examples_per_s']:.0f} examples/s), "
          f"compile {summary['compile_time_s']:.2f} s, wall {summary['wall_time_s']:.1f} s; "
          f"{summary['parallel']} over {summary['devices']} device(s) in "
          f"{summary['processes']} process(es); summary: {os.path.join(workdir, 'summary.json')}")
    if "test_member_accuracies" in summary:
        members = ", ".join(f"{a:.4f}" for a in summary["test_member_accuracies"])
        print(f"ensemble of {len(summary['test_member_accuracies'])}: averaged prediction "
              f"{summary['test_accuracy']:.4f}; members {members}")


def train_command(args) -> int:
    """Resolves, checks and trains the config the flags name (or lists / shows configs)."""
    from train import config as configs

    if args.list:
        for name in configs.config_names():
            print(f"{name:16s} {configs.config_doc(name)}")
        return 0
    config = configs.load_config(args.config)
    configs.apply_overrides(config, _transform_overrides(args) + args.overrides)
    configs.validate(config)
    if args.show:
        print(json.dumps(configs.to_dict(config), indent=2))
        return 0
    from train.unrolling import cap_full_unrolling

    cap_full_unrolling()  # before jax's backends start (JNN_CAP_FULL_UNROLLING=0: off)
    _initialize_distributed(args)
    _use_compilation_cache()
    from train.allocator import keep_freed_memory

    keep_freed_memory()  # XLA's per-step buffers reuse freed pages (JNN_KEEP_FREED_MEMORY=0: off)
    _quiet_libraries()
    from train.loop import train_and_evaluate

    workdir = args.workdir or _default_workdir(args.config)
    summary = train_and_evaluate(config, workdir, progress=False if args.no_progress else None,
                                 restart=args.restart)
    import jax

    if jax.process_index() == 0:
        _print_summary(summary, workdir)
    return 0


# ------------------------------------------------------------ plot, export, predict
def _workdir_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = _Parser(prog=f"python -m train {prog}", description=description)
    parser.add_argument("workdir", help="the --workdir of a run")
    parser.add_argument("--traceback", action="store_true")
    return parser


def plot_command(args) -> int:
    from train import plots

    for path in plots.plot_run(args.workdir):
        print(path)
    return 0


def export_command(args) -> int:
    _quiet_libraries()
    from train import deploy

    export_dir = deploy.export_run(args.workdir, args.out)
    print(f"exported to {export_dir}; run it with: python -m train predict {export_dir} "
          "INPUT.npy")
    return 0


def _export_parser() -> argparse.ArgumentParser:
    parser = _workdir_parser("export", "export a finished run's model (jax.export, StableHLO)")
    parser.add_argument("--out", default=None, help="the export folder (default WORKDIR/export)")
    return parser


def _predict_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m train predict",
                     description="run an exported model on a .npy array of inputs")
    parser.add_argument("export_dir")
    parser.add_argument("input", help="a .npy array: a batch (N, ...) or one example")
    parser.add_argument("--out", default=None, help="where to write the predictions (.npy; "
                        "default INPUT.pred.npy)")
    parser.add_argument("--traceback", action="store_true")
    return parser


def predict_command(args) -> int:
    from train import export

    print(export.predict_file(args.export_dir, args.input, args.out))
    return 0


# ---------------------------------------------------------------------- dispatch
# name -> (the parser of its flags, the function of the parsed flags -> exit code)
COMMANDS = {
    "train": (_train_parser, train_command),
    "plot": (lambda: _workdir_parser("plot", "draw a run's PNG plots into WORKDIR/plots"),
             plot_command),
    "export": (_export_parser, export_command),
    "predict": (_predict_parser, predict_command),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = argv.pop(0) if argv and argv[0] in COMMANDS else "train"
    make_parser, command = COMMANDS[name]
    show_traceback = "--traceback" in argv
    from train.loop import RunInterrupted

    try:
        return command(make_parser().parse_args(argv))
    except RunInterrupted as stopped:
        print(str(stopped), file=sys.stderr)
        return 128 + stopped.signum
    except KeyboardInterrupt:  # before the loop took over the signal, or a second Ctrl-C
        print("interrupted; checkpoints already saved are intact, and running the same "
              "command again resumes from the last one", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as err:  # jnn.data.DatasetUnavailableError included
        if show_traceback and not isinstance(err, UsageError):
            raise
        print("error: " + " ".join(str(err).split()), file=sys.stderr)  # always one line
        return 2


if __name__ == "__main__":
    sys.exit(main())
