"""Per-example losses, masked reductions and weight penalties, built on optax.losses.

Every loss here returns one value per example, shape (B,), so that the step can weight
it by a mask and sum it exactly across batches and devices.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def _mean_over_trailing(x: jax.Array) -> jax.Array:
    return x.reshape((x.shape[0], -1)).mean(axis=1) if x.ndim > 1 else x


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array,
                          label_smoothing: float = 0.0) -> jax.Array:
    """Cross-entropy of (B, K) logits against integer (B,) or one-hot (B, K) labels -> (B,)."""
    num_classes = logits.shape[-1]
    if labels.ndim == logits.ndim - 1:
        if label_smoothing == 0.0:
            return optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)
        labels = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
    elif labels.shape != logits.shape:
        raise ValueError(
            f"labels of shape {labels.shape} do not fit logits of shape {logits.shape}; "
            "pass integer labels (B,) or one-hot labels (B, K)")
    if label_smoothing:
        labels = optax.smooth_labels(labels, label_smoothing)
    return optax.losses.softmax_cross_entropy(logits, labels)


def mean_squared_error(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """Squared error averaged over all but the batch axis: (B, ...) -> (B,).

    A (B,) target against (B, 1) predictions is accepted and reshaped.
    """
    targets = targets.reshape(predictions.shape).astype(predictions.dtype)
    return _mean_over_trailing(optax.losses.squared_error(predictions, targets))


def binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Sigmoid cross-entropy of logits against 0/1 labels, averaged per example -> (B,)."""
    labels = labels.reshape(logits.shape).astype(logits.dtype)
    return _mean_over_trailing(optax.losses.sigmoid_binary_cross_entropy(logits, labels))


_LOSSES: dict[str, LossFn] = {
    "cross_entropy": softmax_cross_entropy,
    "mse": mean_squared_error,
    "binary_cross_entropy": binary_cross_entropy,
}


def loss_names() -> list[str]:
    """The names `get_loss` accepts."""
    return sorted(_LOSSES)


def get_loss(name: str, **kwargs) -> LossFn:
    """Returns the per-example loss `name`, with keyword options bound (e.g. label_smoothing).

    Raises:
      ValueError: unknown name; the message lists the known ones.
    """
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(loss_names())}")
    fn = _LOSSES[name]
    if not kwargs:
        return fn
    return lambda outputs, labels: fn(outputs, labels, **kwargs)


def masked_sum(per_example: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """(sum of per_example over kept examples, number kept); mask is (B,) bool or None."""
    if mask is None:
        return per_example.sum(), jnp.asarray(per_example.shape[0], jnp.float32)
    weights = mask.astype(per_example.dtype)
    return (per_example * weights).sum(), weights.sum()


def l1_penalty(params) -> jax.Array:
    """Sum of absolute values of every parameter array whose rank is > 1 (kernels, not biases)."""
    leaves = [p for p in jax.tree.leaves(params) if p.ndim > 1]
    return sum((jnp.abs(p).sum() for p in leaves), jnp.zeros(()))


def l2_penalty(params) -> jax.Array:
    """Half the sum of squares of every parameter array whose rank is > 1 (kernels, not biases)."""
    leaves = [p for p in jax.tree.leaves(params) if p.ndim > 1]
    return 0.5 * sum(((p ** 2).sum() for p in leaves), jnp.zeros(()))
