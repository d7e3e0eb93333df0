"""jnn.models.BatchNorm against flax.linen.BatchNorm on one device, its statistics under pmap
when the padding of a batch is spread unevenly over the devices, and batches or microbatches
that hold only padding."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jnn
from jnn import parallel

NUM_DEVICES = 8


def _close(a, b, rtol=1e-5, atol=1e-6):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v),
                                                         rtol=rtol, atol=atol), a, b)


def _x(shape=(32, 6, 6, 4), seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * 3 + 1).astype(np.float32)


@pytest.mark.parametrize("masked", [False, True])
def test_batchnorm_equals_flax_batchnorm_on_one_device(masked):
    x = _x()
    mask = np.arange(32) < 19 if masked else None
    flax_mask = None if mask is None else np.broadcast_to(mask[:, None, None, None], x.shape)
    ours, theirs = jnn.models.BatchNorm(False, momentum=0.8), nn.BatchNorm(False, momentum=0.8)
    variables = theirs.init(jax.random.PRNGKey(0), x)
    assert jax.tree.map(np.shape, ours.init(jax.random.PRNGKey(0), x)) == jax.tree.map(
        np.shape, variables)  # the same variables: checkpoints carry over
    variables = {"params": {"scale": jnp.linspace(0.5, 2, 4), "bias": jnp.arange(4.0)},
                 "batch_stats": {"mean": jnp.ones(4), "var": jnp.full(4, 2.0)}}
    y, stats = ours.apply(variables, x, mask=mask, mutable=["batch_stats"])
    y_flax, stats_flax = theirs.apply(variables, x, mask=flax_mask, mutable=["batch_stats"])
    _close(y, y_flax)
    _close(stats, stats_flax)
    evaluating = jnn.models.BatchNorm(True), nn.BatchNorm(True)
    _close(evaluating[0].apply(variables, x), evaluating[1].apply(variables, x))
    if masked:  # padded rows change nothing, whatever they hold
        noisy = x.copy()
        noisy[19:] = 1e6
        _close(ours.apply(variables, noisy, mask=mask, mutable=["batch_stats"])[1], stats)


def test_batchnorm_keeps_the_compute_dtype():
    x = jnp.asarray(_x(), jnp.bfloat16)
    layer = jnn.models.BatchNorm(False)
    variables = layer.init(jax.random.PRNGKey(0), x)
    y, stats = layer.apply(variables, x, mutable=["batch_stats"])
    assert y.dtype == jnp.float32  # float32 parameters promote, as in flax
    bf16 = jax.tree.map(lambda v: v.astype(jnp.bfloat16), variables["params"])
    y16, _ = layer.apply({**variables, "params": bf16}, x, mutable=["batch_stats"])
    assert y16.dtype == jnp.bfloat16
    assert stats["batch_stats"]["mean"].dtype == jnp.float32
    y_asked = jnn.models.BatchNorm(False, dtype=jnp.bfloat16).apply(variables, _x(),
                                                                    mutable=["batch_stats"])[0]
    assert y_asked.dtype == jnp.bfloat16


def test_a_batch_of_padding_only_stores_no_statistics_and_stays_finite():
    layer = jnn.models.BatchNorm(False)
    variables = layer.init(jax.random.PRNGKey(0), _x())
    y, stats = layer.apply(variables, _x(), mask=np.zeros(32, bool), mutable=["batch_stats"])
    _close(stats["batch_stats"], variables["batch_stats"], rtol=0, atol=0)
    assert np.isfinite(np.asarray(y)).all()


def test_a_mask_that_is_not_one_flag_per_row_is_refused_with_the_fix():
    x = _x()
    with pytest.raises(ValueError, match=r"mask marks rows: shape \(32,\), got \(32, 6, 6, 4\); "
                       r"pass mask\[:, 0\]"):
        jnn.models.BatchNorm(False).init(jax.random.PRNGKey(0), x, mask=np.ones(x.shape, bool))


def test_microbatches_of_padding_only_change_neither_statistics_nor_parameters():
    # 16 rows, 8 real, 4 slices: slices 3 and 4 are padding only; the step must equal
    # two slices over the 8 real rows (BatchNorm sees the same slices, in the same order)
    rng = np.random.default_rng(4)
    real = {"x": rng.normal(size=(8, 8, 8, 1)).astype(np.float32),
            "y": rng.integers(0, 10, size=8)}
    padded = jnn.data.pad_batch(real, 16)
    model = jnn.models.get("cnn", batch_norm=True)
    state = jnn.create_train_state(model, optax.sgd(0.1), jax.random.PRNGKey(0), real["x"][:1])
    got, metrics = jax.jit(jnn.make_train_step(microbatches=4))(state, padded)
    expected, expected_metrics = jax.jit(jnn.make_train_step(microbatches=2))(
        state, {**real, "mask": np.ones(8, bool)})
    assert np.isfinite(np.asarray(jax.tree.leaves(got.params)[0])).all()
    _close(got.params, expected.params)
    _close(got.model_state, expected.model_state)
    _close(metrics, expected_metrics)


def _pmapped_statistics(x, mask):
    layer = jnn.models.BatchNorm(False, axis_name="i")
    variables = layer.init(jax.random.PRNGKey(0), x[:1])
    n = NUM_DEVICES
    split = lambda v: v.reshape((n, v.shape[0] // n) + v.shape[1:])  # noqa: E731
    run = jax.pmap(lambda v, m: layer.apply(variables, v, mask=m, mutable=["batch_stats"]),
                   axis_name="i", in_axes=(0, 0))
    y, stats = run(split(x), split(mask))
    return y.reshape(x.shape), jax.tree.map(lambda s: s[0], stats), variables


def test_pmap_statistics_are_those_of_the_real_rows_of_the_global_batch():
    # 32 rows over 8 devices, 11 real: devices 3..7 hold only padding, device 2 a mix
    x, mask = _x(), np.arange(32) < 11
    y, stats, variables = _pmapped_statistics(x, mask)
    layer = jnn.models.BatchNorm(False)
    y_one, stats_one = layer.apply(variables, x[:11], mutable=["batch_stats"])
    _close(stats, stats_one)
    _close(y[:11], y_one, rtol=1e-5, atol=1e-5)
    assert np.isfinite(np.asarray(jax.tree.leaves(stats))).all()


def test_a_cnn_with_batchnorm_under_pmap_trains_like_one_device_on_a_padded_batch():
    rng = np.random.default_rng(1)
    batch = jnn.data.pad_batch({"x": rng.normal(size=(5, 8, 8, 1)).astype(np.float32),
                                "y": rng.integers(0, 10, size=5)}, 32)
    sample = np.zeros((1, 8, 8, 1), np.float32)
    axis = parallel.PMAP_AXIS
    make = lambda **kw: jnn.create_train_state(  # noqa: E731
        jnn.models.get("cnn", batch_norm=True, **kw), optax.sgd(0.1), jax.random.PRNGKey(0),
        sample)
    one, metrics_one = jax.jit(jnn.make_train_step())(make(), batch)
    step = parallel.pmap_train_step(jnn.make_train_step(axis_name=axis))
    many, metrics = step(parallel.replicate(make(axis_name=axis)), parallel.split_batch(batch))
    _close(parallel.unreplicate(many.params), one.params, rtol=1e-4, atol=1e-6)
    _close(parallel.unreplicate(many.model_state), one.model_state)
    _close(parallel.unreplicate(metrics), metrics_one, rtol=1e-5)


class _DeviceUnawareNet(nn.Module):  # BatchNorm without axis_name: each device its own rows
    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        x = nn.Dense(4)(x.reshape((x.shape[0], -1)))
        rows = None if mask is None else mask[:, None]
        return nn.BatchNorm(use_running_average=not train, momentum=0.0)(x, mask=rows)


@pytest.mark.parametrize("unit_weight", [1.0, 0.05])  # 0.05: weights that sum to under 1
def test_pmap_weights_each_devices_statistics_by_its_real_rows(unit_weight):
    # momentum 0: the stored statistics are the batch's. Devices 0-1 hold 4 real rows
    # each, device 2 holds 3, the rest only padding (whose statistics are 0/0).
    rng = np.random.default_rng(2)
    x = rng.normal(size=(32, 3)).astype(np.float32) + np.repeat(np.arange(8.0), 4)[:, None]
    mask = np.arange(32) < 11

    def loss(outputs, batch):
        losses = jnp.square(outputs).mean(-1)
        return losses, unit_weight * jnn.objectives.unit_weights(batch, losses.shape), {}

    state = jnn.create_train_state(_DeviceUnawareNet(), optax.sgd(0.0), jax.random.PRNGKey(0),
                                   x[:1])
    step = parallel.pmap_train_step(jnn.make_train_step(loss, axis_name=parallel.PMAP_AXIS))
    new, _ = step(parallel.replicate(state), parallel.split_batch({"x": x, "mask": mask}))
    stats = jax.device_get(parallel.unreplicate(new.model_state))["batch_stats"]["BatchNorm_0"]

    hidden = x @ np.asarray(state.params["Dense_0"]["kernel"]) + np.asarray(
        state.params["Dense_0"]["bias"])
    devices = [hidden[0:4], hidden[4:8], hidden[8:11]]
    weights = np.array([4, 4, 3]) / 11
    np.testing.assert_allclose(stats["mean"], hidden[:11].mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats["var"], sum(w * d.var(0) for w, d in zip(weights, devices)),
                               rtol=1e-4, atol=1e-5)


class _CountingNet(nn.Module):  # an integer model state: the batches seen in training
    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        seen = self.variable("counters", "batches", lambda: jnp.zeros((), jnp.int32))
        if train and not self.is_initializing():
            seen.value = seen.value + 1
        x = nn.Dense(4)(x.reshape((x.shape[0], -1)))
        rows = None if mask is None else mask[:, None]
        return nn.BatchNorm(use_running_average=not train, momentum=0.0)(x, mask=rows)


def _pmap_step_on(x, mask):
    def loss(outputs, batch):
        losses = jnp.square(outputs).mean(-1)
        return losses, jnn.objectives.unit_weights(batch, losses.shape), {}

    state = jnn.create_train_state(_CountingNet(), optax.sgd(0.0), jax.random.PRNGKey(0),
                                   x[:1])
    step = parallel.pmap_train_step(jnn.make_train_step(loss, axis_name=parallel.PMAP_AXIS))
    new, _ = step(parallel.replicate(state), parallel.split_batch({"x": x, "mask": mask}))
    return state, jax.device_get(new.model_state)


def test_pmap_keeps_an_integer_model_state_an_integer():
    x = np.random.default_rng(5).normal(size=(32, 3)).astype(np.float32)
    _, model_state = _pmap_step_on(x, np.arange(32) < 13)
    seen = model_state["counters"]["batches"]
    assert seen.dtype == np.int32 and seen.tolist() == [1] * NUM_DEVICES


def test_pmap_statistics_of_a_single_real_row_are_that_rows():
    x = np.random.default_rng(6).normal(size=(32, 3)).astype(np.float32)
    state, model_state = _pmap_step_on(x, np.arange(32) == 0)  # devices 1-7: padding only
    stats = jax.tree.map(lambda s: s[0], model_state["batch_stats"]["BatchNorm_0"])
    hidden = x[:1] @ np.asarray(state.params["Dense_0"]["kernel"]) + np.asarray(
        state.params["Dense_0"]["bias"])
    np.testing.assert_allclose(stats["mean"], hidden[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"], np.zeros(4), atol=1e-6)


def test_a_pmap_step_on_a_global_batch_of_padding_only_keeps_the_statistics():
    batch = jnn.data.pad_batch({"x": _x((1, 8, 8, 1)), "y": np.zeros(1, np.int64)}, 32)
    batch["mask"] = np.zeros(32, bool)
    axis = parallel.PMAP_AXIS
    state = jnn.create_train_state(jnn.models.get("cnn", batch_norm=True, axis_name=axis),
                                   optax.sgd(0.1), jax.random.PRNGKey(0), batch["x"][:1])
    step = parallel.pmap_train_step(jnn.make_train_step(axis_name=axis))
    new, _ = step(parallel.replicate(state), parallel.split_batch(batch))
    _close(parallel.unreplicate(new.model_state), state.model_state, rtol=0, atol=0)
    assert np.isfinite(np.asarray(jax.tree.leaves(parallel.unreplicate(new.params))[0])).all()
