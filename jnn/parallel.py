"""Data parallelism: pmap, and jax.jit with a device Mesh and NamedSharding (the primary path).

Sharded jit (recommended; works on one process or many):

    mesh = jnn.parallel.make_mesh()                      # all devices, axis "data"
    state = jnn.parallel.create_sharded_train_state(module, tx, rng, sample, mesh, fsdp=True)
    step = jnn.parallel.jit_sharded(jnn.make_train_step(), state, mesh, fsdp=True)
    state, metrics = step(state, jnn.parallel.shard_batch(batch, mesh))

The step is the single-device step: XLA partitions it over the mesh from the
shardings, so its results equal a single-device run on the same global batches.
With `fsdp=True` parameters and optimizer state are also split over the devices, and
`create_sharded_train_state` creates them split: no device ever holds the whole state.

pmap (offered because users ask for it; since JAX 0.8 it is jit(shard_map) and in
maintenance mode):

    step = jnn.parallel.pmap_train_step(jnn.make_train_step(axis_name="batch"))
    state, metrics = step(jnn.parallel.replicate(state), jnn.parallel.split_batch(batch))
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jnn.compiler_options import (eval_compiler_options, init_compiler_options,
                                  train_compiler_options)

DATA_AXIS = "data"
PMAP_AXIS = "batch"


# ------------------------------------------------------------------------- pmap
def replicate(tree, devices: Sequence[jax.Device] | None = None):
    """Copies every leaf onto each local device: leaves gain a leading (num_devices,) axis."""
    devices = list(devices or jax.local_devices())
    sharding = NamedSharding(Mesh(np.asarray(devices), (PMAP_AXIS,)), P(PMAP_AXIS))
    return jax.tree.map(
        lambda x: jax.device_put(np.broadcast_to(np.asarray(x), (len(devices), *np.shape(x))),
                                 sharding), tree)


def unreplicate(tree):
    """The first replica of a replicated pytree (the inverse of `replicate`)."""
    return jax.tree.map(lambda x: x[0], tree)


def split_batch(batch: dict, num_devices: int | None = None, *, batch_axis: int = 0) -> dict:
    """(B, ...) host arrays -> (num_devices, B / num_devices, ...) for pmap.

    With `batch_axis=1` (a stack of batches for jnn.multistep, (K, B, ...)), the result
    is (num_devices, K, B / num_devices, ...).

    Raises:
      ValueError: B does not divide over the devices (the message gives the nearest
        batch sizes that do).
    """
    n = num_devices or jax.local_device_count()
    size = _batch_size(batch, batch_axis)
    check_divisible(size, n)

    def split(v):
        shape = np.shape(v)
        v = np.reshape(v, (*shape[:batch_axis], n, size // n, *shape[batch_axis + 1:]))
        return np.moveaxis(v, batch_axis, 0)

    return {k: split(v) for k, v in batch.items()}


def _batch_size(batch: dict, batch_axis: int) -> int:
    return int(np.shape(jax.tree.leaves(batch)[0])[batch_axis])


def nearest_divisible_sizes(batch_size: int, num_devices: int) -> list[int]:
    """The batch sizes next to `batch_size` (below and above) that divide over the devices."""
    lower = batch_size - batch_size % num_devices
    return [n for n in (lower, lower + num_devices) if n > 0]


def check_divisible(batch_size: int, num_devices: int) -> None:
    """Raises a one-line ValueError unless the global batch splits evenly over the devices."""
    if batch_size % num_devices:
        sizes = " or ".join(map(str, nearest_divisible_sizes(batch_size, num_devices)))
        raise ValueError(f"a batch of {batch_size} examples does not divide over {num_devices} "
                         f"devices; use a batch size of {sizes}")


def pmap_train_step(train_step: Callable, axis_name: str = PMAP_AXIS) -> Callable:
    """jax.pmap of a step built with `make_train_step(axis_name=axis_name)`; donates the state."""
    return jax.pmap(train_step, axis_name=axis_name, donate_argnums=0)


def pmap_eval_step(eval_step: Callable, axis_name: str = PMAP_AXIS) -> Callable:
    """jax.pmap of a step built with `make_eval_step(axis_name=axis_name)`."""
    return jax.pmap(eval_step, axis_name=axis_name)


# ------------------------------------------------------------------ sharded jit
def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis "data" over `devices` (default: every device of every process)."""
    devices = np.asarray(devices if devices is not None else jax.devices())
    return Mesh(devices, (DATA_AXIS,))


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """The batch axis (the leading one; 1 for a (K, B, ...) stack of batches) split over
    "data"; the rest replicated."""
    return NamedSharding(mesh, P(*[None] * batch_axis, DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _fsdp_spec(shape: tuple[int, ...], num_devices: int, min_size: int) -> P:
    # Split the largest axis that divides evenly; small arrays stay replicated.
    if int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % num_devices == 0:
            spec = [None] * len(shape)
            spec[axis] = DATA_AXIS
            return P(*spec)
    return P()


def state_shardings(state, mesh: Mesh, *, fsdp: bool = False, min_size: int = 2 ** 12):
    """Shardings for every leaf of a train state: replicated, or with `fsdp` the params and
    optimizer state split over "data" along their largest evenly divisible axis (arrays
    under `min_size` elements stay replicated)."""
    n = mesh.devices.size

    def spec(x):
        shape = np.shape(x)  # arrays, shape structs and plain numbers alike
        return NamedSharding(mesh, _fsdp_spec(shape, n, min_size) if fsdp else P())

    return jax.tree.map(spec, state)


def shard_state(state, mesh: Mesh, *, fsdp: bool = False):
    """Places a (host or single-device) train state on the mesh; see `state_shardings`.

    The result never shares buffers with `state`, so donating it to a sharded step
    leaves `state` usable.
    """
    # device_put(..., may_alias=False) still shared device 0's buffer with a replicated
    # placement in jax 0.10.2, so copy device arrays first.
    private = jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x, state)
    return jax.device_put(private, state_shardings(state, mesh, fsdp=fsdp))


def shard_batch(local_batch: dict, mesh: Mesh, *, batch_axis: int = 0) -> dict:
    """Makes global arrays split over "data" from this process's rows of the global batch.

    On one process `local_batch` is the whole batch. With several processes each passes
    its own contiguous slice (process p holds rows p*b .. p*b + b - 1, see
    `process_slice`), and the result is the global batch of all processes. `batch_axis`
    is 1 for a (K, B, ...) stack of batches (jnn.multistep).
    """
    sharding = batch_sharding(mesh, batch_axis)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local_batch.items()}


def process_slice(global_batch: dict, process_index: int | None = None,
                  process_count: int | None = None, *, batch_axis: int = 0) -> dict:
    """This process's contiguous share of a global host batch (all of it on one process);
    the rows are taken along `batch_axis` (1 for a (K, B, ...) stack of batches)."""
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    size = _batch_size(global_batch, batch_axis)
    check_divisible(size, count)
    per = size // count
    rows = (slice(None),) * batch_axis + (slice(index * per, (index + 1) * per),)
    return {k: v[rows] for k, v in global_batch.items()}


def create_sharded_train_state(module, tx, rng, sample, mesh: Mesh, *, fsdp: bool = False,
                               **create_options):
    """`jnn.create_train_state(...)` created directly with the shardings of
    `state_shardings(..., fsdp=fsdp)`: one compiled program whose outputs are already
    split over the mesh, so no device ever holds the whole (FSDP) state.

    The state's shape comes from `jax.eval_shape`, which runs nothing.
    """
    from jnn.state import create_train_state

    sample = jax.tree.map(np.asarray, sample)

    def create(key):
        return create_train_state(module, tx, key, sample, **create_options)

    shardings = state_shardings(jax.eval_shape(create, rng), mesh, fsdp=fsdp)
    platform = mesh.devices.flat[0].platform
    return jax.jit(create, out_shardings=shardings,
                   compiler_options=init_compiler_options(platform))(rng)


class ShardedStep:
    """A step jitted with explicit shardings (see `jit_sharded`); lowers on first use.

    What the step returns tells a train step `(state, batch) -> (state, metrics)` from an
    eval step `(state, batch) -> metrics`. A train step donates the state (when `donate`).
    Each is compiled with jnn's compiler options for the mesh's platform and its own
    program (`jnn.train_compiler_options` / `jnn.eval_compiler_options`, given the jaxpr
    of the one trace that also gives the step's output structure).
    """

    def __init__(self, step: Callable, shardings, mesh: Mesh, donate: bool, batch_axis: int):
        self._step, self._shardings, self._mesh, self._donate = step, shardings, mesh, donate
        self._batch_axis = batch_axis
        self._jitted = None

    def _build(self, state, batch):
        jaxpr, out = jax.make_jaxpr(self._step, return_shape=True)(state, batch)
        returns_state = (isinstance(out, tuple) and len(out) == 2
                         and jax.tree.structure(out[0]) == jax.tree.structure(state))
        in_shardings = (self._shardings, batch_sharding(self._mesh, self._batch_axis))
        platform = self._mesh.devices.flat[0].platform
        if returns_state:
            self._jitted = jax.jit(self._step, in_shardings=in_shardings,
                                   out_shardings=(self._shardings, replicated(self._mesh)),
                                   donate_argnums=0 if self._donate else (),
                                   compiler_options=train_compiler_options(platform, jaxpr=jaxpr))
        else:
            self._jitted = jax.jit(self._step, in_shardings=in_shardings,
                                   out_shardings=replicated(self._mesh),
                                   compiler_options=eval_compiler_options(platform, jaxpr=jaxpr))
        return self._jitted

    def _jit(self, state, batch):
        return self._build(state, batch) if self._jitted is None else self._jitted

    def trace(self, state, batch):
        return self._jit(state, batch).trace(state, batch)

    def lower(self, state, batch):
        return self._jit(state, batch).lower(state, batch)

    def __call__(self, state, batch):
        return self._jit(state, batch)(state, batch)


def jit_sharded(step: Callable, state, mesh: Mesh, *, fsdp: bool = False,
                donate: bool = True, batch_axis: int = 0) -> ShardedStep:
    """jax.jit of a single-device step `(state, batch) -> (state, metrics)` or
    `(state, batch) -> metrics` with explicit shardings: state as `state_shardings`,
    batch split over "data" along `batch_axis` (1 for jnn.multistep's (K, B, ...)
    stacks), metrics replicated. A train step donates the state when `donate`; each step
    is compiled with jnn's compiler options for its program (see `ShardedStep`)."""
    return ShardedStep(step, state_shardings(state, mesh, fsdp=fsdp), mesh, donate, batch_axis)
