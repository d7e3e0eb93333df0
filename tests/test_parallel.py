"""pmap and sharded jit (data parallel and FSDP) against the single-device step, on 8 CPU devices."""

import re

import jax
import numpy as np
import pytest

import jnn
from jnn import parallel

NUM_DEVICES = 8


def _batches(n=3, size=32, real=None, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        batch = {"x": rng.normal(size=(size, 8, 8, 1)).astype(np.float32),
                 "y": rng.integers(0, 10, size=size)}
        if real is not None and i == n - 1:  # the last batch is partial: pad it
            batch = jnn.data.pad_batch({k: v[:real] for k, v in batch.items()}, size)
        out.append(batch)
    return out


MODELS = {
    "cnn": dict(name="cnn"),
    "cnn_batchnorm": dict(name="cnn", batch_norm=True),
    "mlp_dropout": dict(name="mlp", hidden_sizes=(64,), dropout_rate=0.5),
}


def _state(model_kwargs, axis_name=None):
    kwargs = dict(model_kwargs)
    model = jnn.models.get(kwargs.pop("name"), axis_name=axis_name, **kwargs)
    tx = jnn.make_optimizer("momentum", 0.05)
    return jnn.create_train_state(model, tx, jax.random.PRNGKey(1), np.zeros((1, 8, 8, 1)))


def _single_device(model_kwargs, batches):
    state, step = _state(model_kwargs), jax.jit(jnn.make_train_step())
    metrics = []
    for b in batches:
        state, m = step(state, b)
        metrics.append(m)
    return state, jnn.sum_metrics(metrics)


def _assert_same(state_a, metrics_a, state_b, metrics_b):
    for tree_a, tree_b in ((state_a.params, state_b.params),
                           (state_a.batch_stats, state_b.batch_stats)):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                             rtol=1e-4, atol=1e-5), tree_a, tree_b)
    for key in metrics_a:
        np.testing.assert_allclose(metrics_a[key], metrics_b[key], rtol=1e-5)


def _sharded(model_kwargs, batches, fsdp=False):
    mesh = parallel.make_mesh()
    state = parallel.shard_state(_state(model_kwargs), mesh, fsdp=fsdp)
    step = parallel.jit_sharded(jnn.make_train_step(), state, mesh, fsdp=fsdp)
    metrics = []
    for b in batches:
        state, m = step(state, parallel.shard_batch(b, mesh))
        metrics.append(m)
    return state, jnn.sum_metrics(metrics)


def _pmapped(model_kwargs, batches):
    state = parallel.replicate(_state(model_kwargs, axis_name=parallel.PMAP_AXIS))
    step = parallel.pmap_train_step(jnn.make_train_step(axis_name=parallel.PMAP_AXIS))
    metrics = []
    for b in batches:
        state, m = step(state, parallel.split_batch(b))
        metrics.append(parallel.unreplicate(m))
    return parallel.unreplicate(state), jnn.sum_metrics(metrics)


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("fsdp", [False, True])
def test_sharded_jit_equals_the_single_device_step(model, fsdp):
    batches = _batches()
    _assert_same(*_single_device(MODELS[model], batches), *_sharded(MODELS[model], batches, fsdp))


def test_fsdp_splits_large_parameters_over_the_devices():
    mesh = parallel.make_mesh()
    state = parallel.shard_state(_state(MODELS["cnn"]), mesh, fsdp=True)
    kernel = state.params["Dense_0"]["kernel"]  # (288, 128)
    assert kernel.sharding.spec[0] == "data"
    assert kernel.addressable_shards[0].data.shape == (288 // NUM_DEVICES, 128)
    mu = state.opt_state[0].trace["Dense_0"]["kernel"]
    assert mu.addressable_shards[0].data.shape == (288 // NUM_DEVICES, 128)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_pmap_equals_the_single_device_step(model):
    batches = _batches()
    _assert_same(*_single_device(MODELS[model], batches), *_pmapped(MODELS[model], batches))


def test_masking_stays_exact_when_the_last_batch_is_split_over_devices():
    # 32 rows, 11 real: devices 3..7 hold only padding, device 2 a mix
    batches = _batches(real=11)
    unpadded = batches[:-1] + [{k: v[:11] for k, v in batches[-1].items() if k != "mask"}]
    expected = _single_device(MODELS["cnn"], unpadded)
    _assert_same(*expected, *_pmapped(MODELS["cnn"], batches))
    sharded_state, sharded_metrics = _sharded(MODELS["cnn"], batches)
    _assert_same(*expected, sharded_state, sharded_metrics)
    assert jnn.metrics.count(sharded_metrics) == 32 * 2 + 11
    assert float(sharded_metrics["accuracy"][1]) == 32 * 2 + 11


def test_pmap_and_sharded_eval_steps_sum_like_one_device():
    state = _state(MODELS["cnn"])
    b = _batches(n=1, real=13)[0]
    expected = jnn.make_eval_step()(state, b)
    pmapped = parallel.pmap_eval_step(jnn.make_eval_step(axis_name=parallel.PMAP_AXIS))
    got = parallel.unreplicate(pmapped(parallel.replicate(state), parallel.split_batch(b)))
    mesh = parallel.make_mesh()
    sharded = parallel.jit_sharded(jnn.make_eval_step(), state, mesh, donate=False)
    sharded_state = parallel.shard_state(state, mesh)
    got_sharded = sharded(sharded_state, parallel.shard_batch(b, mesh))
    # an eval step is never donated, even with the default donate=True (a train step is)
    default = parallel.jit_sharded(jnn.make_eval_step(), sharded_state, mesh)
    got_default = [default(sharded_state, parallel.shard_batch(b, mesh)) for _ in range(2)]
    donation = re.compile(r"jax\.buffer_donor|tf\.aliasing_output")
    assert not donation.search(default.lower(sharded_state, parallel.shard_batch(b, mesh))
                               .as_text())
    train = parallel.jit_sharded(jnn.make_train_step(), sharded_state, mesh)
    assert donation.search(train.lower(sharded_state, parallel.shard_batch(b, mesh)).as_text())
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5)
        np.testing.assert_allclose(got_sharded[key], expected[key], rtol=1e-5)
        for metrics in got_default:
            np.testing.assert_allclose(metrics[key], expected[key], rtol=1e-5)


def test_a_global_batch_that_does_not_divide_says_what_to_use():
    with pytest.raises(ValueError, match="a batch of 30 examples does not divide over 8 "
                                         "devices; use a batch size of 24 or 32"):
        parallel.split_batch({"x": np.zeros((30, 2)), "y": np.zeros(30)}, 8)


def test_process_slice_gives_each_process_a_contiguous_share():
    batch = {"x": np.arange(8)[:, None], "y": np.arange(8)}
    shares = [parallel.process_slice(batch, i, 4)["y"] for i in range(4)]
    np.testing.assert_array_equal(np.concatenate(shares), np.arange(8))
    assert [len(s) for s in shares] == [2, 2, 2, 2]


def test_donating_a_sharded_state_leaves_the_original_usable():
    state = _state(MODELS["cnn"])
    mesh = parallel.make_mesh()
    sharded = parallel.shard_state(state, mesh)
    step = parallel.jit_sharded(jnn.make_train_step(), sharded, mesh)
    step(sharded, parallel.shard_batch(_batches(n=1)[0], mesh))
    assert int(state.step) == 0 and np.isfinite(np.asarray(state.params["Dense_0"]["kernel"])).all()
