"""jnn: pure Flax models and Optax optimizers in one train step for jit, vmap, pmap and sharded jit.

    import jnn
    model = jnn.models.get("cnn", num_outputs=10)       # or a Linen / NNX module of yours
    tx = jnn.make_optimizer("adam", 1e-3)                # or any optax transformation
    state = jnn.create_train_state(model, tx, jax.random.PRNGKey(0), sample_x)
    train_step = jax.jit(jnn.make_train_step("cross_entropy"), donate_argnums=0,
                         compiler_options=jnn.train_compiler_options())
    state, metrics = train_step(state, {"x": x, "y": y, "mask": mask})
    jnn.summarize(jnn.sum_metrics([metrics]))            # {"loss": ..., "accuracy": ...}

The public API is the list below: the state, the steps, the XLA options to compile a
step with, objectives, metrics, the model adapter, optimizers, and the modules
parallel, multistep (several steps per compiled call), ensemble, per_example, dp_sgd,
precision, models and data.
"""

import importlib

from jnn import (dp_sgd, ensemble, losses, metrics, models, multistep, objectives, parallel,
                 per_example, precision)
from jnn.compiler_options import (eval_compiler_options, init_compiler_options,
                                  train_compiler_options)
from jnn.metrics import sum_metrics, summarize
from jnn.model import LinenModel, NNXModel, as_model, from_linen, from_nnx
from jnn.optim import make_optimizer, make_schedule, optimizer_names, schedule_names
from jnn.state import TrainState, create_train_state, parameter_count
from jnn.step import make_eval_step, make_train_step, predict

__version__ = "0.2.0"


def __getattr__(name):
    # jnn.data pulls in tensorflow-datasets and grain (about 1 s of import time): load it
    # on first use, so that code bringing its own data does not pay for it.
    if name == "data":
        return importlib.import_module("jnn.data")
    raise AttributeError(f"module 'jnn' has no attribute {name!r}")


__all__ = [
    # state and steps
    "TrainState", "create_train_state", "make_train_step", "make_eval_step", "predict",
    "parameter_count", "train_compiler_options", "eval_compiler_options",
    "init_compiler_options",
    # models: the adapter over Linen and NNX, and jnn's own models
    "as_model", "from_linen", "from_nnx", "LinenModel", "NNXModel", "models",
    # objectives, metrics, optimizers
    "objectives", "losses", "metrics", "sum_metrics", "summarize", "make_optimizer",
    "make_schedule", "optimizer_names", "schedule_names",
    # transforms and training variants
    "parallel", "multistep", "ensemble", "per_example", "dp_sgd", "precision",
    # data (imported on first use)
    "data",
]
