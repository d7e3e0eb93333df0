"""The training loop: config -> data -> state and compiled steps -> steps -> evaluation
-> summary.

Read top to bottom: input pipeline, reporting, the workdir, the loop, the summary. The
position of a run is its step; the epoch and the batch within it are derived from it,
so a run resumed from a checkpoint at any step goes on with the same batches and ends
as an uninterrupted run would. One call of the compiled train step runs
`steps_per_call` steps (jnn.multistep), with the same results. Per-step metrics stay
on the device and are fetched when the epoch ends or a checkpoint is saved; the only
per-step host work is producing the next batch. With several processes, every process
runs this loop on the same global batch order and feeds its own rows; only process 0
prints and writes files (orbax coordinates the checkpoint writes of all processes).
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
from typing import Callable

import jax
import numpy as np
from tqdm.auto import tqdm

import jnn
from train import config as configs
from train.checkpoint import CHECKPOINTS, RunCheckpoints
from train.compile_watch import CompileWatch
from train.runner import build_runner, global_batch_size, make_schedule
from train.signals import StopRequests


class RunInterrupted(Exception):
    """The run stopped on SIGINT or SIGTERM after saving; the message says how to resume."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class NonFiniteLoss(ValueError):
    """A step's loss was not finite; the message names the step and the fix."""


# ----------------------------------------------------------------- input pipeline
def _transform(dataset: jnn.data.Dataset) -> Callable[[dict], dict]:
    spec = dataset.spec
    x_transform = functools.partial(jnn.data.normalize, scale=spec.scale, mean=dataset.x_mean,
                                    std=dataset.x_std)
    if spec.task != "regression":
        return x_transform

    def transform(batch):  # regression: standardise targets too
        batch = x_transform(batch)
        y = (batch["y"].astype(np.float32) - dataset.y_mean) / dataset.y_std
        return {**batch, "y": y.astype(np.float32)}

    return transform


def make_batches(config: dict, dataset: jnn.data.Dataset, split: str, epoch: int = 0):
    """The padded, normalised (and for training, shuffled and augmented) global batches."""
    arrays, batch_size = getattr(dataset, split), global_batch_size(config)
    if split == "train":
        augment = jnn.data.random_crop_and_flip if config["augment"] else None
        return jnn.data.epoch_batches(arrays, batch_size, transform=_transform(dataset),
                                      augment=augment, shuffle_seed=config["seed"], epoch=epoch)
    return jnn.data.epoch_batches(arrays, batch_size, transform=_transform(dataset))


# ---------------------------------------------------------------------- reporting
def _report(sums: dict, dataset: jnn.data.Dataset, prefix: str) -> dict:
    """Means of metric sums; with an ensemble, member means plus the averaged prediction's."""
    means = jnn.summarize(sums)
    out = {f"{prefix}_loss": float(np.mean(means["loss"]))}
    if "accuracy" in means:
        out[f"{prefix}_accuracy"] = float(np.mean(means["accuracy"]))
    if "ensemble_loss" in means:
        out[f"{prefix}_member_losses"] = [float(v) for v in np.atleast_1d(means["loss"])]
        if "accuracy" in means:
            out[f"{prefix}_member_accuracies"] = [float(v) for v in means["accuracy"]]
            out[f"{prefix}_accuracy"] = float(means["ensemble_accuracy"])
        out[f"{prefix}_loss"] = float(means["ensemble_loss"])
    if "skipped" in means:
        out[f"{prefix}_skipped_steps"] = int(round(float(np.max(sums["skipped"][0]))))
    if dataset.spec.task == "regression":  # loss is MSE of standardised targets
        out[f"{prefix}_mse"] = out[f"{prefix}_loss"] * dataset.y_std ** 2
    return out


def _confusion_matrix(sums: dict) -> list | None:
    """The (averaged prediction's, for an ensemble) test confusion counts as lists of ints."""
    counts = sums.get("ensemble_confusion_matrix", sums.get("confusion_matrix"))
    if counts is None or np.ndim(counts[0]) != 2:
        return None
    return np.rint(counts[0]).astype(int).tolist()


def _sums_to_json(sums: dict | None):
    return None if sums is None else {k: [np.asarray(v).tolist() for v in pair]
                                      for k, pair in sums.items()}


def _sums_from_json(value):
    return None if value is None else {k: tuple(np.asarray(v, np.float64) for v in pair)
                                       for k, pair in value.items()}


def _add_sums(a: dict | None, b: dict) -> dict:
    if a is None or not b:
        return b or a
    return jax.tree.map(np.add, a, b)


# ------------------------------------------------------------------------ workdir
OUTPUTS = ("summary.json", "metrics.jsonl", "config.json", CHECKPOINTS, "tensorboard", "plots",
           "export")


def _keep_previous_run(workdir: str) -> str | None:
    """Moves an earlier run's outputs into workdir/previous-N/ so that nothing saved is lost;
    returns that folder (None when there was nothing to keep)."""
    outputs = [n for n in OUTPUTS if os.path.exists(os.path.join(workdir, n))]
    if not outputs:
        return None
    n = 1
    while os.path.exists(os.path.join(workdir, f"previous-{n}")):
        n += 1
    keep = os.path.join(workdir, f"previous-{n}")
    os.makedirs(keep)
    for name in outputs:
        os.replace(os.path.join(workdir, name), os.path.join(keep, name))
    return keep


def _write_json(path: str, value) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written file


def _config_differences(saved: dict, config: dict) -> list[str]:
    fields = sorted(set(saved) | set(config))
    # where the data lives, and how many steps one call runs, do not change the run
    ignored = ("data_dir", "steps_per_call")
    return [f"{f} {saved.get(f)!r} -> {config.get(f)!r}" for f in fields
            if f not in ignored and saved.get(f) != config.get(f)]


def _another_config(workdir: str, differences: list[str]) -> ValueError:
    return ValueError(f"{workdir} holds a run of another config ({'; '.join(differences)}); run "
                      "with --restart to start over there (its outputs are kept in previous-N/) "
                      "or choose another --workdir")


def _has_checkpoints(workdir: str) -> bool:
    folder = os.path.join(workdir, CHECKPOINTS)
    return os.path.isdir(folder) and any(n.isdigit() for n in os.listdir(folder))


def prepare_workdir(workdir: str, config: dict, *, restart: bool, lead: bool,
                    log: Callable[[str], None]) -> bool:
    """Makes `workdir` ready for `config`; returns whether a run there can be resumed.

    A workdir with checkpoints of the same config resumes; of a different config it is
    refused (ValueError naming --restart) unless `restart`, which moves the old outputs
    into workdir/previous-N/. Outputs without checkpoints are moved aside likewise.
    """
    saved_path = os.path.join(workdir, "config.json")
    resumable = _has_checkpoints(workdir) and not restart
    if resumable and os.path.exists(saved_path):
        with open(saved_path) as f:
            differences = _config_differences(json.load(f), config)
        if differences:
            raise _another_config(workdir, differences)
    failure = None
    if lead:
        try:
            os.makedirs(workdir, exist_ok=True)
            if not resumable:
                kept = _keep_previous_run(workdir)
                if kept:
                    log(f"the earlier run's outputs in {workdir} moved to {kept}")
            _write_json(saved_path, config)
        except OSError as err:
            failure = err.strerror or str(err)
    failed = bool(failure)
    if jax.process_count() > 1:  # every process learns whether process 0 could write
        from jax.experimental import multihost_utils

        failed = bool(np.max(multihost_utils.process_allgather(np.int32(failed))))
    if failed:
        raise ValueError(f"cannot write to the workdir {workdir} ({failure or 'on process 0'}); "
                         "choose another with --workdir")
    return resumable


def _rewrite_metrics(path: str, up_to_step: int) -> None:
    """Keeps the records of steps <= up_to_step (a resumed run rewrites what followed)."""
    kept = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    if json.loads(line)["step"] <= up_to_step:
                        kept.append(line if line.endswith("\n") else line + "\n")
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a crash
    with open(f"{path}.tmp", "w") as f:
        f.writelines(kept)
    os.replace(f"{path}.tmp", path)


def _summary_writer(logdir: str, purge_step: int | None):
    """A tensorboardX SummaryWriter, with tensorboardX imported without PyTorch.
    tensorboardX imports torch when it is installed, only to accept torch tensors (the
    harness writes floats): 1-2.4 s of a run's start-up on 2 cores. An import of torch
    during tensorboardX's own import fails, as if torch were absent, unless something
    imported torch already."""
    blocked = "torch" not in sys.modules
    if blocked:
        sys.modules["torch"] = None  # `import torch` raises ImportError while this is None
    try:
        from tensorboardX import SummaryWriter
    finally:
        if blocked:
            del sys.modules["torch"]
    return SummaryWriter(logdir, purge_step=purge_step)


class _Logs:
    """metrics.jsonl and TensorBoard event files (process 0 only)."""

    def __init__(self, workdir: str, first_step: int, enabled: bool):
        self.enabled = enabled
        self.metrics_path = os.path.join(workdir, "metrics.jsonl")
        self.board = None
        if enabled:
            _rewrite_metrics(self.metrics_path, first_step)
            # purge_step: TensorBoard drops events an interrupted run wrote after first_step
            self.board = _summary_writer(os.path.join(workdir, "tensorboard"),
                                         purge_step=first_step + 1 if first_step else None)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                self.board.add_scalar(key, value, record["step"])
        self.board.flush()

    def close(self) -> None:
        if self.board is not None:
            self.board.close()


# --------------------------------------------------------------------------- loop
def _fresh_progress(config: dict) -> dict:
    """What a checkpoint holds besides the state: everything the loop needs to go on."""
    return {"step": 0, "epoch_sums": None, "history": [], "best": None, "train_time_s": 0.0,
            "examples": 0, "finished": False, "stopped_early": False, "config": config}


_NONFINITE_FIX = ("lower the learning rate, add clip_norm, or --set skip_nonfinite=true to "
                  "skip such steps")


def _last_good(checkpoints, before_step: int) -> str:
    """'the last good checkpoint is at step S; ' for the newest checkpoint before a step."""
    if checkpoints is None:
        return ""
    checkpoints.wait()
    good = [s for s in checkpoints.steps() if s < before_step]
    return f"the last good checkpoint is at step {good[-1]}; " if good else ""


def step_groups(batches, first_step: int, steps_per_call: int, checkpoint_every: int):
    """The batches of an epoch (from step `first_step` on) in groups of up to
    `steps_per_call` consecutive steps, one group per call of the train step. A group
    ends where a checkpoint is due (a multiple of `checkpoint_every`, 0: never), so
    checkpoints fall on the same steps whatever steps_per_call is."""
    group, step = [], first_step
    for batch in batches:
        group.append(batch)
        step += 1
        if len(group) == steps_per_call or (checkpoint_every and step % checkpoint_every == 0):
            yield group
            group = []
    if group:
        yield group


# One program for the check before each save (op by op, it compiled two per parameter
# shape: 14 programs and 0.45 s at the seed CNN's first save on 2 cores)
_all_finite = jax.jit(jnn.precision.all_finite)


def _first_nonfinite(step_metrics: list, first_step: int) -> int | None:
    """The step whose loss is not finite first, among host metrics of consecutive steps."""
    for i, metrics in enumerate(step_metrics):
        if not np.all(np.isfinite(np.asarray(metrics["loss"][0]))):
            return first_step + i
    return None


def train_and_evaluate(config: dict, workdir: str, *, progress: bool | None = None,
                       log: Callable[[str], None] = print, restart: bool = False) -> dict:
    """Trains `config` in `workdir` (resuming the run there when it has checkpoints of the
    same config), evaluates on the test split and writes workdir/summary.json.

    Also writes metrics.jsonl (one line per epoch), TensorBoard events, the config,
    checkpoints (every config["checkpoint_every_steps"] steps and at the end of each
    epoch, the best on validation kept too) and plots. Returns the summary.

    `progress`: show a progress bar (None: only on a terminal). `restart`: start over
    in a used workdir, moving its outputs aside.

    Raises:
      RunInterrupted: SIGINT or SIGTERM arrived; a checkpoint was saved first.
      NonFiniteLoss: a loss was not finite (and config["skip_nonfinite"] is off); the
        checkpoints hold only steps before it.
      ValueError: a bad config, dataset or workdir (one line naming the fix).
    """
    opened = []  # the run's checkpoint manager, closed whatever happens
    try:
        with CompileWatch(log if jax.process_index() == 0 else (lambda _: None)) as watch:
            return _train_and_evaluate(config, workdir, progress, log, restart, opened, watch)
    finally:
        for checkpoints in opened:
            checkpoints.close()


def _train_and_evaluate(config, workdir, progress, log, restart, opened: list,
                        watch: CompileWatch) -> dict:
    configs.validate(config)
    lead = jax.process_index() == 0
    if not lead:
        log, progress = (lambda _: None), False
    start = time.perf_counter()
    dataset = jnn.data.load(config["dataset"], data_dir=config["data_dir"],
                            validation_fraction=config["validation_fraction"])
    configs.check_dataset(config, dataset)
    runner = build_runner(config, dataset, make_batches(config, dataset, "train")[0])
    schedule = make_schedule(config, dataset)
    evaluate = lambda split: runner.reduce(jnn.sum_metrics(  # noqa: E731
        runner.evaluate(b) for b in make_batches(config, dataset, split)))

    steps_per_epoch = jnn.data.num_batches(len(dataset.train["y"]), global_batch_size(config))
    total_steps = config["epochs"] * steps_per_epoch
    saved_config = json.loads(json.dumps(configs.to_dict(config)))  # tuples as lists, as read back
    resumable = prepare_workdir(workdir, saved_config, restart=restart, lead=lead, log=log)

    checkpoints = None
    if config["save_checkpoint"]:
        checkpoints = RunCheckpoints(workdir, max_to_keep=config["max_to_keep"])
        opened.append(checkpoints)
    run = _fresh_progress(saved_config)
    resumed_from = None
    if checkpoints is not None and resumable:
        restored = checkpoints.restore_latest(runner.saved_state(), log)
        if restored is not None:
            state, run = restored
            differences = _config_differences(run["config"], saved_config)
            if differences:
                raise _another_config(workdir, differences)
            runner.load_state(state)
            resumed_from = run["step"]
            log(f"resumed from step {resumed_from}")
    logs = _Logs(workdir, run["step"], enabled=lead)
    epoch_sums = _sums_from_json(run["epoch_sums"])
    best_in_memory = None  # the best state when no checkpoints are written

    clock = {"since": time.perf_counter()}

    def add_train_time() -> None:
        now = time.perf_counter()
        run["train_time_s"] += now - clock["since"]
        clock["since"] = now

    def save(best: bool = False) -> None:
        """Checkpoints the state after run["step"] steps (after a flush)."""
        add_train_time()
        if checkpoints is None:
            return
        state = runner.saved_state()
        if not config["skip_nonfinite"] and not bool(_all_finite(state.params)):
            raise NonFiniteLoss(
                f"the parameters are not finite after step {run['step'] - 1} although every "
                "loss so far was (a gradient overflowed); "
                + _last_good(checkpoints, run["step"]) + _NONFINITE_FIX)
        checkpoints.save(run["step"], state, {**run, "epoch_sums": _sums_to_json(epoch_sums)},
                         best=best)

    pending = []  # (device metrics, steps) of each train call since the last flush

    def flush() -> None:
        """Adds the pending step metrics to the epoch's sums; stops on a non-finite loss."""
        nonlocal epoch_sums
        if not pending:
            return
        fetched = jax.device_get([metrics for metrics, _ in pending])  # one transfer
        host = [m for got, (_, steps) in zip(fetched, pending)
                for m in runner.per_step(got, steps)]
        first = run["step"] - len(host)
        if not config["skip_nonfinite"]:
            bad = _first_nonfinite(host, first)
            if bad is not None:
                epoch, batch = divmod(bad, steps_per_epoch)
                raise NonFiniteLoss(
                    f"the loss of step {bad} (epoch {epoch + 1}, batch {batch}) is not finite; "
                    + _last_good(checkpoints, bad + 1) + _NONFINITE_FIX)
        epoch_sums = _add_sums(epoch_sums, jnn.sum_metrics(host))
        pending.clear()

    bar = tqdm(total=total_steps, initial=run["step"], unit="step", leave=False,
               disable=None if progress is None else not progress)
    every = config["checkpoint_every_steps"]
    time_to_first_step = None
    try:
        with StopRequests() as stop:
            while run["step"] < total_steps and not (run["finished"] or run["stopped_early"]):
                epoch, index = divmod(run["step"], steps_per_epoch)
                batches = make_batches(config, dataset, "train", epoch)[index:]
                for group in step_groups(batches, run["step"], runner.steps_per_call, every):
                    pending.append((runner.train(group), len(group)))
                    run["step"] += len(group)
                    bar.update(len(group))
                    if time_to_first_step is None:
                        jax.block_until_ready(pending[-1][0])
                        time_to_first_step = time.perf_counter() - start
                    at_epoch_end = run["step"] % steps_per_epoch == 0
                    stopping = stop.requested(run["step"], len(group))  # every call
                    due = every and run["step"] % every == 0
                    if (due or stopping) and not at_epoch_end:
                        flush()
                        save()
                        if stopping:
                            raise RunInterrupted(
                                stop.message(run["step"], checkpoints is not None), stop.signum)

                # ----------------------------------------------------------- epoch end
                flush()
                train_sums = runner.reduce(epoch_sums)
                epoch_sums = None
                run["examples"] += int(np.max(jnn.metrics.count(train_sums)))
                record = {"epoch": epoch + 1, "step": run["step"],
                          **_report(train_sums, dataset, "train"),
                          "learning_rate": float(schedule(run["step"] - 1))}
                if len(dataset.validation["y"]):
                    record.update(_report(evaluate("validation"), dataset, "val"))
                add_train_time()
                record["time_s"] = run["train_time_s"]
                run["history"].append(record)
                logs.write(record)
                shown = {k: v for k, v in record.items()
                         if k.startswith(("train_", "val_")) and isinstance(v, float)}
                bar.set_postfix({k: round(v, 4) for k, v in shown.items()})
                log(f"epoch {epoch + 1:3d}/{config['epochs']}  " +
                    "  ".join(f"{k} {v:.4f}" for k, v in shown.items()))

                improved = math.isfinite(record.get("val_loss", math.nan)) and (
                    run["best"] is None or record["val_loss"] < run["best"]["val_loss"]
                    - config["early_stopping_min_delta"])
                if improved:
                    run["best"] = {"epoch": epoch + 1, "step": run["step"],
                                   "val_loss": record["val_loss"]}
                    if checkpoints is None and config["early_stopping_patience"]:
                        best_in_memory = jax.device_get(runner.saved_state())
                patience = config["early_stopping_patience"]
                best_epoch = run["best"]["epoch"] if run["best"] else 0  # 0: none yet
                if patience and epoch + 1 - best_epoch >= patience:
                    log(f"early stopping: no better val_loss (by more than "
                        f"{config['early_stopping_min_delta']}) for {patience} epochs (best at "
                        f"epoch {best_epoch})")
                    run["stopped_early"] = True
                run["finished"] = run["step"] >= total_steps or run["stopped_early"]
                save(best=improved)
                watch.arm()  # every program the run needs has been compiled by now
                if stop.requested(run["step"]) and not run["finished"]:
                    raise RunInterrupted(stop.message(run["step"], checkpoints is not None),
                                         stop.signum)

    finally:
        bar.close()
        logs.close()
        if checkpoints is not None:
            checkpoints.wait()

    # ------------------------------------------------ best parameters, test, summary
    restored_best = None
    if config["early_stopping_patience"] and run["best"] and run["best"]["step"] != run["step"]:
        like = runner.saved_state()
        if checkpoints is not None:
            checkpoints.wait()
            best_state = checkpoints.restore(run["best"]["step"], like)[0]
        else:
            best_state = jax.device_put(best_in_memory, jax.tree.map(lambda x: x.sharding, like))
        runner.load_state(best_state)
        restored_best = run["best"]
        log(f"restored the best parameters: epoch {run['best']['epoch']}, step "
            f"{run['best']['step']}, val_loss {run['best']['val_loss']:.4f}")
    test_sums = evaluate("test")
    test = _report(test_sums, dataset, "test")
    checkpoint = None
    if checkpoints is not None:
        checkpoints.wait()
        tested_step = restored_best["step"] if restored_best else checkpoints.latest_step()
        checkpoint = os.path.join(checkpoints.directory, str(tested_step), "state")
    summary = {
        "config": saved_config,
        **test,
        "epochs": len(run["history"]),
        "steps": run["step"],
        "resumed_from_step": resumed_from,
        "train_time_s": run["train_time_s"],
        "time_to_first_step_s": time_to_first_step,
        "compile_time_s": sum(runner.timings.values()),
        "compile_breakdown_s": runner.timings,
        "compiles": watch.compiles,  # programs compiled (or loaded from the cache) in the run
        "compiles_after_first_epoch": watch.after_warmup,  # "function: cause" each
        "examples_per_s": run["examples"] / max(run["train_time_s"], 1e-9),
        "wall_time_s": time.perf_counter() - start,
        "parallel": runner.mode,
        "global_batch_size": global_batch_size(config),
        "devices": runner.devices,
        "processes": jax.process_count(),
        "device_kind": jax.devices()[0].device_kind,
        "jax_version": jax.__version__,
        "jnn_version": jnn.__version__,
        "checkpoint": checkpoint,
        "best_val": run["best"],
        "restored_best": restored_best,
        "history": run["history"],
    }
    confusion = _confusion_matrix(test_sums)
    if confusion is not None:
        summary["test_confusion_matrix"] = confusion
    if dataset.spec.task == "regression":
        # the baseline the model must beat: predict the training mean for every test example
        summary["test_mse_of_train_mean"] = float(
            np.mean((dataset.test["y"].astype(np.float64) - dataset.y_mean) ** 2))
    if lead:
        _write_json(os.path.join(workdir, "summary.json"), summary)
        _plot(workdir, log)
    return summary


def _plot(workdir: str, log: Callable[[str], None]) -> None:
    """The run's PNG plots; a plotting failure is reported, never fatal to a finished run."""
    try:
        from train import plots

        plots.plot_run(workdir)
    except (ImportError, ValueError, OSError) as err:
        log(f"no plots: {' '.join(str(err).split())}")
