"""The training loop: config -> data -> runner (state + compiled steps) -> epochs -> summary.

Read top to bottom: input pipeline, reporting, loop, summary. The loop keeps the
device busy: per-step metrics stay on the device and are fetched once per epoch; the
only per-step host work is producing the next batch. With several processes, every
process runs this loop on the same global batch order and feeds its own rows; only
process 0 prints and writes files.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Callable

import jax
import numpy as np
from tqdm.auto import tqdm

import jnn
from train.checkpoint import save_state
from train.config import validate
from train.runner import build_runner, global_batch_size


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
    if dataset.spec.task == "regression":  # loss is MSE of standardised targets
        out[f"{prefix}_mse"] = out[f"{prefix}_loss"] * dataset.y_std ** 2
    return out


def _keep_previous_run(workdir: str) -> str | None:
    """Moves an earlier run's outputs into workdir/previous-N/ so that nothing saved is lost;
    returns that folder (None when there was nothing to keep)."""
    outputs = [n for n in ("summary.json", "metrics.jsonl", "checkpoint")
               if os.path.exists(os.path.join(workdir, n))]
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


# --------------------------------------------------------------------------- loop
def train_and_evaluate(config: dict, workdir: str, *, progress: bool | None = None,
                       log: Callable[[str], None] = print) -> dict:
    """Trains `config`, evaluates on the test split and writes workdir/summary.json.

    Also writes one line per epoch to workdir/metrics.jsonl. Returns the summary.
    `progress`: show a progress bar (None: only on a terminal).
    """
    validate(config)
    lead = jax.process_index() == 0
    if not lead:
        log, progress = (lambda _: None), False
    start = time.perf_counter()
    dataset = jnn.data.load(config["dataset"], data_dir=config["data_dir"],
                            validation_fraction=config["validation_fraction"])
    runner = build_runner(config, dataset, make_batches(config, dataset, "train")[0])
    evaluate = lambda split: runner.reduce(jnn.sum_metrics(  # noqa: E731
        runner.evaluate(b) for b in make_batches(config, dataset, split)))

    steps_per_epoch = jnn.data.num_batches(len(dataset.train["y"]), global_batch_size(config))
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    if lead:
        os.makedirs(workdir, exist_ok=True)
        kept = _keep_previous_run(workdir)
        if kept:
            log(f"the earlier run's outputs in {workdir} moved to {kept}")
        open(metrics_path, "w").close()
    history, best = [], {"epoch": 0, "val_loss": float("inf")}  # epoch 0: none yet
    bar = tqdm(total=config["epochs"] * steps_per_epoch, unit="step", leave=False,
               disable=None if progress is None else not progress)
    train_start = time.perf_counter()
    epochs_run, examples = 0, 0
    for epoch in range(config["epochs"]):
        step_metrics = []
        for batch in make_batches(config, dataset, "train", epoch):
            step_metrics.append(runner.train(batch))
            bar.update()
        train_sums = runner.reduce(jnn.sum_metrics(step_metrics))
        examples += int(np.max(jnn.metrics.count(train_sums)))
        record = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch,
                  **_report(train_sums, dataset, "train")}
        if len(dataset.validation["y"]):
            record.update(_report(evaluate("validation"), dataset, "val"))
        record["time_s"] = time.perf_counter() - train_start
        history.append(record)
        epochs_run = epoch + 1
        if lead:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        shown = {k: v for k, v in record.items()
                 if k.startswith(("train_", "val_")) and isinstance(v, float)}
        bar.set_postfix({k: round(v, 4) for k, v in shown.items()})
        log(f"epoch {epoch + 1:3d}/{config['epochs']}  " +
            "  ".join(f"{k} {v:.4f}" for k, v in shown.items()))
        if "val_loss" in record and record["val_loss"] < best["val_loss"]:
            best = {"epoch": epoch + 1, "val_loss": record["val_loss"]}
        patience = config["early_stopping_patience"]
        if patience and epoch + 1 - best["epoch"] >= patience:
            log(f"early stopping: no better val_loss for {patience} epochs "
                f"(best at epoch {best['epoch']})")
            break
    jax.block_until_ready(runner.state)
    train_time = time.perf_counter() - train_start
    bar.close()

    # ------------------------------------------------------------------- summary
    test = _report(evaluate("test"), dataset, "test")
    checkpoint = None
    if config["save_checkpoint"]:  # every process takes part; orbax writes one checkpoint
        checkpoint = save_state(os.path.join(workdir, "checkpoint"), runner.saved_state())
    step = np.asarray(jax.device_get(runner.state.step)).reshape(-1)[0]
    summary = {
        "config": config,
        **test,
        "epochs": epochs_run,
        "steps": int(step),
        "train_time_s": train_time,
        "compile_time_s": sum(runner.timings.values()),
        "compile_breakdown_s": runner.timings,
        "examples_per_s": examples / train_time,
        "wall_time_s": time.perf_counter() - start,
        "parallel": runner.mode,
        "global_batch_size": global_batch_size(config),
        "devices": runner.devices,
        "processes": jax.process_count(),
        "device_kind": jax.devices()[0].device_kind,
        "jax_version": jax.__version__,
        "jnn_version": jnn.__version__,
        "checkpoint": checkpoint,
        "best_val": best if best["epoch"] > 0 else None,
        "history": history,
    }
    if dataset.spec.task == "regression":
        # the baseline the model must beat: predict the training mean for every test example
        summary["test_mse_of_train_mean"] = float(
            np.mean((dataset.test["y"].astype(np.float64) - dataset.y_mean) ** 2))
    if lead:
        _write_json(os.path.join(workdir, "summary.json"), summary)
    return summary
