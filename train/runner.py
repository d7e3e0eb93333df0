"""How the harness runs the step: the model, optimizer and state of a config, and the
transform around the pure step (sharded jit over a mesh, of one device for "none"; pmap;
a vmapped ensemble).

A `Runner` hides the transform from the loop: the loop hands it host batches of the
global batch size and gets metric sums back, whatever the mode.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

import jax
import numpy as np

import jnn
from jnn import parallel
from train import config as configs


# ----------------------------------------------------------- model and optimizer
def make_model(config: dict, dataset: jnn.data.Dataset, axis_name: str | None = None):
    """The config's model; under pmap it gets `axis_name` (BatchNorm, dropout) if it has one."""
    kwargs = dict(config["model_kwargs"])
    if axis_name is not None and "axis_name" in jnn.models.fields(config["model"]):
        kwargs["axis_name"] = axis_name
    return jnn.models.get(config["model"], num_outputs=dataset.num_outputs, **kwargs)


def make_schedule(config: dict, dataset: jnn.data.Dataset):
    """The config's learning rate as a function of the step."""
    steps_per_epoch = jnn.data.num_batches(len(dataset.train["y"]), global_batch_size(config))
    return jnn.make_schedule(config["schedule"], config["learning_rate"],
                             steps_per_epoch=steps_per_epoch, epochs=config["epochs"],
                             **config["schedule_kwargs"])


def make_tx(config: dict, dataset: jnn.data.Dataset):
    """The config's optimizer with its learning-rate schedule."""
    return jnn.make_optimizer(config["optimizer"], make_schedule(config, dataset),
                              momentum=config["momentum"], weight_decay=config["weight_decay"],
                              clip_norm=config["clip_norm"])


def make_state(config: dict, dataset: jnn.data.Dataset, axis_name: str | None = None,
               mesh=None):
    """The initial train state (stacked over members when config["ensemble"] > 1); with a
    mesh, created directly with its shardings (see jnn.parallel.create_sharded_train_state)."""
    model, tx = make_model(config, dataset, axis_name), make_tx(config, dataset)
    sample = {"x": np.zeros((1, *dataset.input_shape), np.float32)}
    if config["ensemble"] > 1:
        seeds = [config["seed"] + k for k in range(config["ensemble"])]
        state = jnn.ensemble.create_ensemble_state(
            model, tx, seeds, sample, config["ensemble_learning_rate_scales"])
        return state if mesh is None else parallel.shard_state(state, mesh, fsdp=config["fsdp"])
    key = jax.random.PRNGKey(config["seed"])
    if mesh is not None:
        return parallel.create_sharded_train_state(model, tx, key, sample, mesh,
                                                   fsdp=config["fsdp"])
    return jnn.create_train_state(model, tx, key, sample)


# -------------------------------------------------------------------- transforms
def resolve_parallel(config: dict) -> str:
    """"auto" is sharded jit over every device when there is more than one, else "none"."""
    if config["parallel"] == "auto":
        return "shard" if jax.device_count() > 1 else "none"
    return config["parallel"]


def global_batch_size(config: dict) -> int:
    """batch_size, or per_device_batch_size x the number of devices when that is set."""
    if config["per_device_batch_size"]:
        mode = resolve_parallel(config)
        devices = jax.device_count() if mode != "none" else 1
        return config["per_device_batch_size"] * devices
    return config["batch_size"]


@dataclasses.dataclass
class Runner:
    mode: str  # "none", "shard" or "pmap"
    devices: int
    state: Any
    train_step: Callable  # (state, placed batches) -> (state, metrics), compiled
    eval_step: Callable  # (state, placed batch) -> metrics, compiled
    place: Callable[[dict], Any]  # a host global batch -> the eval step's batch argument
    place_steps: Callable[[dict], Any]  # a host (K, B, ...) stack -> the train step's
    reduce: Callable[[dict], dict]  # summed metrics -> plain sums (pmap: one replica)
    timings: dict
    steps_per_call: int = 1  # K: train steps run by one call of the compiled train step

    def train(self, batches: list[dict]):
        """Runs one train step per batch (1 to steps_per_call of them) in one call; returns
        the device metrics, which `per_step` splits once they are on the host."""
        if self.steps_per_call == 1:
            (batch,) = batches
            self.state, metrics = self.train_step(self.state, self.place(batch))
            return metrics
        stacked = jnn.multistep.stack_batches(batches, self.steps_per_call)
        self.state, metrics = self.train_step(self.state, self.place_steps(stacked))
        return metrics

    def per_step(self, host_metrics, steps: int) -> list[dict]:
        """The metrics of each of the `steps` steps of one `train` call (host arrays)."""
        if self.steps_per_call == 1:
            return [host_metrics]
        if self.mode == "pmap":  # (devices, K, ...): steps on the second axis
            return [jax.tree.map(lambda v: v[:, i], host_metrics) for i in range(steps)]
        return jnn.multistep.unstack_metrics(host_metrics, steps)

    def evaluate(self, batch: dict):
        return self.eval_step(self.state, self.place(batch))

    def saved_state(self):
        """The state as it is checkpointed: one replica under pmap, as it is otherwise."""
        if self.mode != "pmap":
            return self.state
        replica = jax.tree.map(lambda x: np.asarray(x[0]), self.state)
        if jax.process_count() == 1:
            return replica
        # several processes: orbax saves global arrays, here replicated over every device
        from jax.experimental import multihost_utils

        return multihost_utils.host_local_array_to_global_array(
            replica, parallel.make_mesh(), jax.sharding.PartitionSpec())

    def load_state(self, saved) -> None:
        """Continues from a checkpointed state (restored with saved_state()'s layout)."""
        self.state = parallel.replicate(saved) if self.mode == "pmap" else saved


MAX_CONFUSION_CLASSES = 100  # evaluation counts a confusion matrix up to this many classes


def make_objective(config: dict, *, evaluation: bool = False, num_classes: int = 0):
    """The config's objective (loss name with its label smoothing); for evaluation of a
    classification task it also counts the confusion matrix."""
    options = {"label_smoothing": config["label_smoothing"]} if config["label_smoothing"] else {}
    if evaluation and config["loss"] == "cross_entropy" and num_classes <= MAX_CONFUSION_CLASSES:
        options["confusion_matrix"] = True
    return jnn.objectives.get(config["loss"], **options)


def _steps(config: dict, dataset: jnn.data.Dataset, axis_name: str | None = None):
    objective, penalties = make_objective(config), dict(l1=config["l1"], l2=config["l2"])
    eval_objective = make_objective(config, evaluation=True, num_classes=dataset.num_outputs)
    if config["dp_clip_norm"] is not None:
        if config["skip_nonfinite"]:
            raise ValueError("skip_nonfinite is not available with DP-SGD (dp_clip_norm); "
                             "use --set skip_nonfinite=false")
        train_step = jnn.dp_sgd.make_dp_train_step(
            objective, clip_norm=config["dp_clip_norm"],
            noise_multiplier=config["dp_noise_multiplier"], **penalties)
    else:
        train_step = jnn.make_train_step(objective, axis_name=axis_name,
                                         microbatches=config["microbatches"],
                                         compute_dtype=config["compute_dtype"],
                                         skip_nonfinite=config["skip_nonfinite"], **penalties)
    if config["ensemble"] > 1:
        members = config["ensemble_members"]  # auto: map on CPU for convolutions (jnn.ensemble)
        return (jnn.ensemble.ensemble_step(train_step, members),
                jnn.ensemble.make_ensemble_eval_step(eval_objective, members))
    return train_step, jnn.make_eval_step(eval_objective, axis_name=axis_name,
                                          compute_dtype=config["compute_dtype"])


def _compile(fn, *args, options_for: Callable | None = None) -> tuple[Callable, float, float]:
    """Lowers and compiles `fn` for `args`, with `options_for(jaxpr=...)`'s compiler options
    where given; returns the executable and the seconds lowering and compiling took."""
    start = time.perf_counter()
    compiler_options = (None if options_for is None
                        else options_for(jaxpr=jax.make_jaxpr(fn)(*args)))
    lowered = fn.lower(*args)
    lowered_at = time.perf_counter()
    compiled = lowered.compile(compiler_options=compiler_options)
    return compiled, lowered_at - start, time.perf_counter() - lowered_at


def build_runner(config: dict, dataset: jnn.data.Dataset, sample_batch: dict) -> Runner:
    """Builds the state and compiles the train and eval steps ahead of time for the mode.

    Compiled executables never recompile (a changed shape is an error instead).
    """
    mode = resolve_parallel(config)
    batch_size = global_batch_size(config)
    k = config["steps_per_call"]
    axis = 1 if k > 1 else 0  # the batch axis of what the train step takes: (K, B, ...)
    identity = lambda sums: sums  # noqa: E731
    # jit_sharded gives each step jnn's options for its program itself; pmap takes none
    train_options = eval_options = None
    if mode in ("none", "shard"):  # one sharded-jit path: a single device is a mesh of one
        if mode == "shard":
            configs.check_batch_divides(batch_size, jax.device_count())
        mesh = parallel.make_mesh(jax.local_devices()[:1] if mode == "none" else None)
        state = make_state(config, dataset, mesh=mesh)
        train_fn, eval_fn = _steps(config, dataset)
        if k > 1:
            train_fn = jnn.multistep.scan_steps(train_fn)
        train_jit = parallel.jit_sharded(train_fn, state, mesh, fsdp=config["fsdp"],
                                         batch_axis=axis)
        eval_jit = parallel.jit_sharded(eval_fn, state, mesh, fsdp=config["fsdp"], donate=False)

        def placer(batch_axis):
            if mode == "none":  # host arrays go straight in: jit places them on the one device
                return lambda b: b
            return lambda b: parallel.shard_batch(
                parallel.process_slice(b, batch_axis=batch_axis), mesh, batch_axis=batch_axis)

        reduce, devices = identity, mesh.size
    elif mode == "pmap":
        configs.check_batch_divides(batch_size, jax.device_count())
        state = parallel.replicate(make_state(config, dataset, axis_name=parallel.PMAP_AXIS))
        train_fn, eval_fn = _steps(config, dataset, axis_name=parallel.PMAP_AXIS)
        if k > 1:
            train_fn = jnn.multistep.scan_steps(train_fn, axis_name=parallel.PMAP_AXIS)
        train_jit = parallel.pmap_train_step(train_fn)
        eval_jit = parallel.pmap_eval_step(eval_fn)

        def placer(batch_axis):
            return lambda b: parallel.split_batch(
                parallel.process_slice(b, batch_axis=batch_axis), batch_axis=batch_axis)

        reduce = lambda sums: jax.tree.map(lambda v: v[0], sums)  # noqa: E731
        devices = jax.device_count()
        if jax.process_count() == 1:  # (several processes call pmap itself: see below)
            platform = jax.local_devices()[0].platform
            train_options = functools.partial(jnn.train_compiler_options, platform)
            eval_options = functools.partial(jnn.eval_compiler_options, platform)
    else:
        raise ValueError(f"unknown parallel mode {mode!r}; choose auto, none, pmap or shard")
    place, place_steps = placer(0), placer(axis)
    sample_steps = sample_batch if k == 1 else jnn.multistep.stack_batches([sample_batch] * k, k)
    train_step, train_lower, train_compile = _compile(train_jit, state, place_steps(sample_steps),
                                                      options_for=train_options)
    eval_step, eval_lower, eval_compile = _compile(eval_jit, state, place(sample_batch),
                                                   options_for=eval_options)
    if mode == "pmap" and jax.process_count() > 1:
        # pmap's programs for several processes take global arrays: its own call makes them
        # from this process's arrays (and finds the programs in the compilation cache, which
        # is why they were compiled without jnn's compiler options: pmap takes none)
        train_step, eval_step = train_jit, eval_jit
    timings = {"train_lower_s": train_lower, "train_compile_s": train_compile,
               "eval_lower_s": eval_lower, "eval_compile_s": eval_compile}
    return Runner(mode, devices, state, train_step, eval_step, place, place_steps, reduce,
                  timings, k)
