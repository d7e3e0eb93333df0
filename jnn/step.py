"""The pure train and eval steps: `(state, batch) -> (state, metrics)` and `(state, batch) -> metrics`.

A batch is a dict with `x` (B, ...), `y` (B,) or (B, ...) and an optional boolean
`mask` (B,); masked-out examples (padding) change neither the gradient nor the
metrics. Metrics are sums and counts (`loss_sum`, `count`, and `correct` for
classification), so they add up exactly over batches and devices; see jnn.metrics.

The steps are plain functions: apply jax.jit, jax.vmap, jax.pmap or sharded jit at the
call site. With `axis_name`, the step is the per-device body of a data-parallel map:
gradients are the exact global-batch mean (sum over the axis of local sums divided by
the global count), metrics are summed and batch_stats averaged over the axis.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jnn import losses
from jnn.per_example import clip_and_noise, per_example_loss_grads
from jnn.state import TrainState

Batch = dict
Metrics = dict

_TASK_OF_LOSS = {"cross_entropy": "classification", "binary_cross_entropy": "binary",
                 "mse": "regression"}


def resolve_loss(loss, task, label_smoothing):
    """(per-example loss function, task) for a loss name or callable; see make_train_step."""
    if isinstance(loss, str):
        kwargs = {"label_smoothing": label_smoothing} if label_smoothing else {}
        return losses.get_loss(loss, **kwargs), task or _TASK_OF_LOSS[loss]
    if not callable(loss):
        raise ValueError(f"loss must be a name ({', '.join(losses.loss_names())}) or a callable "
                         f"(outputs, labels) -> (B,) losses, got {loss!r}")
    return loss, task or "regression"


def _count_correct(outputs, labels, task, mask):
    if task == "classification":
        if labels.ndim == outputs.ndim:  # one-hot
            labels = labels.argmax(-1)
        hits = outputs.argmax(-1) == labels
    elif task == "binary":
        hits = ((outputs > 0).astype(jnp.int32) == labels.reshape(outputs.shape)).reshape(
            outputs.shape[0], -1).all(axis=1)
    else:
        return None
    return losses.masked_sum(hits.astype(jnp.float32), mask)[0]


def _batch_metrics(per_example, outputs, batch, task):
    mask = batch.get("mask")
    loss_sum, count = losses.masked_sum(per_example.astype(jnp.float32), mask)
    metrics = {"loss_sum": loss_sum, "count": count}
    correct = _count_correct(outputs, batch["y"], task, mask)
    if correct is not None:
        metrics["correct"] = correct
    return metrics


def make_train_step(loss: str | Callable = "cross_entropy", *, axis_name: str | None = None,
                    task: str | None = None, label_smoothing: float = 0.0, l1: float = 0.0,
                    l2: float = 0.0, dp_clip_norm: float | None = None,
                    dp_noise_multiplier: float = 0.0
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """Returns `train_step(state, batch) -> (new_state, metrics)`, a pure function.

    Args:
      loss: "cross_entropy", "mse", "binary_cross_entropy", or a callable
        `(outputs (B, ...), labels) -> (B,)` per-example losses.
      axis_name: the mapped axis to reduce over (pmap / shard_map); None for single-device
        or sharded-jit code.
      task: "classification", "binary" or "regression": which metrics to count. Inferred
        from a loss name; a callable loss counts no accuracy unless told.
      label_smoothing: for cross_entropy.
      l1, l2: coefficients of the L1 / L2 weight penalties (kernels only) added to the loss.
      dp_clip_norm, dp_noise_multiplier: DP-SGD. With a clip norm, the gradient is the
        clipped, noised mean of per-example gradients (see jnn.per_example); the model
        must have no BatchNorm. Single-device or sharded jit only (no axis_name).

    The dropout key of step t is fold_in(state.rng, t), the same on every device:
    jnn's models draw each example's mask from its global index (jnn.models.Dropout),
    so pmap, sharded jit and one device drop the same units. A module of your own that
    uses flax.linen.Dropout under pmap should use jnn.models.Dropout instead.
    """
    loss_fn, task = resolve_loss(loss, task, label_smoothing)
    if dp_clip_norm is not None:
        if dp_clip_norm <= 0 or dp_noise_multiplier < 0:
            raise ValueError("DP-SGD needs dp_clip_norm > 0 and dp_noise_multiplier >= 0")
        if axis_name is not None:
            raise ValueError("DP-SGD runs under jit or sharded jit, not with axis_name (pmap)")

    def penalty(params):
        value = jnp.zeros(())
        if l1:
            value += l1 * losses.l1_penalty(params)
        if l2:
            value += l2 * losses.l2_penalty(params)
        return value

    def dp_train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        example_rng, noise_rng = jax.random.split(jax.random.fold_in(state.rng, state.step))
        grads, per_example, outputs = per_example_loss_grads(
            state.apply_fn, state.params, state.batch_stats, batch["x"], batch["y"], loss_fn,
            example_rng)
        grads = clip_and_noise(grads, batch.get("mask"), clip_norm=dp_clip_norm,
                               noise_multiplier=dp_noise_multiplier, rng=noise_rng)
        if l1 or l2:
            grads = jax.tree.map(jnp.add, grads, jax.grad(penalty)(state.params))
        metrics = _batch_metrics(per_example, outputs, batch, task)
        return state.apply_gradients(grads=grads), metrics

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        rng = jax.random.fold_in(state.rng, state.step)
        has_batch_stats = bool(state.batch_stats)
        mask = batch.get("mask")
        _, local_count = losses.masked_sum(jnp.zeros(batch["x"].shape[0]), mask)
        global_count = local_count if axis_name is None else jax.lax.psum(local_count, axis_name)
        num_shards = 1 if axis_name is None else jax.lax.psum(1, axis_name)

        def objective(params):
            variables = {"params": params}
            if has_batch_stats:
                variables["batch_stats"] = state.batch_stats
            if has_batch_stats:
                outputs, updates = state.apply_fn(variables, batch["x"], train=True,
                                                  rngs={"dropout": rng}, mutable=["batch_stats"])
            else:
                outputs, updates = state.apply_fn(variables, batch["x"], train=True,
                                                  rngs={"dropout": rng}), {}
            per_example = loss_fn(outputs, batch["y"])  # (B,)
            local_sum, _ = losses.masked_sum(per_example, mask)
            value = local_sum / jnp.maximum(global_count, 1.0) + penalty(params) / num_shards
            return value, (per_example, outputs, updates)

        grads, (per_example, outputs, updates) = jax.grad(objective, has_aux=True)(state.params)
        metrics = _batch_metrics(per_example, outputs, batch, task)
        batch_stats = updates.get("batch_stats", state.batch_stats)
        if axis_name is not None:
            grads = jax.lax.psum(grads, axis_name)
            metrics = jax.lax.psum(metrics, axis_name)
            batch_stats = jax.lax.pmean(batch_stats, axis_name)
        new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
        return new_state, metrics

    return train_step if dp_clip_norm is None else dp_train_step


def make_eval_step(loss: str | Callable = "cross_entropy", *, axis_name: str | None = None,
                   task: str | None = None) -> Callable[[TrainState, Batch], Metrics]:
    """Returns `eval_step(state, batch) -> metrics` (sums and counts; see make_train_step)."""
    loss_fn, task = resolve_loss(loss, task, 0.0)

    def eval_step(state: TrainState, batch: Batch) -> Metrics:
        outputs = predict(state, batch["x"])
        metrics = _batch_metrics(loss_fn(outputs, batch["y"]), outputs, batch, task)
        if axis_name is not None:
            metrics = jax.lax.psum(metrics, axis_name)
        return metrics

    return eval_step


def predict(state: TrainState, x: jax.Array) -> jax.Array:
    """The model's outputs (B, num_outputs) in inference mode (no dropout, running BatchNorm stats)."""
    variables = {"params": state.params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    return state.apply_fn(variables, x, train=False)
