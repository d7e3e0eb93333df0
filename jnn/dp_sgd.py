"""DP-SGD: a train step whose gradient is the clipped, noised mean of per-example gradients.

    step = jax.jit(jnn.dp_sgd.make_dp_train_step("cross_entropy", clip_norm=1.0,
                                                 noise_multiplier=1.1))

Each real example's gradient (jnn.per_example) is clipped to L2 norm `clip_norm` with
optax's `per_example_global_norm_clip`, which also sums them; Gaussian noise of standard
deviation noise_multiplier * clip_norm is added to the sum, which is divided by the
number of real (unmasked) examples. The optimizer then applies it as usual. Padded
examples have zero gradients and are not counted. Runs under jit and sharded jit.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jnn import losses, objectives as objectives_lib
from jnn.per_example import per_example_loss_grads
from jnn.state import TrainState, as_batch


def make_dp_train_step(objective="cross_entropy", *, clip_norm: float,
                       noise_multiplier: float, l1: float = 0.0, l2: float = 0.0) -> Callable:
    """Returns `train_step(state, batch) -> (state, metrics)` for DP-SGD (metrics as in
    jnn.make_train_step).

    Args:
      clip_norm: the L2 norm each example's gradient is clipped to (> 0).
      noise_multiplier: the noise's standard deviation over clip_norm (>= 0).
      l1, l2: penalties added after the private aggregation (they depend on the
        parameters only, not on the data).
    """
    if not clip_norm > 0 or not noise_multiplier >= 0:
        raise ValueError(f"DP-SGD needs clip_norm > 0 and noise_multiplier >= 0, got {clip_norm} "
                         f"and {noise_multiplier}")
    objective = objectives_lib.resolve(objective)

    def train_step(state: TrainState, batch) -> tuple[TrainState, dict]:
        batch = as_batch(batch)
        example_rng, noise_rng = jax.random.split(jax.random.fold_in(state.rng, state.step))
        grads, loss_sums, weight_sums, metrics = per_example_loss_grads(
            state, state.params, batch, objective, example_rng)
        real = weight_sums > 0  # (B,): examples with at least one real unit
        grads = jax.tree.map(lambda g: g * real.reshape((-1,) + (1,) * (g.ndim - 1)), grads)
        clipped_sum, _ = optax.per_example_global_norm_clip(jax.tree.leaves(grads), clip_norm)
        treedef = jax.tree.structure(grads)
        keys = jax.random.split(noise_rng, treedef.num_leaves)
        count = jnp.maximum(real.sum(), 1).astype(jnp.float32)
        noisy = [(g + noise_multiplier * clip_norm * jax.random.normal(k, g.shape, g.dtype)) / count
                 for g, k in zip(clipped_sum, keys)]
        grads = jax.tree.unflatten(treedef, noisy)
        if l1 or l2:
            penalty_grads = jax.grad(losses.weight_penalty)(state.params, l1, l2)
            grads = jax.tree.map(jnp.add, grads, penalty_grads)
        metrics = {"loss": (loss_sums.sum(), weight_sums.sum()), **metrics}
        return state.apply_gradients(grads=grads), metrics

    return train_step
