"""Objectives: what a step minimises and counts, for the batch on one device.

An objective is any function

    objective(outputs, batch) -> (losses, weights, metrics)

- `losses`, `weights`: arrays of the same shape, one entry per unit: (B,) when a unit is
  an example, (B, T) when it is a token. Weights are 0 on padding.
- `metrics`: {"name": (sum, count)}, each reported as total sum / total count over
  every batch, device and process (see jnn.metrics). The step adds "loss" itself.

The step minimises sum(losses * weights) / sum(weights) over the GLOBAL batch, so
padding, uneven splits over devices and microbatches change nothing. Your own loss
goes through the same door: write such a function (`unit_weights` gives the weights
from the batch's mask) and pass it to `make_train_step`.

Built in, by name (`get`): "cross_entropy" (classification), "mse" (regression),
"binary_cross_entropy" and "next_token" (a language model's loss over (B, T) tokens).
An objective may also say how to average the outputs of ensemble members
(`combine_members`), which jnn.ensemble uses for the averaged prediction.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jnn import losses as elementwise

Metrics = dict[str, tuple[jax.Array, jax.Array]]
Objective = Callable[[Any, dict], tuple[jax.Array, jax.Array, Metrics]]


def unit_weights(batch: dict, shape: tuple[int, ...], mask_key: str = "mask") -> jax.Array:
    """float32 weights of `shape` (B,) or (B, T, ...) from the batch's mask: 1 where the
    unit is real, 0 on padding (all ones without a mask). A (B,) mask covers every unit of
    an example; a mask of the units' own shape marks each unit."""
    mask = batch.get(mask_key)
    if mask is None:
        return jnp.ones(shape, jnp.float32)
    mask = jnp.asarray(mask)
    if mask.shape != tuple(shape[: mask.ndim]):
        raise ValueError(f"batch[{mask_key!r}] has shape {mask.shape}, which fits neither the "
                         f"examples nor the units of shape {tuple(shape)}; give a (B,) mask "
                         "per example or one of the units' shape")
    mask = mask.reshape(mask.shape + (1,) * (len(shape) - mask.ndim))
    return jnp.broadcast_to(mask, shape).astype(jnp.float32)


def weighted_mean_metric(values: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sum(values * weights), sum(weights)) in float32: a metric entry."""
    weights = weights.astype(jnp.float32)
    return (values.astype(jnp.float32) * weights).sum(), weights.sum()


def _targets(batch: dict, key: str):
    if key not in batch:
        raise ValueError(f"the batch has no {key!r} entry for the objective's targets (its keys: "
                         f"{', '.join(sorted(batch))}); pass target=... naming it")
    return batch[key]


def _mean_of_members(outputs: jax.Array) -> jax.Array:
    return outputs.mean(axis=0)


@dataclasses.dataclass(frozen=True)
class Classification:
    """Softmax cross-entropy of (..., K) logits against integer (...) or one-hot (..., K)
    labels, one unit per label position; metric "accuracy" (argmax hits). An integer
    label outside [0, K) gives its unit a NaN loss, unless the unit's weight is 0
    (padding may carry any label, such as -1).

    `confusion_matrix=True` adds the metric "confusion_matrix": its sum is the (K, K)
    count of units with true class i (row) predicted as j (column), its count the
    number of units, so it adds up over batches and devices like every metric.
    """

    label_smoothing: float = 0.0
    target: str = "y"
    mask: str = "mask"
    confusion_matrix: bool = False

    def __post_init__(self):
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    def __call__(self, outputs, batch):
        labels = _targets(batch, self.target)
        loss = elementwise.softmax_cross_entropy(outputs, labels, self.label_smoothing)
        weights = unit_weights(batch, loss.shape, self.mask)
        if labels.ndim == outputs.ndim:  # one-hot
            labels = labels.argmax(-1)
        else:  # a real unit whose label is no class has a NaN loss, so the bug shows;
            # padding (weight 0) may carry any label, -1 say, and adds nothing
            no_class = (labels < 0) | (labels >= outputs.shape[-1])
            loss = jnp.where(no_class & (weights > 0), jnp.nan, loss)
        predicted = outputs.argmax(-1)
        metrics = {"accuracy": weighted_mean_metric(predicted == labels, weights)}
        if self.confusion_matrix:
            classes = outputs.shape[-1]
            true_rows = jax.nn.one_hot(labels, classes) * weights[..., None]
            counts = jnp.einsum("...i,...j->ij", true_rows, jax.nn.one_hot(predicted, classes))
            metrics["confusion_matrix"] = (counts, weights.sum())
        return loss, weights, metrics

    @staticmethod
    def combine_members(outputs: jax.Array) -> jax.Array:
        """Log of the members' mean softmax (K, ..., C) -> (..., C): logits of the average."""
        return jnp.log(jax.nn.softmax(outputs.astype(jnp.float32), axis=-1).mean(0) + 1e-12)


@dataclasses.dataclass(frozen=True)
class NextToken(Classification):
    """A language model's loss: cross-entropy of (B, T, V) logits against the next tokens
    `y` (B, T), averaged over the real tokens (mask (B, T), or (B,) per sequence).
    Metrics: token "accuracy" and "perplexity" (exp of the mean token loss).

    Build the batch from token sequences with `next_token_batch`.
    """

    def __call__(self, outputs, batch):
        labels = _targets(batch, self.target)
        if outputs.ndim != 3 or labels.shape != outputs.shape[:2]:
            raise ValueError(f"next_token expects logits (B, T, V) and targets (B, T), got "
                             f"{outputs.shape} and {labels.shape}")
        loss, weights, metrics = super().__call__(outputs, batch)
        nll = (elementwise.softmax_cross_entropy(outputs, labels) if self.label_smoothing
               else loss)
        metrics["perplexity"] = weighted_mean_metric(nll, weights)  # exp taken in summarize
        return loss, weights, metrics


def next_token_batch(tokens, mask=None) -> dict:
    """{"x": tokens[:, :-1], "y": tokens[:, 1:], "mask"} from (B, T+1) token ids and their
    optional (B, T+1) padding mask: the model reads x and predicts y, position by position."""
    batch = {"x": tokens[:, :-1], "y": tokens[:, 1:]}
    if mask is not None:
        batch["mask"] = mask[:, 1:]
    return batch


@dataclasses.dataclass(frozen=True)
class Regression:
    """Squared error averaged over each example's output entries, any output shape (a (B,)
    target against (B, 1) outputs is accepted); one unit per example."""

    target: str = "y"
    mask: str = "mask"

    def __call__(self, outputs, batch):
        loss = elementwise.mean_squared_error(outputs, _targets(batch, self.target))
        return loss, unit_weights(batch, loss.shape, self.mask), {}

    combine_members = staticmethod(_mean_of_members)


@dataclasses.dataclass(frozen=True)
class Binary:
    """Sigmoid cross-entropy of logits against 0/1 labels, averaged over each example's
    outputs; metric "accuracy" (the fraction of an example's outputs on the right side of 0)."""

    target: str = "y"
    mask: str = "mask"

    def __call__(self, outputs, batch):
        labels = _targets(batch, self.target)
        loss = elementwise.binary_cross_entropy(outputs, labels)
        weights = unit_weights(batch, loss.shape, self.mask)
        hits = (outputs > 0) == (labels.reshape(outputs.shape) > 0.5)
        hits = hits.reshape(hits.shape[0], -1).mean(axis=1)
        return loss, weights, {"accuracy": weighted_mean_metric(hits, weights)}

    @staticmethod
    def combine_members(outputs: jax.Array) -> jax.Array:
        """Logit of the members' mean probability: (K, B, ...) -> (B, ...)."""
        p = jax.nn.sigmoid(outputs.astype(jnp.float32)).mean(0)
        return jnp.log(p + 1e-12) - jnp.log1p(-p + 1e-12)


_OBJECTIVES = {"cross_entropy": Classification, "mse": Regression,
               "binary_cross_entropy": Binary, "next_token": NextToken}


def names() -> list[str]:
    """The objective names `get` accepts."""
    return sorted(_OBJECTIVES)


def get(name: str, **options) -> Objective:
    """The built-in objective `name` with its options (label_smoothing, target, mask).

    Raises:
      ValueError: an unknown name or option (the message lists the known ones).
    """
    if name not in _OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(names())} or "
                         "pass a function (outputs, batch) -> (losses, weights, metrics)")
    cls = _OBJECTIVES[name]
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"objective {name!r} has no option {', '.join(unknown)}; its options "
                         f"are {', '.join(known)}")
    return cls(**options)


def resolve(objective: str | Objective) -> Objective:
    """An objective from a name or a function."""
    if isinstance(objective, str):
        return get(objective)
    if not callable(objective):
        raise ValueError(f"objective must be a name ({', '.join(names())}) or a function "
                         f"(outputs, batch) -> (losses, weights, metrics), got {objective!r}")
    return objective


def evaluate(objective: Objective, outputs, batch: dict):
    """Calls `objective` and checks what it returns: (losses, weights, metrics) with losses
    and weights of one shape and every metric a (sum, count) pair."""
    result = objective(outputs, batch)
    if not (isinstance(result, tuple) and len(result) == 3 and isinstance(result[2], dict)):
        raise ValueError("an objective must return (losses, weights, metrics): per-unit losses, "
                         "their weights (0 on padding) and {name: (sum, count)}")
    losses, weights, metrics = result
    if jnp.shape(losses) != jnp.shape(weights):
        raise ValueError(f"the objective's losses {jnp.shape(losses)} and weights "
                         f"{jnp.shape(weights)} differ in shape; give one weight per unit")
    for name, value in metrics.items():
        if not (isinstance(value, tuple) and len(value) == 2):
            raise ValueError(f"metric {name!r} must be a (sum, count) pair, e.g. "
                             f"weighted_mean_metric(values, weights)")
    return losses, weights, metrics
