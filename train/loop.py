"""The training loop: config -> data + model + optimizer -> state -> compiled steps -> summary.

Read top to bottom: input pipeline, model and optimizer, compiled steps, loop, summary.
The loop keeps the device busy: per-step metrics stay on the device and are fetched
once per epoch; the only per-step host work is producing the next batch.
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
from train.config import validate


# ----------------------------------------------------------------- input pipeline
def _target_transform(dataset: jnn.data.Dataset) -> Callable[[dict], dict]:
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
    """The padded, normalised (and for training, shuffled and augmented) batches of a split."""
    transform = _target_transform(dataset)
    arrays = getattr(dataset, split)
    if split == "train":
        augment = jnn.data.random_crop_and_flip if config["augment"] else None
        return jnn.data.epoch_batches(arrays, config["batch_size"], transform=transform,
                                      augment=augment, shuffle_seed=config["seed"], epoch=epoch)
    return jnn.data.epoch_batches(arrays, config["batch_size"], transform=transform)


# ----------------------------------------------------------- model and optimizer
def make_state(config: dict, dataset: jnn.data.Dataset) -> jnn.TrainState:
    """The initial train state of `config` for `dataset`."""
    model = jnn.models.get(config["model"], num_outputs=dataset.num_outputs,
                           **config["model_kwargs"])
    steps_per_epoch = jnn.data.num_batches(len(dataset.train["y"]), config["batch_size"])
    schedule = jnn.make_schedule(config["schedule"], config["learning_rate"],
                                 steps_per_epoch=steps_per_epoch, epochs=config["epochs"],
                                 **config["schedule_kwargs"])
    tx = jnn.make_optimizer(config["optimizer"], schedule, momentum=config["momentum"],
                            weight_decay=config["weight_decay"], clip_norm=config["clip_norm"])
    sample_x = np.zeros((1, *dataset.input_shape), np.float32)
    return jnn.create_train_state(model, tx, jax.random.PRNGKey(config["seed"]), sample_x)


# ------------------------------------------------------------------ compiled steps
def compile_steps(config: dict, state: jnn.TrainState, sample_batch: dict):
    """Jit-compiles the train and eval steps ahead of time for the batch shape.

    Returns (train_step, eval_step, timings): compiled executables, which can never
    recompile, and the seconds spent tracing + lowering and compiling each.
    """
    loss = config["loss"]
    train_fn = jax.jit(jnn.make_train_step(loss, label_smoothing=config["label_smoothing"],
                                           l1=config["l1"], l2=config["l2"]), donate_argnums=0)
    eval_fn = jax.jit(jnn.make_eval_step(loss))
    timings = {}
    compiled = []
    for name, fn in (("train", train_fn), ("eval", eval_fn)):
        start = time.perf_counter()
        lowered = fn.lower(state, sample_batch)
        lowered_at = time.perf_counter()
        compiled.append(lowered.compile())
        timings[f"{name}_lower_s"] = lowered_at - start
        timings[f"{name}_compile_s"] = time.perf_counter() - lowered_at
    return compiled[0], compiled[1], timings


def evaluate(eval_step, state: jnn.TrainState, batches) -> dict:
    """Metric sums over all batches of a split -> means (see jnn.metrics.summarize)."""
    return jnn.summarize(jnn.sum_metrics(eval_step(state, batch) for batch in batches))


# --------------------------------------------------------------------------- loop
def _report(summary: dict, dataset: jnn.data.Dataset, prefix: str) -> dict:
    out = {f"{prefix}_loss": float(summary["loss"])}
    if "accuracy" in summary:
        out[f"{prefix}_accuracy"] = float(summary["accuracy"])
    if dataset.spec.task == "regression":  # loss is MSE of standardised targets
        out[f"{prefix}_mse"] = float(summary["loss"]) * dataset.y_std ** 2
    return out


def _write_json(path: str, value) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written file


def train_and_evaluate(config: dict, workdir: str, *, progress: bool | None = None,
                       log: Callable[[str], None] = print) -> dict:
    """Trains `config`, evaluates on the test split and writes workdir/summary.json.

    Also appends one line per epoch to workdir/metrics.jsonl. Returns the summary.
    `progress`: show a progress bar (None: only on a terminal).
    """
    validate(config)
    os.makedirs(workdir, exist_ok=True)
    start = time.perf_counter()
    dataset = jnn.data.load(config["dataset"], data_dir=config["data_dir"],
                            validation_fraction=config["validation_fraction"])
    state = make_state(config, dataset)
    first_batch = make_batches(config, dataset, "train")[0]
    train_step, eval_step, timings = compile_steps(config, state, first_batch)
    compile_time = sum(timings.values())

    steps_per_epoch = jnn.data.num_batches(len(dataset.train["y"]), config["batch_size"])
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    open(metrics_path, "w").close()
    history, best = [], {"epoch": -1, "val_loss": float("inf")}
    bar = tqdm(total=config["epochs"] * steps_per_epoch, unit="step", disable=progress is False
               if progress is not None else None, leave=False)
    train_start = time.perf_counter()
    epochs_run, examples = 0, 0
    for epoch in range(config["epochs"]):
        step_metrics = []
        for batch in make_batches(config, dataset, "train", epoch):
            state, metrics = train_step(state, batch)
            step_metrics.append(metrics)
            bar.update()
        train_sums = jnn.sum_metrics(step_metrics)
        examples += int(train_sums["count"])
        record = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch,
                  **_report(jnn.summarize(train_sums), dataset, "train")}
        if len(dataset.validation["y"]):
            val = evaluate(eval_step, state, make_batches(config, dataset, "validation"))
            record.update(_report(val, dataset, "val"))
        record["time_s"] = time.perf_counter() - train_start
        history.append(record)
        epochs_run = epoch + 1
        with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        shown = {k: round(v, 4) for k, v in record.items() if k.startswith(("train_", "val_"))}
        bar.set_postfix(shown)
        log(f"epoch {epoch + 1:3d}/{config['epochs']}  " +
            "  ".join(f"{k} {v:.4f}" for k, v in shown.items()))
        if "val_loss" in record and record["val_loss"] < best["val_loss"]:
            best = {"epoch": epoch + 1, "val_loss": record["val_loss"]}
        patience = config["early_stopping_patience"]
        if patience and epoch + 1 - best["epoch"] >= patience:
            log(f"early stopping: no better val_loss for {patience} epochs "
                f"(best at epoch {best['epoch']})")
            break
    jax.block_until_ready(state)
    train_time = time.perf_counter() - train_start
    bar.close()

    # ------------------------------------------------------------------- summary
    test = evaluate(eval_step, state, make_batches(config, dataset, "test"))
    summary = {
        "config": config,
        **_report(test, dataset, "test"),
        "epochs": epochs_run,
        "steps": int(state.step),
        "train_time_s": train_time,
        "compile_time_s": compile_time,
        "compile_breakdown_s": timings,
        "examples_per_s": examples / train_time,
        "wall_time_s": time.perf_counter() - start,
        "parameters": jnn.parameter_count(state.params),
        "devices": jax.device_count(),
        "device_kind": jax.devices()[0].device_kind,
        "jax_version": jax.__version__,
        "jnn_version": jnn.__version__,
        "best_val": best if best["epoch"] > 0 else None,
        "history": history,
    }
    if dataset.spec.task == "regression":
        # the baseline the model must beat: predict the training mean for every test example
        summary["test_mse_of_train_mean"] = float(
            np.mean((dataset.test["y"].astype(np.float64) - dataset.y_mean) ** 2))
    _write_json(os.path.join(workdir, "summary.json"), summary)
    return summary
