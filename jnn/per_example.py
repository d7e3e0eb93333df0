"""Per-example gradients: a vmap of grad over the examples of a batch.

    grads = jnn.per_example.per_example_grads(state, batch, "cross_entropy")  # leaves (B, ...)

Each example runs as a batch of one, with the RNG key folded with its index, so its
gradient is exactly the gradient of its own weighted loss sum (one unit per example:
its loss; a sequence: the sum over its real tokens). jnn.dp_sgd builds on this.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jnn import objectives as objectives_lib
from jnn.state import TrainState, as_batch
from jnn.step import forward


def per_example_loss_grads(state: TrainState, params, batch: dict, objective, rng):
    """(gradients with leaves (B, ...), per-example loss sums (B,), per-example weight sums
    (B,), the objective's metrics summed over the batch).

    Raises:
      ValueError: the model keeps batch statistics (they mix the examples).
    """
    if jax.tree.leaves(state.model_state):
        raise ValueError("per-example gradients need a model without batch statistics (they mix "
                         "the examples); use LayerNorm or GroupNorm instead of BatchNorm")

    def single(params, example, i):
        example = jax.tree.map(lambda x: x[None], example)
        (loss_sum, weight_sum, metrics), _, _ = forward(
            state, params, state.model_state, example, objective, train=True,
            rng=jax.random.fold_in(rng, i))
        return loss_sum, (loss_sum, weight_sum, metrics)

    size = jax.tree.leaves(batch)[0].shape[0]
    grads, (loss_sums, weight_sums, metrics) = jax.vmap(
        jax.grad(single, has_aux=True), in_axes=(None, 0, 0))(params, batch, jnp.arange(size))
    return grads, loss_sums, weight_sums, jax.tree.map(lambda x: x.sum(0), metrics)


def per_example_grads(state: TrainState, batch, objective="cross_entropy"):
    """The gradient of each example's weighted loss sum at `state.params`: a params-shaped
    pytree whose leaves have a leading (B,) axis. With one unit per example and no mask,
    their mean over the batch is the batch gradient."""
    rng = jax.random.fold_in(state.rng, state.step)
    grads, _, _, _ = per_example_loss_grads(state, state.params, as_batch(batch),
                                            objectives_lib.resolve(objective), rng)
    return grads
