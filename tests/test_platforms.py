""""On CPU, GPU or TPU": with no accelerator here, the steps are lowered for CUDA and TPU
too (jax.export), which fails on anything only the CPU backend has (a host callback, a
CPU-only custom call), and the multi-platform program run on the CPU is the jitted step."""

import jax
import numpy as np
import pytest

import jnn

PLATFORMS = ("cpu", "cuda", "tpu")


@pytest.fixture(scope="module")
def state_and_batch():
    model = jnn.models.get("cnn", num_outputs=10, batch_norm=True, dropout_rate=0.25)
    tx = jnn.make_optimizer("adam", 1e-3, clip_norm=1.0)
    state = jnn.create_train_state(model, tx, jax.random.PRNGKey(0), np.zeros((1, 8, 8, 1)))
    rng = np.random.default_rng(0)
    batch = {"x": rng.normal(size=(8, 8, 8, 1)).astype(np.float32),
             "y": rng.integers(0, 10, 8).astype(np.int32),
             "mask": np.arange(8) < 6}
    return state, batch


@pytest.mark.parametrize("which", ["train", "eval"])
def test_the_steps_lower_for_cpu_cuda_and_tpu_and_run_as_jitted(state_and_batch, which):
    state, batch = state_and_batch
    step = jnn.make_train_step() if which == "train" else jnn.make_eval_step()
    exported = jax.export.export(jax.jit(step), platforms=PLATFORMS)(state, batch)
    assert exported.platforms == PLATFORMS
    got, want = exported.call(state, batch), jax.jit(step)(state, batch)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
