"""Exporting a finished run: `python -m train export WORKDIR` writes WORKDIR/export/.

The exported function takes raw inputs as the dataset stores them (e.g. digit pixels
0-16), normalises them as training did, runs the model in inference mode and returns
class probabilities (classification), probabilities per output (binary) or predictions
in the targets' own units (regression). The parameters are those the run's test metrics
came from: the best on validation when early stopping restored them, else the last.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

import jnn
from train import config as configs
from train.checkpoint import CHECKPOINTS, RunCheckpoints
from train.export import export_predictor
from train.runner import make_state

EXPORT = "export"


def _read_run(workdir: str) -> tuple[dict, dict]:
    """(config, summary) of a finished run in `workdir`."""
    paths = [os.path.join(workdir, name) for name in ("config.json", "summary.json")]
    if not all(os.path.exists(p) for p in paths):
        raise ValueError(f"{workdir} holds no finished run (config.json and summary.json); "
                         f"train first: python -m train --workdir {workdir}")
    values = []
    for path in paths:
        try:
            with open(path) as f:
                values.append(json.load(f))
        except ValueError:
            raise ValueError(f"{path} is damaged (not JSON); train again with --restart") from None
    return values[0], values[1]


def _trained_state(config, dataset, workdir: str, summary: dict):
    like = make_state(config, dataset)
    checkpoints = RunCheckpoints(workdir, max_to_keep=config["max_to_keep"])
    try:
        best = summary.get("restored_best")
        restored = (checkpoints.restore(best["step"], like) if best else
                    checkpoints.restore_latest(like, log=lambda _: None))
    finally:
        checkpoints.close()
    if restored is None:
        raise ValueError(f"{os.path.join(workdir, CHECKPOINTS)} holds no checkpoint (was the "
                         "run trained with save_checkpoint=false?); train again with --restart")
    return restored[0]


def predict_function(state, dataset: jnn.data.Dataset):
    """predict(variables, x) on raw inputs, and the variables it takes."""
    spec, model = dataset.spec, state.model
    scale = np.float32(spec.scale)
    mean, std = np.asarray(dataset.x_mean, np.float32), np.asarray(dataset.x_std, np.float32)

    def predict(variables, x):
        x = (x.astype(jnp.float32) * scale - mean) / std
        outputs, _ = model.apply(variables["params"], variables["model_state"], {"x": x},
                                 train=False)
        if spec.task == "classification":
            return jax.nn.softmax(outputs, axis=-1)
        if spec.task == "binary":
            return jax.nn.sigmoid(outputs)
        return outputs * dataset.y_std + dataset.y_mean  # regression: the targets' units

    return predict, {"params": state.params, "model_state": state.model_state}


def export_run(workdir: str, export_dir: str | None = None) -> str:
    """Exports the trained model of the run in `workdir`; returns the export folder."""
    saved, summary = _read_run(workdir)
    config = configs.from_dict(saved)
    if config["ensemble"] > 1:
        raise ValueError("exporting an ensemble is not supported yet; train a single model "
                         "(--ensemble 1) to export it")
    dataset = jnn.data.load(config["dataset"], data_dir=config["data_dir"],
                            validation_fraction=config["validation_fraction"])
    state = _trained_state(config, dataset, workdir, summary)
    predict, variables = predict_function(state, dataset)
    x = dataset.test["x"]
    metadata = {"task": dataset.spec.task, "dataset": config["dataset"],
                "model": config["model"], "config": saved,
                "test_metrics": {k: v for k, v in summary.items()
                                 if k.startswith("test_") and isinstance(v, float)},
                "steps": summary.get("steps")}
    return export_predictor(predict, variables, x.shape[1:], x.dtype,
                            export_dir or os.path.join(workdir, EXPORT), metadata=metadata)
