"""jnn: pure Flax models and Optax optimizers in one train step for jit, vmap, pmap and sharded jit.

    import jnn
    model = jnn.models.get("cnn", num_outputs=10)
    tx = jnn.make_optimizer("adam", 1e-3)
    state = jnn.create_train_state(model, tx, jax.random.PRNGKey(0), sample_x)
    train_step = jax.jit(jnn.make_train_step("cross_entropy"))
    state, metrics = train_step(state, {"x": x, "y": y, "mask": mask})
"""

import importlib

from jnn import ensemble, losses, metrics, models, parallel, per_example
from jnn.metrics import sum_metrics, summarize
from jnn.optim import make_optimizer, make_schedule, optimizer_names, schedule_names
from jnn.state import ModelApply, TrainState, create_train_state, parameter_count
from jnn.step import make_eval_step, make_train_step, predict

__version__ = "0.1.0"


def __getattr__(name):
    # jnn.data pulls in tensorflow-datasets and grain (about 1 s of import time): load it
    # on first use, so that code bringing its own data does not pay for it.
    if name == "data":
        return importlib.import_module("jnn.data")
    raise AttributeError(f"module 'jnn' has no attribute {name!r}")

__all__ = [
    "ModelApply", "TrainState", "create_train_state", "data", "ensemble", "losses", "make_eval_step",
    "make_optimizer", "make_schedule", "make_train_step", "metrics", "models",
    "optimizer_names", "parallel", "parameter_count", "per_example", "predict", "schedule_names", "sum_metrics",
    "summarize",
]
