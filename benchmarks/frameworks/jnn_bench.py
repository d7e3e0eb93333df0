"""jnn: the library's own step under jit, vmap (ensembles), pmap and sharded jit."""

from __future__ import annotations

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


def train_jit(step):
    """jax.jit of a train step as jnn recommends: the state donated, and jnn's compiler
    options for the backend. A jnn from before those options (benchmarks.versus_revision
    runs older revisions with this worker) compiles with XLA's defaults."""
    options = getattr(jnn, "train_compiler_options", dict)()
    return jax.jit(step, donate_argnums=0, compiler_options=options)


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
        train_fn = train_jit(jnn.ensemble.ensemble_step(jnn.make_train_step()))
        eval_fn = jax.jit(jnn.ensemble.make_ensemble_eval_step())
        batch = jax.device_put(batch)
    else:
        state = jnn.create_train_state(model, tx, key, x[:1])
        params = state.params
        if transform == "jit":
            train_fn = train_jit(jnn.make_train_step())
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
    train_c, train_phases = compile_phases(train_fn, state, batch)
    eval_c, eval_phases = compile_phases(eval_fn, state, batch)
    holder = {"state": state}

    def train():
        holder["state"], metrics = train_c(holder["state"], batch)
        jax.block_until_ready(metrics)

    def evaluate():
        jax.block_until_ready(eval_c(holder["state"], batch))

    return Bench(jnn.parameter_count(params), train, evaluate,
                 phases={"train": train_phases, "eval": eval_phases})
