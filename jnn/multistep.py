"""Several train steps in one compiled call: a `lax.scan` of the step over a stack of batches.

Each call of a jitted step costs a dispatch (about 0.3 ms on a CPU host), which rivals
the step itself for small models. `scan_steps` runs K consecutive steps inside one
program, like Keras's steps_per_execution:

    multi_step = jax.jit(jnn.multistep.scan_steps(jnn.make_train_step()), donate_argnums=0,
                         compiler_options=jnn.train_compiler_options())
    batches = jnn.multistep.stack_batches([b0, b1, b2], steps=4)   # (4, B, ...) + a pad
    state, metrics = multi_step(state, batches)                    # metrics: (4, ...) each

The K steps are the same steps, in the same order, as K calls of the single step, and
the metrics come back per step, stacked on a leading (K,) axis. A step whose batch has
no real unit (its mask is all False) is skipped as a whole: the state, its step counter
included, is left as it was and its metrics are zero. `stack_batches` pads a short
group (the end of an epoch) with such batches, so one compiled program serves every
group.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Batch = dict


def stack_batches(batches: Sequence[Batch], steps: int) -> Batch:
    """Stacks 1 to `steps` batches of one shape into (steps, B, ...) arrays, padding with
    empty batches (inputs zero, mask all False) that `scan_steps` skips.

    Every batch needs a "mask" when the group is padded (jnn.data batches have one).

    Raises:
      ValueError: more batches than `steps`, none, or a padded group without a mask.
    """
    if not 1 <= len(batches) <= steps:
        raise ValueError(f"stack_batches takes 1 to steps={steps} batches, got {len(batches)}")
    missing = steps - len(batches)
    if missing and "mask" not in batches[0]:
        raise ValueError("padding a group of steps needs a 'mask' in each batch; add "
                         "mask=np.ones(B, bool) (jnn.data.pad_batch does) or give exactly "
                         f"steps={steps} batches")
    empty = {k: np.zeros_like(v) for k, v in batches[0].items()}  # mask zeros: all False
    return {k: np.stack([np.asarray(b[k]) for b in batches] + [empty[k]] * missing)
            for k in batches[0]}


def _has_units(batch: Batch, axis_name: str | None):
    """Whether a batch holds any real unit (True without a mask)."""
    if "mask" not in batch:
        return jnp.asarray(True)
    real = jnp.any(batch["mask"]).astype(jnp.int32)
    if axis_name is not None:  # pmap: each device sees its share of the batch
        real = jax.lax.psum(real, axis_name)
    return real > 0


def scan_steps(train_step: Callable, *, axis_name: str | None = None) -> Callable:
    """Returns `multi_step(state, batches) -> (state, metrics)`: `train_step` applied to
    batches[0], batches[1], ... in one `lax.scan`.

    Args:
      train_step: `(state, batch) -> (state, metrics)`, e.g. `jnn.make_train_step()`,
        an ensemble step or a DP-SGD step.
      axis_name: the pmap axis the step reduces over (the same as the step's), so that
        every device agrees on which steps are empty; None for one device or sharded jit.

    `batches` holds each batch entry stacked on a leading (K,) axis: (K, B, ...). The
    returned metrics have the single step's structure with a leading (K,) axis; an
    empty step (mask all False) changes nothing and reports zeros.
    """

    # jitted, so that the shape query below and lax.cond share one trace of the step
    step = jax.jit(train_step)

    def multi_step(state, batches: Batch):
        one = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), batches)
        metrics_shape = jax.eval_shape(step, state, one)[1]

        def skip(state, batch):
            del batch
            return state, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metrics_shape)

        def body(state, batch):
            return jax.lax.cond(_has_units(batch, axis_name), step, skip, state, batch)

        return jax.lax.scan(body, state, batches)

    return multi_step


def unstack_metrics(metrics, steps: int) -> list:
    """The first `steps` per-step metric dicts of stacked (K, ...) host metrics."""
    return [jax.tree.map(lambda v: v[i], metrics) for i in range(steps)]
