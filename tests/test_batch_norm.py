"""jnn.models.BatchNorm against flax.linen.BatchNorm on one device, and its statistics under
pmap and sharded jit when the padding of a batch is spread unevenly over the devices."""

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


def test_pmap_weights_each_devices_statistics_by_its_real_rows():
    # momentum 0: the stored statistics are the batch's. Devices 0-1 hold 4 real rows
    # each, device 2 holds 3, the rest only padding (whose statistics are 0/0).
    rng = np.random.default_rng(2)
    x = rng.normal(size=(32, 3)).astype(np.float32) + np.repeat(np.arange(8.0), 4)[:, None]
    mask = np.arange(32) < 11

    def loss(outputs, batch):
        losses = jnp.square(outputs).mean(-1)
        return losses, jnn.objectives.unit_weights(batch, losses.shape), {}

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
