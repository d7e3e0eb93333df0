"""The pure steps: `train_step(state, batch) -> (state, metrics)` and
`eval_step(state, batch) -> metrics`.

A batch is a dict of arrays with a leading batch axis (B, ...): the model reads the
entries its adapter names (default "x"), the objective reads its targets (default "y")
and the optional "mask" (B,) or (B, T) that marks real units (False on padding).

The step minimises sum(losses * weights) / sum(weights) over the global batch (see
jnn.objectives), so masked units change neither gradients, model state nor metrics.
Metrics are {"name": (sum, count)}: "loss" plus the objective's own, and they add up
exactly over batches, microbatches, devices and processes (jnn.metrics turns them into
means).

The steps are plain functions: apply jax.jit, jax.vmap, jax.pmap or sharded jit at the
call site. Options that change how the step runs, not what it computes:
- axis_name: the mapped axis of pmap / shard_map. Gradients and metrics are summed
  over it (the gradient is the exact global-batch mean) and the model state averaged,
  each device weighted by its real units.
- microbatches=k: the batch is split into k slices run one after another in a
  lax.scan, with gradients summed exactly (k times smaller activation peak).
- compute_dtype: bfloat16 or float16 forward and backward pass (see jnn.precision).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jnn import losses, objectives as objectives_lib, precision
from jnn.objectives import Objective
from jnn.state import TrainState, as_batch

Batch = dict
Metrics = dict


def _split_microbatches(batch: Batch, k: int) -> Batch:
    size = jax.tree.leaves(batch)[0].shape[0]
    if size % k:
        raise ValueError(f"microbatches={k} does not divide the batch of {size} examples; use a "
                         f"divisor of {size}")
    return jax.tree.map(lambda x: x.reshape((k, size // k) + x.shape[1:]), batch)


def _model_batch(state: TrainState, batch: Batch, compute_dtype) -> Batch:
    """The batch as the model sees it: its inputs cast to the compute dtype."""
    if compute_dtype is None:
        return batch
    inputs = {k: batch[k] for k in state.model.inputs if k in batch}
    return {**batch, **precision.cast_floats(inputs, compute_dtype)}


def forward(state: TrainState, params, model_state, batch: Batch, objective: Objective, *,
            train: bool, rng=None, compute_dtype=None, units: dict | None = None):
    """Runs the model and the objective on one device's batch.

    Returns ((loss sum, weight sum, objective metrics), outputs in float32, new model state);
    `units["count"]` is set to the number of units (a static size) when `units` is given.
    """
    params = precision.cast_floats(params, compute_dtype)
    outputs, new_model_state = state.model.apply(
        params, model_state, _model_batch(state, batch, compute_dtype), train=train, rng=rng)
    outputs = precision.cast_floats(outputs, jnp.float32)
    unit_losses, weights, metrics = objectives_lib.evaluate(objective, outputs, batch)
    if units is not None:
        units["count"] = int(unit_losses.size)
    loss_sum = (unit_losses.astype(jnp.float32) * weights).sum()
    return (loss_sum, weights.sum(), metrics), outputs, new_model_state


def _average_over_devices(model_state, weight, axis_name: str):
    """Each device's model state (BatchNorm statistics of its rows) averaged over the
    devices, weighted by its share of the real units: a device holding only padding
    counts for nothing, and its empty statistics (0/0) never reach the others."""
    total = jax.lax.psum(weight, axis_name)

    def average(x):
        weighted = jax.lax.psum(jnp.where(weight > 0, x, 0) * weight, axis_name)
        return jnp.where(total > 0, weighted / jnp.maximum(total, 1e-30),  # 0: no real unit
                         jax.lax.pmean(x, axis_name)).astype(x.dtype)

    return jax.tree.map(average, model_state)


def _keep_unless(condition, new, old):
    """`new` where `condition` holds, else `old` (leaf by leaf)."""
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), new, old)


def make_train_step(objective: str | Objective = "cross_entropy", *,
                    axis_name: str | None = None, microbatches: int = 1, compute_dtype=None,
                    l1: float = 0.0, l2: float = 0.0, skip_nonfinite: bool = False
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """Returns `train_step(state, batch) -> (new_state, metrics)`, a pure function.

    Args:
      objective: a name ("cross_entropy", "mse", "binary_cross_entropy", "next_token";
        jnn.objectives.get(name, label_smoothing=...) for options) or your own function
        `(outputs, batch) -> (losses, weights, metrics)`.
      axis_name: the mapped axis to reduce over (pmap / shard_map); None for one device
        or sharded jit.
      microbatches: split the batch into this many slices inside the step (gradient
        accumulation). Equal to one step on the whole batch for models without
        batch-dependent layers (BatchNorm sees each slice on its own) and without dropout
        (each slice draws its own masks, from fold_in(step key, slice index)).
      compute_dtype: None (float32), "bfloat16" or "float16" (needs state.loss_scale).
      l1, l2: coefficients of L1 / 0.5*L2 penalties on the kernels (arrays of rank > 1),
        added to the mean loss (not to the reported loss).
      skip_nonfinite: a step whose loss or gradients are not finite changes nothing but
        the step counter (parameters, optimizer and model state are kept), reports no
        loss or metrics for its batch, and counts itself in the metric "skipped" (whose
        mean is the fraction of steps skipped). Off: the non-finite values are applied.

    The RNG key of step t is fold_in(state.rng, t), the same on every device: jnn's
    models draw each example's dropout mask from its global index
    (jnn.models.Dropout), so pmap, sharded jit and one device drop the same units.
    """
    objective = objectives_lib.resolve(objective)
    compute_dtype = precision.canonical_dtype(compute_dtype)
    if not isinstance(microbatches, int) or microbatches < 1:
        raise ValueError(f"microbatches must be an integer >= 1, got {microbatches!r}")

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        batch = as_batch(batch)
        if compute_dtype == jnp.float16 and state.loss_scale is None:
            raise ValueError("float16 compute needs loss scaling: create the state with "
                             "create_train_state(..., loss_scale=jnn.precision."
                             "DynamicLossScale.create())")
        rng = jax.random.fold_in(state.rng, state.step)
        scale = None if state.loss_scale is None else state.loss_scale.scale

        units = {}  # the static number of units in a (micro)batch, found while tracing

        def scaled_loss_sum(params, model_state, micro, micro_rng):
            (loss_sum, weight_sum, metrics), _, new_model_state = forward(
                state, params, model_state, micro, objective, train=True, rng=micro_rng,
                compute_dtype=compute_dtype, units=units)
            # with a loss scale, scale the mean over the units, as float16 recipes do
            factor = 1.0 if state.loss_scale is None else scale / units["count"]
            return loss_sum * factor, (loss_sum, weight_sum, metrics, new_model_state)

        grad_fn = jax.grad(scaled_loss_sum, has_aux=True)
        if microbatches == 1:
            grads, (loss_sum, weight_sum, metrics, model_state) = grad_fn(
                state.params, state.model_state, batch, rng)
        else:
            def accumulate(carry, micro_and_index):
                grads_sum, model_state = carry
                micro, i = micro_and_index
                grads, (loss_sum, weight_sum, metrics, model_state) = grad_fn(
                    state.params, model_state, micro, jax.random.fold_in(rng, i))
                grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
                return (grads_sum, model_state), (loss_sum, weight_sum, metrics)

            zeros = jax.tree.map(jnp.zeros_like, state.params)
            (grads, model_state), per_micro = jax.lax.scan(
                accumulate, (zeros, state.model_state),
                (_split_microbatches(batch, microbatches), jnp.arange(microbatches)))
            loss_sum, weight_sum, metrics = jax.tree.map(lambda x: x.sum(0), per_micro)
        metrics = {"loss": (loss_sum, weight_sum), **metrics}
        if axis_name is not None:
            model_state = _average_over_devices(model_state, weight_sum, axis_name)
            grads, weight_sum, metrics = jax.lax.psum((grads, weight_sum, metrics), axis_name)
        if state.loss_scale is not None:
            grads = jax.tree.map(lambda g: g * (units["count"] / scale), grads)
        # the mean over the weights (any positive sum, fractional too); none: grads are 0
        grads = jax.tree.map(lambda g: g / jnp.where(weight_sum > 0, weight_sum, 1.0), grads)
        if l1 or l2:
            penalty_grads = jax.grad(losses.weight_penalty)(state.params, l1, l2)
            grads = jax.tree.map(jnp.add, grads, penalty_grads)
        new_state = state.apply_gradients(grads=grads, model_state=model_state)
        if state.loss_scale is not None or skip_nonfinite:
            finite = precision.all_finite(grads)
            if skip_nonfinite:
                finite = finite & precision.all_finite((metrics["loss"], model_state))
            new_state = _keep_unless(finite, new_state, state.replace(step=state.step + 1))
            if state.loss_scale is not None:
                new_state = new_state.replace(loss_scale=state.loss_scale.adjust(finite))
            if skip_nonfinite:
                metrics = _keep_unless(finite, metrics, jax.tree.map(jnp.zeros_like, metrics))
                metrics["skipped"] = ((~finite).astype(jnp.float32), jnp.ones((), jnp.float32))
        return new_state, metrics

    return train_step


def make_eval_step(objective: str | Objective = "cross_entropy", *,
                   axis_name: str | None = None, compute_dtype=None
                   ) -> Callable[[TrainState, Batch], Metrics]:
    """Returns `eval_step(state, batch) -> metrics` in inference mode (no dropout, running
    BatchNorm statistics); metrics as in make_train_step."""
    objective = objectives_lib.resolve(objective)
    compute_dtype = precision.canonical_dtype(compute_dtype)

    def eval_step(state: TrainState, batch: Batch) -> Metrics:
        batch = as_batch(batch)
        (loss_sum, weight_sum, metrics), _, _ = forward(
            state, state.params, state.model_state, batch, objective, train=False,
            compute_dtype=compute_dtype)
        metrics = {"loss": (loss_sum, weight_sum), **metrics}
        if axis_name is not None:
            metrics = jax.lax.psum(metrics, axis_name)
        return metrics

    return eval_step


def predict(state: TrainState, batch) -> jax.Array:
    """The model's outputs in inference mode for a batch dict (or its input array `x`)."""
    outputs, _ = state.model.apply(state.params, state.model_state, as_batch(batch), train=False)
    return outputs
