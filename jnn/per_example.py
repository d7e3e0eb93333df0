"""Per-example gradients (vmap of grad) and DP-SGD built on them.

    grads = jnn.per_example.per_example_grads(state, batch, "cross_entropy")  # leaves (B, ...)

DP-SGD: `make_train_step(..., dp_clip_norm=C, dp_noise_multiplier=s)` clips each
example's gradient to L2 norm C, sums over the real (unmasked) examples, adds
N(0, (s*C)^2) noise and divides by the number of real examples; the optimizer then
applies that gradient as usual.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jnn.state import TrainState


def per_example_loss_grads(apply_fn, params, batch_stats, x, y, loss_fn, rng):
    """(per-example gradients with leaves (B, ...), per-example losses (B,), outputs (B, ...)).

    Each example is run as a batch of one, with dropout keyed by its index, so its
    gradient is exactly the gradient of its own loss.
    """
    if batch_stats:
        raise ValueError("per-example gradients need a model without BatchNorm (its statistics "
                         "mix the examples); use LayerNorm or GroupNorm instead")

    def single(params, x_i, y_i, i):
        outputs = apply_fn({"params": params}, x_i[None], train=True,
                           rngs={"dropout": jax.random.fold_in(rng, i)})
        loss = loss_fn(outputs, y_i[None])[0]
        return loss, (loss, outputs[0])

    grads, (per_loss, outputs) = jax.vmap(
        jax.grad(single, has_aux=True), in_axes=(None, 0, 0, 0))(params, x, y,
                                                                 jnp.arange(x.shape[0]))
    return grads, per_loss, outputs


def per_example_grads(state: TrainState, batch: dict, loss="cross_entropy"):
    """The gradient of each example's loss at `state.params`: a params-shaped pytree whose
    leaves have a leading (B,) axis. Their mean over the batch is the batch gradient."""
    from jnn.step import resolve_loss

    loss_fn, _ = resolve_loss(loss, None, 0.0)
    rng = jax.random.fold_in(state.rng, state.step)
    grads, _, _ = per_example_loss_grads(state.apply_fn, state.params, state.batch_stats,
                                         batch["x"], batch["y"], loss_fn, rng)
    return grads


def clip_and_noise(grads, mask, *, clip_norm: float, noise_multiplier: float, rng):
    """DP-SGD aggregation of per-example gradients (leaves (B, ...)) -> the noisy mean gradient.

    Each example's gradient is scaled to L2 norm at most `clip_norm`; masked-out examples
    contribute nothing; Gaussian noise of std noise_multiplier * clip_norm is added to the
    sum, which is divided by the number of real examples.
    """
    leaves = jax.tree.leaves(grads)
    batch = leaves[0].shape[0]
    norms = jnp.sqrt(sum((g.reshape(batch, -1) ** 2).sum(1) for g in leaves))  # (B,)
    weights = jnp.minimum(1.0, clip_norm / jnp.maximum(norms, 1e-12))
    if mask is not None:
        weights = weights * mask.astype(weights.dtype)
    count = jnp.maximum(1.0, batch if mask is None else mask.sum())
    treedef = jax.tree.structure(grads)
    keys = jax.tree.unflatten(treedef, list(jax.random.split(rng, len(leaves))))

    def aggregate(g, key):
        total = jnp.tensordot(weights, g, axes=1)
        noise = noise_multiplier * clip_norm * jax.random.normal(key, total.shape, total.dtype)
        return (total + noise) / count

    return jax.tree.map(aggregate, grads, keys)
