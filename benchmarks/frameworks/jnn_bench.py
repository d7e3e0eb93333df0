"""jnn: the library's own step under jit, vmap (ensembles), pmap and sharded jit."""

from __future__ import annotations

import inspect
from typing import Callable

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import jnn
from benchmarks.frameworks import Bench, random_batch
from benchmarks.models import RESMLP_WIDTH, model_spec
from benchmarks.timing import compile_phases


def make_model(name: str, axis_name: str | None = None):
    spec = model_spec(name)
    if spec.family == "resmlp":
        return jnn.models.get("resmlp", depth=spec.depth, width=RESMLP_WIDTH)
    return jnn.models.get(spec.family, axis_name=axis_name)


def options_for(kind: str) -> Callable | None:
    """`traced -> compiler options` for a "train" or "eval" step as jnn recommends: jnn's
    options for the traced program. A jnn from before per-program options
    (benchmarks.versus_revision runs older revisions with this worker) gets its options
    for every program, and one from before any options XLA's defaults."""
    choose = getattr(jnn, f"{kind}_compiler_options", None)
    if choose is None:
        return None
    if "jaxpr" in inspect.signature(choose).parameters:
        return lambda traced: choose(jaxpr=traced.jaxpr)
    return lambda traced: choose()


def build(spec: dict) -> Bench:
    model_name, transform = spec["model"], spec["transform"]
    x, y = random_batch(model_spec(model_name).input_shape, spec["batch"])
    batch = {"x": x, "y": y}
    tx = optax.adam(1e-3)
    key = jax.random.PRNGKey(0)
    devices = jax.devices()[: spec["devices"]]
    if transform == "pmap":
        model = make_model(model_name, axis_name=jnn.parallel.PMAP_AXIS)
    else:
        model = make_model(model_name)
    if transform == "vmap":
        state = jnn.ensemble.create_ensemble_state(model, tx, list(range(spec["ensemble"])), x[:1])
        params = jnn.ensemble.member(state, 0).params
        train_fn = jax.jit(jnn.ensemble.ensemble_step(jnn.make_train_step()), donate_argnums=0)
        eval_fn = jax.jit(jnn.ensemble.make_ensemble_eval_step())
        batch = jax.device_put(batch)
    else:
        state = jnn.create_train_state(model, tx, key, x[:1])
        params = state.params
        if transform == "jit":
            train_fn = jax.jit(jnn.make_train_step(), donate_argnums=0)
            eval_fn = jax.jit(jnn.make_eval_step())
            batch = jax.device_put(batch)
        elif transform == "shard":
            mesh = jnn.parallel.make_mesh(devices)
            state = jnn.parallel.shard_state(state, mesh)
            train_fn = jnn.parallel.jit_sharded(jnn.make_train_step(), state, mesh)
            eval_fn = jnn.parallel.jit_sharded(jnn.make_eval_step(), state, mesh, donate=False)
            batch = jnn.parallel.shard_batch(batch, mesh)
        elif transform == "pmap":
            axis = jnn.parallel.PMAP_AXIS
            state = jnn.parallel.replicate(state, devices)
            train_fn = jax.pmap(jnn.make_train_step(axis_name=axis), axis_name=axis,
                                devices=devices, donate_argnums=0)
            eval_fn = jax.pmap(jnn.make_eval_step(axis_name=axis), axis_name=axis,
                               devices=devices)
            split = jnn.parallel.split_batch(batch, len(devices))
            batch = jax.device_put(split, NamedSharding(Mesh(np.asarray(devices), (axis,)),
                                                        P(axis)))
        else:
            raise ValueError(f"jnn has no transform {transform!r}")
    # jit_sharded and pmap compile with options of their own (pmap: XLA's defaults)
    train_c, train_phases = compile_phases(train_fn, state, batch, options=options_for("train")
                                           if transform in ("jit", "vmap") else None)
    eval_c, eval_phases = compile_phases(eval_fn, state, batch, options=options_for("eval")
                                         if transform in ("jit", "vmap") else None)
    holder = {"state": state}

    def train():
        holder["state"], metrics = train_c(holder["state"], batch)
        jax.block_until_ready(metrics)

    def evaluate():
        jax.block_until_ready(eval_c(holder["state"], batch))

    return Bench(jnn.parameter_count(params), train, evaluate,
                 phases={"train": train_phases, "eval": eval_phases})
