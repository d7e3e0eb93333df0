"""Several steps per compiled call (jnn.multistep) against the same steps called one by one,
on one device, sharded jit, pmap and an ensemble."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jnn
from jnn import multistep, parallel


def _batches(n, size=32, real_in_last=None, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        batch = {"x": rng.normal(size=(size, 8, 8, 1)).astype(np.float32),
                 "y": rng.integers(0, 10, size=size)}
        real = real_in_last if (real_in_last is not None and i == n - 1) else size
        out.append(jnn.data.pad_batch({k: v[:real] for k, v in batch.items()}, size))
    return out


def _state(model="mlp", axis_name=None, **kwargs):
    module = jnn.models.get(model, axis_name=axis_name, **kwargs)
    return jnn.create_train_state(module, optax.adam(1e-2), jax.random.PRNGKey(0),
                                  np.zeros((1, 8, 8, 1), np.float32))


def _close(a, b, rtol=1e-6, atol=1e-6):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=rtol, atol=atol), a, b)


def _one_by_one(state, batches, step=None):
    step = jax.jit(step or jnn.make_train_step())
    metrics = []
    for b in batches:
        state, m = step(state, b)
        metrics.append(m)
    return state, metrics


MODELS = {"mlp_dropout": dict(model="mlp", hidden_sizes=(32,), dropout_rate=0.3),
          "cnn_batchnorm": dict(model="cnn", batch_norm=True)}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_scanned_steps_equal_the_same_steps_one_by_one(model):
    batches = _batches(5, real_in_last=11)  # dropout keys, BatchNorm statistics, a padded batch
    state = _state(**MODELS[model])
    expected, expected_metrics = _one_by_one(state, batches)
    multi = jax.jit(multistep.scan_steps(jnn.make_train_step()))
    got, metrics = state, []
    for group in (batches[:3], batches[3:]):  # 3 + 2 steps, the second group padded
        got, m = multi(got, multistep.stack_batches(group, steps=3))
        metrics += multistep.unstack_metrics(jax.device_get(m), len(group))
    assert int(got.step) == 5
    _close(got.params, expected.params)
    _close(got.model_state, expected.model_state)
    _close(got.opt_state, expected.opt_state)
    _close(metrics, jax.device_get(expected_metrics))


def test_an_empty_step_changes_nothing_and_reports_zeros():
    state = _state()
    batch = _batches(1)[0]
    empty = {**batch, "mask": np.zeros(32, bool)}
    after, metrics = jax.jit(multistep.scan_steps(jnn.make_train_step()))(
        state, multistep.stack_batches([batch, empty, batch], steps=3))
    expected, _ = _one_by_one(state, [batch, batch])
    _close(after, expected)  # the step counter and Adam's moments skipped the empty step
    assert int(after.step) == 2
    assert np.asarray(metrics["loss"][1]).tolist() == [32, 0, 32]
    assert float(metrics["loss"][0][1]) == 0.0 and float(metrics["accuracy"][0][1]) == 0.0


def test_stacked_batches_are_padded_with_masked_empty_batches_and_refused_when_they_cannot():
    batches = _batches(2)
    stacked = multistep.stack_batches(batches, steps=4)
    assert stacked["x"].shape == (4, 32, 8, 8, 1) and stacked["y"].shape == (4, 32)
    np.testing.assert_array_equal(stacked["x"][1], batches[1]["x"])
    assert stacked["mask"][:2].all() and not stacked["mask"][2:].any()
    with pytest.raises(ValueError, match="takes 1 to steps=1 batches, got 2"):
        multistep.stack_batches(batches, steps=1)
    no_mask = [{"x": b["x"], "y": b["y"]} for b in batches]
    message = ("padding a group of steps needs a 'mask' in each batch; add mask=np.ones(B, "
               "bool) (jnn.data.pad_batch does) or give exactly steps=3 batches")
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        multistep.stack_batches(no_mask, steps=3)
    assert multistep.stack_batches(no_mask, steps=2)["x"].shape[0] == 2


def test_batches_without_a_mask_all_run_and_metrics_keep_their_dtype():
    def counting_step(state, batch):  # a step of your own, with an integer metric
        new_state, metrics = jnn.make_train_step()(state, batch)
        return new_state, {**metrics, "rows": (jnp.int32(batch["y"].shape[0]), jnp.int32(1))}

    batches = [{"x": b["x"], "y": b["y"]} for b in _batches(3)]
    state = _state()
    got, metrics = jax.jit(multistep.scan_steps(counting_step))(
        state, multistep.stack_batches(batches, steps=3))
    assert int(got.step) == 3
    assert metrics["rows"][0].dtype == jnp.int32 and metrics["rows"][0].tolist() == [32] * 3
    _close(got.params, _one_by_one(state, batches)[0].params)


@pytest.mark.parametrize("fsdp", [False, True])
def test_scanned_steps_under_sharded_jit_equal_one_device(fsdp):
    batches = _batches(4, real_in_last=5)
    state = _state("cnn", batch_norm=True)
    expected, expected_metrics = _one_by_one(state, batches)
    mesh = parallel.make_mesh()
    sharded = parallel.shard_state(state, mesh, fsdp=fsdp)
    multi = parallel.jit_sharded(multistep.scan_steps(jnn.make_train_step()), sharded, mesh,
                                 fsdp=fsdp, batch_axis=1)
    stacked = multistep.stack_batches(batches, steps=4)
    placed = parallel.shard_batch(parallel.process_slice(stacked, batch_axis=1), mesh,
                                  batch_axis=1)
    assert placed["x"].sharding.spec == jax.sharding.PartitionSpec(None, "data")
    got, metrics = multi(sharded, placed)
    _close(jax.device_get(got.params), expected.params, rtol=1e-5, atol=1e-6)
    _close(multistep.unstack_metrics(jax.device_get(metrics), 4),
           jax.device_get(expected_metrics), rtol=1e-5, atol=1e-5)


def test_scanned_steps_under_pmap_equal_one_device_and_agree_on_empty_steps():
    # the last real batch has 5 examples: on 8 devices, most devices see only padding
    batches = _batches(3, real_in_last=5)
    axis = parallel.PMAP_AXIS
    state = _state("cnn", batch_norm=True)
    expected, expected_metrics = _one_by_one(state, batches)
    pstate = parallel.replicate(_state("cnn", axis_name=axis, batch_norm=True))
    multi = parallel.pmap_train_step(
        multistep.scan_steps(jnn.make_train_step(axis_name=axis), axis_name=axis))
    stacked = multistep.stack_batches(batches, steps=4)
    split = parallel.split_batch(stacked, batch_axis=1)
    assert split["x"].shape == (8, 4, 4, 8, 8, 1)
    np.testing.assert_array_equal(split["x"][1, 2], stacked["x"][2, 4:8])
    got, metrics = multi(pstate, split)
    for leaf in jax.tree.leaves(got.params):  # every device ran every step: replicas agree
        np.testing.assert_array_equal(np.asarray(leaf), np.broadcast_to(leaf[0], leaf.shape))
    got = parallel.unreplicate(got)
    assert int(got.step) == 3
    _close(got.params, expected.params, rtol=1e-5, atol=1e-6)
    _close(multistep.unstack_metrics(jax.device_get(parallel.unreplicate(metrics)), 3),
           jax.device_get(expected_metrics), rtol=1e-5, atol=1e-5)


def test_scanned_steps_of_an_ensemble_equal_its_steps_one_by_one():
    module, tx = jnn.models.get("mlp", hidden_sizes=(16,)), optax.sgd(0.1)
    state = jnn.ensemble.create_ensemble_state(module, tx, [0, 1, 2],
                                               {"x": np.zeros((1, 8, 8, 1), np.float32)})
    step = jnn.ensemble.ensemble_step(jnn.make_train_step())
    batches = _batches(3, real_in_last=7)
    expected, expected_metrics = _one_by_one(state, batches, step)
    got, metrics = jax.jit(multistep.scan_steps(step))(state,
                                                       multistep.stack_batches(batches, steps=4))
    _close(got.params, expected.params)
    assert np.asarray(metrics["loss"][1]).shape == (4, 3)  # (steps, members)
    _close(multistep.unstack_metrics(jax.device_get(metrics), 3), jax.device_get(expected_metrics))


def test_a_second_call_of_the_scanned_steps_does_not_recompile(compile_counter):
    state = _state()
    multi = jax.jit(multistep.scan_steps(jnn.make_train_step()), donate_argnums=0)
    state, _ = multi(state, multistep.stack_batches(_batches(2), steps=2))
    compile_counter.counting = True
    state, _ = multi(state, multistep.stack_batches(_batches(1), steps=2))
    assert compile_counter.count == 0


def test_the_step_is_traced_once_per_compile():
    traces = []
    step = jnn.make_train_step()

    def counted(state, batch):
        traces.append(1)
        return step(state, batch)

    state = _state()
    jax.jit(multistep.scan_steps(counted)).lower(state, multistep.stack_batches(_batches(2), 3))
    assert len(traces) == 1
