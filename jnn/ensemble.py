"""Ensembles: K independent models trained in one compiled step, vmapped or mapped over them.

    states = jnn.ensemble.create_ensemble_state(model, tx, seeds=[0, 1, 2, 3], sample=x,
                                                learning_rate_scales=[1.0, 0.5, 1.0, 2.0])
    step = jax.jit(jnn.ensemble.ensemble_step(jnn.make_train_step()))
    states, metrics = step(states, batch)      # every leaf has a leading (K,) axis

Members share the batches and differ in their seed (initialisation and dropout) and
optionally in a learning-rate multiplier, held in the optimizer state so that one
compiled step serves every member.

`members` says how the compiled step runs them: "vmap" side by side, as one batched
program; "map" one after another (`lax.map`), each with a single member's program;
"auto" (the default) is "map" on CPU for a step with convolutions that XLA runs well in
a loop, and "vmap" otherwise (`resolve_members`). Batched matmuls make "vmap" the
faster for dense models, but XLA's CPU backend runs a vmapped convolution (a grouped
one, once the members' activations differ) far slower than the members' own: on a
2-core CPU, four CIFAR-10 CNNs took 178 ms per train step with "map" against 299 ms with
"vmap", and 40 against 259 ms per prediction; four MNIST CNNs 54 against 89 ms and 13
against 66 ms; four MLPs 4.0 against 2.6 ms and 1.06 against 1.08 ms (batch 128, one
process). Both give the same values up to float rounding."""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jnn import objectives as objectives_lib
from jnn.convolution_search import cpu_convolutions
from jnn.model import as_model
from jnn.state import TrainState, as_batch, initial_arrays, new_train_state, run_once
from jnn.step import predict


def with_learning_rate_scale(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """`tx` followed by a multiplier held in its state as the hyperparameter "step_size"
    (1.0), so that stacked states can scale their updates differently."""
    return optax.chain(tx, optax.inject_hyperparams(optax.scale)(step_size=1.0))


def create_ensemble_state(module, tx: optax.GradientTransformation, seeds: Sequence[int],
                          sample, learning_rate_scales: Sequence[float] | None = None,
                          **model_options) -> TrainState:
    """K stacked train states: member k is `create_train_state(module, tx', PRNGKey(seeds[k]))`
    with tx' = `with_learning_rate_scale(tx)` scaled by learning_rate_scales[k] (default 1)."""
    if learning_rate_scales is not None and len(learning_rate_scales) != len(seeds):
        raise ValueError(f"got {len(learning_rate_scales)} learning_rate_scales for "
                         f"{len(seeds)} members; give one per member")
    tx = with_learning_rate_scale(tx)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
    model = as_model(module, **model_options)
    params, model_state, rngs = run_once(_members_initial_arrays, model, keys, as_batch(sample))
    states = jax.vmap(lambda p, m, r: new_train_state(model, tx, p, m, r))(params, model_state,
                                                                            rngs)
    if learning_rate_scales is not None:
        scales = jnp.asarray(learning_rate_scales, jnp.float32)
        states = states.replace(opt_state=optax.tree_utils.tree_set(states.opt_state,
                                                                    step_size=scales))
    return states


def _members_initial_arrays(model, keys, batch):
    return jax.vmap(lambda key: initial_arrays(model, key, batch))(keys)


MEMBERS = ("auto", "vmap", "map")


def ensemble_step(train_step: Callable, members: str = "auto") -> Callable:
    """The train step over stacked states and one shared batch: metrics gain a (K,) axis.
    `members`: "vmap" runs the members side by side, "map" one after another, "auto"
    picks (see the module)."""
    return _over_members(train_step, members)


def resolve_members(fn: Callable, states: TrainState, batch, members: str = "auto") -> str:
    """"vmap" or "map", the way `members` runs `fn(member, batch)` over stacked `states`.

    "auto" is "map" on CPU when `fn` (traced on one member's shapes, not run) computes
    convolutions and each of them runs well in a loop, else "vmap". XLA:CPU brings a
    convolution into its canonical dimensions only outside loops: jnn's convolutions
    (`jnn.models.convolution`, their CPU branch) are written canonical, gradients
    included, and so is a plain forward NHWC/HWIO one; lax's kernel gradient is not and
    ran 30-60x slower mapped, so a step with one of those stays vmapped."""
    if _checked(members) != "auto":
        return members
    if jax.default_backend() != "cpu":
        return "vmap"
    shapes = lambda tree, drop: jax.tree.map(  # noqa: E731
        lambda a: jax.ShapeDtypeStruct(jnp.shape(a)[drop:], jnp.result_type(a)), tree)
    jaxpr = jax.make_jaxpr(fn)(shapes(states, 1), shapes(batch, 0))
    convolutions = list(cpu_convolutions(jaxpr))
    return "map" if convolutions and all(
        _runs_well_in_a_loop(eqn.params, ours) for eqn, ours in convolutions) else "vmap"


def _checked(members: str) -> str:
    if members not in MEMBERS:
        raise ValueError(f"members={members!r} is not a way to run an ensemble's members; "
                         f"use one of {', '.join(repr(m) for m in MEMBERS)}")
    return members


def _runs_well_in_a_loop(params, ours: bool) -> bool:
    if params["feature_group_count"] != 1 or params["batch_group_count"] != 1:
        return False
    if ours:
        return True
    lhs, rhs, out = params["dimension_numbers"]
    n = len(lhs)
    spatial = tuple(range(1, n - 1))
    return (tuple(lhs) == tuple(out) == (0, n - 1, *spatial)
            and tuple(rhs) == (n - 1, n - 2, *range(n - 2)))


def _over_members(fn: Callable, members: str) -> Callable:
    """`(states, batch) -> fn(member, batch)` stacked over the members, by `members`."""
    _checked(members)

    def over_members(states, batch):
        if resolve_members(fn, states, batch, members) == "map":
            return lax.map(lambda state: fn(state, batch), states)
        return jax.vmap(fn, in_axes=(0, None))(states, batch)

    return over_members


def member(states: TrainState, k: int) -> TrainState:
    """Member k of stacked states, as a single-model state."""
    return jax.tree.map(lambda x: x[k], states)


def make_ensemble_eval_step(objective="cross_entropy", members: str = "auto") -> Callable:
    """`(states, batch) -> metrics`: each member's metrics with a (K,) axis, plus the
    averaged prediction's as "ensemble_<name>" (the objective's `combine_members` makes
    it: the mean of the members' probabilities for classification and binary labels,
    the mean output otherwise). `members` says how the members' predictions run, as in
    `ensemble_step`."""
    objective = objectives_lib.resolve(objective)
    predict_members = _over_members(predict, members)
    combine = getattr(objective, "combine_members", lambda outputs: outputs.mean(0))

    def metrics_of(outputs, batch):
        losses, weights, metrics = objectives_lib.evaluate(objective, outputs, batch)
        return {"loss": ((losses * weights).sum(), weights.sum()), **metrics}

    def eval_step(states: TrainState, batch) -> dict:
        batch = as_batch(batch)
        outputs = predict_members(states, batch).astype(jnp.float32)
        metrics = jax.vmap(metrics_of, in_axes=(0, None))(outputs, batch)  # (K,) each
        combined = metrics_of(combine(outputs), batch)
        metrics.update({f"ensemble_{name}": value for name, value in combined.items()})
        return metrics

    return eval_step
