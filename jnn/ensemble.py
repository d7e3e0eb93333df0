"""Ensembles: K independent models trained in one compiled step by vmapping the step.

    states = jnn.ensemble.create_ensemble_state(model, tx, seeds=[0, 1, 2, 3], sample_x=x,
                                                learning_rate_scales=[1.0, 0.5, 1.0, 2.0])
    step = jax.jit(jnn.ensemble.ensemble_step(jnn.make_train_step()))
    states, metrics = step(states, batch)      # every leaf has a leading (K,) axis

Members share the batches and differ in their seed (initialisation and dropout) and
optionally in a learning-rate multiplier, held in the optimizer state so that one
compiled step serves every member.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from jnn import losses
from jnn.state import TrainState, create_train_state
from jnn.step import resolve_loss, predict


def with_learning_rate_scale(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """`tx` followed by a multiplier held in its state (`hyperparams["step_size"]`, 1.0),
    so that stacked states can scale their updates differently."""
    return optax.chain(tx, optax.inject_hyperparams(optax.scale)(step_size=1.0))


def create_ensemble_state(module, tx: optax.GradientTransformation, seeds: Sequence[int],
                          sample_x, learning_rate_scales: Sequence[float] | None = None
                          ) -> TrainState:
    """K stacked train states: member k is `create_train_state(module, tx', PRNGKey(seeds[k]))`
    with tx' = `with_learning_rate_scale(tx)` scaled by learning_rate_scales[k] (default 1)."""
    tx = with_learning_rate_scale(tx)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
    states = jax.vmap(lambda key: create_train_state(module, tx, key, sample_x))(keys)
    if learning_rate_scales is not None:
        if len(learning_rate_scales) != len(seeds):
            raise ValueError(f"got {len(learning_rate_scales)} learning_rate_scales for "
                             f"{len(seeds)} members; give one per member")
        inner, scale_state = states.opt_state
        hyper = {**scale_state.hyperparams,
                 "step_size": jnp.asarray(learning_rate_scales, jnp.float32)}
        states = states.replace(opt_state=(inner, scale_state._replace(hyperparams=hyper)))
    return states


def ensemble_step(train_step: Callable) -> Callable:
    """The train step over stacked states and one shared batch: metrics gain a (K,) axis."""
    return jax.vmap(train_step, in_axes=(0, None))


def member(states: TrainState, k: int) -> TrainState:
    """Member k of stacked states, as a single-model state."""
    return jax.tree.map(lambda x: x[k], states)


def make_ensemble_eval_step(loss="cross_entropy", *, task: str | None = None) -> Callable:
    """`(states, batch) -> metrics`: each member's sums with a (K,) axis (loss_sum, count,
    correct) plus the averaged prediction's `ensemble_loss_sum` and, for classification,
    `ensemble_correct` (argmax of the mean of the members' softmax outputs)."""
    loss_fn, task = resolve_loss(loss, task, 0.0)

    def eval_step(states: TrainState, batch: dict) -> dict:
        outputs = jax.vmap(predict, in_axes=(0, None))(states, batch["x"])  # (K, B, ...)
        mask = batch.get("mask")
        per_member = jax.vmap(lambda o: losses.masked_sum(loss_fn(o, batch["y"]), mask)[0])(outputs)
        _, count = losses.masked_sum(jnp.zeros(batch["x"].shape[0]), mask)
        metrics = {"loss_sum": per_member, "count": jnp.broadcast_to(count, per_member.shape)}
        if task == "classification":
            hits = jax.vmap(lambda o: losses.masked_sum(
                (o.argmax(-1) == batch["y"]).astype(jnp.float32), mask)[0])(outputs)
            metrics["correct"] = hits
            probs = jax.nn.softmax(outputs, axis=-1).mean(0)  # (B, C)
            metrics["ensemble_correct"] = losses.masked_sum(
                (probs.argmax(-1) == batch["y"]).astype(jnp.float32), mask)[0]
            metrics["ensemble_loss_sum"] = losses.masked_sum(
                -jnp.log(jnp.take_along_axis(probs, batch["y"][:, None], -1)[:, 0] + 1e-12),
                mask)[0]
        else:
            metrics["ensemble_loss_sum"] = losses.masked_sum(loss_fn(outputs.mean(0), batch["y"]),
                                                             mask)[0]
        metrics["ensemble_count"] = count
        return metrics

    return eval_step
