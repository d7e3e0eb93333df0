"""One process of a two-process CPU run (used by test_distributed.py).

    python tests/distributed_worker.py PROCESS_ID PORT OUT_NPZ FSDP

Each process has 2 CPU devices; together they form one 4-device mesh over gloo
collectives. Each process feeds only its own rows of every global batch. Process 0
writes the final parameters to OUT_NPZ.
"""

import sys

import numpy as np


def batches(n=4, size=16):
    rng = np.random.default_rng(0)
    return [{"x": rng.normal(size=(size, 8, 8, 1)).astype(np.float32),
             "y": rng.integers(0, 10, size=size)} for _ in range(n)]


def initial_state():
    import jax

    import jnn

    model = jnn.models.get("cnn", batch_norm=True, dropout_rate=0.3)
    return jnn.create_train_state(model, jnn.make_optimizer("adam", 1e-2), jax.random.PRNGKey(0),
                                  np.zeros((1, 8, 8, 1), np.float32))


def train(mesh, fsdp: bool, checkpoint_path: str | None = None) -> dict:
    """A few data-parallel steps of a CNN with BatchNorm and dropout on `mesh`; the final
    parameters and each metric's sum and count as flat host arrays. With `checkpoint_path`,
    every process also takes part in saving the final state there with orbax."""
    import jax

    import jnn
    from jax.experimental import multihost_utils

    state = jnn.parallel.shard_state(initial_state(), mesh, fsdp=fsdp)
    step = jnn.parallel.jit_sharded(jnn.make_train_step(), state, mesh, fsdp=fsdp)
    metrics = []
    for batch in batches():
        local = jnn.parallel.process_slice(batch)
        state, m = step(state, jnn.parallel.shard_batch(local, mesh))
        metrics.append(m)
    leaves = jax.tree_util.tree_flatten_with_path(state.params)[0]
    out = {jax.tree_util.keystr(path): np.asarray(multihost_utils.process_allgather(x, tiled=True))
           for path, x in leaves}
    sums = jnn.sum_metrics([multihost_utils.process_allgather(m, tiled=True) for m in metrics])
    for name, (total, count) in sums.items():  # metrics are {"name": (sum, count)}
        out[f"metric/{name}/sum"], out[f"metric/{name}/count"] = total, count
    if checkpoint_path is not None:
        from train.checkpoint import save_state

        save_state(checkpoint_path, state)
    return out


def main(process_id: int, port: int, out_path: str, fsdp: bool) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    assert jax.device_count() == 4 and jax.local_device_count() == 2
    import jnn

    result = train(jnn.parallel.make_mesh(), fsdp, checkpoint_path=out_path + ".checkpoint")
    if jax.process_index() == 0:
        np.savez(out_path, **result)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1")
