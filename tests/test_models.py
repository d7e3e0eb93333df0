import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jnn
from jnn import models


def _count(name, shape, **kwargs):
    params = models.get(name, **kwargs).init(jax.random.PRNGKey(0), jnp.zeros(shape))["params"]
    return jnn.parameter_count(params)


def test_seed_mlp_784_128_10_has_101770_parameters():
    assert _count("mlp", (1, 28, 28, 1)) == 784 * 128 + 128 + 128 * 10 + 10 == 101_770


def test_seed_mnist_cnn_has_693962_parameters():
    # conv 3*3*1*32+32, dense 13*13*32*128+128, dense 128*10+10
    assert _count("cnn", (1, 28, 28, 1)) == 320 + 692_352 + 1_290 == 693_962


def test_seed_cnn_on_8x8_digits_has_38602_parameters():
    assert _count("cnn", (1, 8, 8, 1)) == 320 + (3 * 3 * 32 * 128 + 128) + 1_290 == 38_602


def test_seed_cifar_cnn_has_522046_parameters():
    expected = (3 * 9 * 32 + 32) + (32 * 9 * 64 + 64) + (4096 * 120 + 120) + (120 * 84 + 84) + 850
    assert _count("cifar_cnn", (1, 32, 32, 3)) == expected == 522_046


def test_resmlp_parameters_grow_linearly_with_depth_and_scan_matches_unrolled():
    per_block = 2 * 64 + 2 * (64 * 64 + 64)
    base = _count("resmlp", (1, 10), depth=1, width=64)
    assert _count("resmlp", (1, 10), depth=5, width=64, scan=False) == base + 4 * per_block
    assert _count("resmlp", (1, 10), depth=5, width=64, scan=True) == base + 4 * per_block


@pytest.mark.parametrize("name,shape", [("mlp", (4, 8, 8, 1)), ("cnn", (4, 8, 8, 1)),
                                        ("cifar_cnn", (4, 32, 32, 3)), ("resmlp", (4, 10))])
def test_models_map_a_batch_to_num_outputs(name, shape):
    model = models.get(name, num_outputs=7)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros(shape))
    assert model.apply(variables, jnp.ones(shape)).shape == (4, 7)


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet9'.*cifar_cnn, cnn, mlp"):
        models.get("resnet9")


def test_unknown_model_field_is_named():
    with pytest.raises(ValueError, match="no field widths.*hidden_sizes"):
        models.get("mlp", widths=(3,))


@pytest.mark.parametrize("kwargs,match", [({"activation": "swish2"}, "unknown activation"),
                                          ({"kernel_init": "xavier"}, "unknown initializer")])
def test_bad_activation_or_initializer_name_fails_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.get("mlp", **kwargs)


@pytest.mark.parametrize("activation,fn", [("relu", jax.nn.relu), ("sigmoid", jax.nn.sigmoid),
                                           ("tanh", jnp.tanh)])
def test_mlp_applies_the_named_activation(activation, fn):
    model = models.get("mlp", hidden_sizes=(5,), num_outputs=2, activation=activation)
    x = jnp.linspace(-2, 2, 12).reshape(2, 6)
    variables = model.init(jax.random.PRNGKey(1), x)
    p = variables["params"]
    hidden = fn(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    expected = hidden @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    np.testing.assert_allclose(model.apply(variables, x), expected, rtol=1e-5, atol=1e-6)


def test_dropout_is_active_only_in_training():
    model = models.get("mlp", hidden_sizes=(256,), dropout_rate=0.5)
    x = jnp.ones((2, 16))
    variables = model.init(jax.random.PRNGKey(0), x)
    infer = [model.apply(variables, x, train=False) for _ in range(2)]
    np.testing.assert_array_equal(infer[0], infer[1])
    trained = [model.apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(i)})
               for i in range(2)]
    assert not np.allclose(trained[0], trained[1])


# --- initialisers: every name's distribution and scale -------------------------------
# name -> (distribution, scale(fan_in, fan_out), the jax initialiser it stands for); scale
# is the std for normals (jax's truncated normals are rescaled to keep it) and the
# limit for uniforms. Fans of a (..., in, out) kernel: receptive field * in, * out.
_INIT_SPECS = {
    "normal": ("normal", lambda fi, fo: 0.01, jax.nn.initializers.normal(0.01)),
    "uniform": ("uniform", lambda fi, fo: 0.05,
                lambda k, s: jax.random.uniform(k, s, jnp.float32, -0.05, 0.05)),
    "glorot_normal": ("truncated", lambda fi, fo: np.sqrt(2 / (fi + fo)),
                      jax.nn.initializers.glorot_normal()),
    "glorot_uniform": ("uniform", lambda fi, fo: np.sqrt(6 / (fi + fo)),
                       jax.nn.initializers.glorot_uniform()),
    "he_normal": ("truncated", lambda fi, fo: np.sqrt(2 / fi), jax.nn.initializers.he_normal()),
    "he_uniform": ("uniform", lambda fi, fo: np.sqrt(6 / fi), jax.nn.initializers.he_uniform()),
    "lecun_normal": ("truncated", lambda fi, fo: np.sqrt(1 / fi),
                     jax.nn.initializers.lecun_normal()),
    "lecun_uniform": ("uniform", lambda fi, fo: np.sqrt(3 / fi),
                      jax.nn.initializers.lecun_uniform()),
}


def _check_init_statistics(name, w):
    """w, a (..., fan_in', fan_out) kernel, has the mean, std and range `name` documents."""
    w = np.asarray(w, np.float64)
    receptive = int(np.prod(w.shape[:-2]))
    fan_in, fan_out = receptive * w.shape[-2], receptive * w.shape[-1]
    dist, scale, _ = _INIT_SPECS[name]
    std = scale(fan_in, fan_out) / (np.sqrt(3) if dist == "uniform" else 1)
    assert abs(w.mean()) < 5 * std / np.sqrt(w.size), (name, w.mean(), std)
    assert abs(w.std() / std - 1) < 0.03, (name, w.std(), std)  # sampling error <= 0.6%
    peak = np.abs(w).max() / std
    if dist == "uniform":  # U(-limit, limit): |w| <= limit = sqrt(3) std, and close to it
        assert np.sqrt(3) * 0.99 < peak <= np.sqrt(3) * (1 + 1e-6), (name, peak)
    elif dist == "truncated":  # cut at 2 std of the underlying normal = 2.27 std
        assert 2.2 < peak <= 2 / 0.87962566 * (1 + 1e-5), (name, peak)
    else:  # a full normal: >= 18k draws reach past 3.5 std
        assert peak > 3.5, (name, peak)


def test_every_initializer_name_has_a_documented_distribution():
    assert sorted(_INIT_SPECS) == models.initializer_names()


@pytest.mark.parametrize("shape", [(512, 256), (3, 3, 64, 32)])  # fan_in != fan_out
@pytest.mark.parametrize("name", sorted(_INIT_SPECS))
def test_initializers_have_their_documented_distribution_and_scale(name, shape):
    key = jax.random.PRNGKey(0)
    w = models.get_initializer(name)(key, shape)
    assert w.shape == shape and w.dtype == jnp.float32
    _check_init_statistics(name, w)
    # and it is the jax initialiser the name stands for, draw for draw (compiled as one
    # program, its float ops may round differently from jax's op-by-op call by an ulp)
    np.testing.assert_allclose(w, _INIT_SPECS[name][2](key, shape), rtol=3e-7, atol=0)


@pytest.mark.parametrize("name", sorted(_INIT_SPECS))
def test_initializers_equal_jax_for_typed_keys_other_dtypes_and_inside_jit(name):
    key, shape = jax.random.key(3), (7, 5)
    expected = _INIT_SPECS[name][2](key, shape, jnp.bfloat16) if name != "uniform" else \
        jax.random.uniform(key, shape, jnp.bfloat16, -0.05, 0.05)
    init = models.get_initializer(name)
    np.testing.assert_allclose(init(key, shape, jnp.bfloat16).astype(float),
                               expected.astype(float), rtol=1e-2, atol=0)
    np.testing.assert_array_equal(jax.jit(lambda k: init(k, shape, jnp.bfloat16))(key),
                                  init(key, shape, jnp.bfloat16))
    raw = jax.random.PRNGKey(3)  # a raw key under vmap: each member its own draw
    keys = jax.random.split(raw, 2)
    np.testing.assert_array_equal(jax.vmap(lambda k: init(k, shape))(keys)[1],
                                  init(keys[1], shape))


def test_a_models_initializer_is_traced_once_not_again_by_each_step(monkeypatch):
    """Flax's apply checks each parameter's shape by tracing its initialiser; jnn's
    initialisers keep the trace of init, so tracing a train and an eval step traces no
    initialiser again (each trace cost the seed models' step traces 20-30 ms)."""
    from jnn.models import initializers

    traced = []
    plain = jax.nn.initializers.lecun_normal()

    def counting(key, shape, dtype=None):
        traced.append(shape)
        return plain(key, shape, dtype)

    monkeypatch.setitem(initializers._INITIALIZERS, "lecun_normal",
                        initializers._traced_once(counting))
    x = jnp.zeros((4, 8, 8, 1))
    batch = {"x": x, "y": jnp.zeros((4,), jnp.int32)}
    state = jnn.create_train_state(models.get("cnn", hidden=16), optax.adam(1e-3),
                                   jax.random.PRNGKey(0), x[:1])
    assert sorted(traced) == [(3, 3, 1, 32), (16, 10), (288, 16)]  # once each, at init
    jax.jit(jnn.make_train_step()).trace(state, batch)
    jax.jit(jnn.make_eval_step()).trace(state, batch)
    assert len(traced) == 3
    # the check itself still holds: a parameter of the wrong shape is refused
    wrong = {**state.params, "Dense_1": {**state.params["Dense_1"],
                                         "kernel": jnp.zeros((17, 10))}}
    with pytest.raises(Exception, match="Dense_1.*kernel|kernel.*Dense_1"):
        state.model.apply(wrong, state.model_state, batch, train=False)


@pytest.mark.parametrize("name", sorted(_INIT_SPECS))
def test_models_initialise_their_kernels_with_the_named_initializer(name):
    model = models.get("mlp", hidden_sizes=(192,), num_outputs=3, kernel_init=name)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 384)))["params"]
    _check_init_statistics(name, params["Dense_0"]["kernel"])  # (384, 192)


# --- dropout ----------------------------------------------------------------------------
def _dropout(x, rate, key=0, deterministic=False):
    return models.Dropout(rate).apply({}, x, deterministic=deterministic,
                                      rngs={"dropout": jax.random.PRNGKey(key)})


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.75])
def test_dropout_keeps_1_minus_p_and_scales_kept_units_by_1_over_1_minus_p(rate):
    x = jax.random.uniform(jax.random.PRNGKey(1), (64, 1000), minval=0.5, maxval=2.0)
    out = np.asarray(_dropout(x, rate))
    x = np.asarray(x)
    kept = out != 0
    # kept units are x / (1 - p) (float32), dropped ones exactly 0: nothing else
    np.testing.assert_allclose(out[kept], x[kept] / np.float32(1 - rate), rtol=1e-6, atol=0)
    assert np.all(out[~kept] == 0.0)
    # keep rate 1 - p over 64,000 units (sampling std <= 0.002), and per example
    assert abs(kept.mean() - (1 - rate)) < 0.01, kept.mean()
    assert np.all(np.abs(kept.mean(axis=1) - (1 - rate)) < 0.07)
    # the expectation is kept: E[out] = x
    assert abs(out.sum() / x.sum() - 1) < 0.02


def test_dropout_is_the_identity_when_deterministic_or_rate_zero():
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 50))
    np.testing.assert_array_equal(_dropout(x, 0.5, deterministic=True), x)
    np.testing.assert_array_equal(_dropout(x, 0.0), x)


def test_dropout_masks_are_per_example_and_do_not_depend_on_the_batch():
    x = jax.random.uniform(jax.random.PRNGKey(2), (16, 256), minval=1.0, maxval=2.0)
    big = np.asarray(_dropout(x, 0.5)) != 0
    # the first 8 examples of a batch of 16 get the masks they get in a batch of 8
    np.testing.assert_array_equal(np.asarray(_dropout(x[:8], 0.5)) != 0, big[:8])
    # and the mask does not depend on the values: other rows, same index, same mask
    np.testing.assert_array_equal(np.asarray(_dropout(x[::-1], 0.5)) != 0, big)
    # every example draws its own mask, and another key draws other masks
    assert len({m.tobytes() for m in big}) == 16
    assert not np.array_equal(np.asarray(_dropout(x, 0.5, key=1)) != 0, big)


def test_dropout_under_pmap_drops_what_one_device_drops():
    # 4 devices x 2 examples with axis_name: device d holds global examples 2d, 2d + 1
    x = jax.random.uniform(jax.random.PRNGKey(3), (8, 64), minval=1.0, maxval=2.0)
    key = jax.random.PRNGKey(5)
    layer = models.Dropout(0.5, axis_name="batch")
    sharded = jax.pmap(lambda xs: layer.apply({}, xs, deterministic=False, rngs={"dropout": key}),
                       axis_name="batch", devices=jax.devices()[:4])(x.reshape(4, 2, 64))
    single = models.Dropout(0.5).apply({}, x, deterministic=False, rngs={"dropout": key})
    np.testing.assert_array_equal(np.asarray(sharded).reshape(8, 64), single)


# --- 2x2 max pooling against flax -------------------------------------------------------
@jax.jit
def _pools_and_vjps(x, g):
    """(values, x-gradient for cotangent g) of jnn's 2x2 max pool and of flax's."""
    results = []
    for pool in (models.max_pool_2x2, lambda x: nn.max_pool(x, (2, 2), (2, 2))):
        out, vjp = jax.vjp(pool, x)
        results.append((out, vjp(g)[0]))
    return results


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (2, 7, 9, 3)])  # even; odd height and width
@pytest.mark.parametrize("values", ["normal", "ties"])
def test_max_pool_2x2_values_and_gradients_equal_flax_max_pool(shape, values):
    kx, kg = jax.random.split(jax.random.PRNGKey(sum(shape)))
    if values == "normal":
        x = jax.random.normal(kx, shape)
    else:  # three levels: most windows hold a tie for the maximum
        x = jax.random.randint(kx, shape, 0, 3).astype(jnp.float32)
        win = np.asarray(x)[:, : shape[1] // 2 * 2, : shape[2] // 2 * 2]
        win = win.reshape(shape[0], shape[1] // 2, 2, shape[2] // 2, 2, shape[3])
        assert ((win == win.max(axis=(2, 4), keepdims=True)).sum(axis=(2, 4)) > 1).mean() > 0.3
    pooled_shape = (shape[0], shape[1] // 2, shape[2] // 2, shape[3])
    g = jax.random.normal(kg, pooled_shape)  # a random cotangent: each window its own
    (out, grad), (ref_out, ref_grad) = _pools_and_vjps(x, g)
    assert out.shape == ref_out.shape == pooled_shape and grad.shape == shape
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(jax.jit(models.max_pool_2x2)(x), ref_out)  # no gradient
    np.testing.assert_array_equal(grad, ref_grad)  # odd trailing rows/columns get 0
    # each window sends its cotangent to exactly one position
    np.testing.assert_allclose(grad.sum(axis=(1, 2)), g.sum(axis=(1, 2)), rtol=1e-5, atol=1e-5)
    assert int((grad != 0).sum()) == int((g != 0).sum())


def test_max_pool_2x2_gives_a_tied_windows_gradient_to_one_position():
    x = jnp.ones((1, 2, 2, 1))
    grad = jax.grad(lambda x: models.max_pool_2x2(x).sum())(x)
    assert float(grad.sum()) == 1.0 and float(grad[0, 0, 0, 0]) == 1.0


def test_max_pool_2x2_sends_each_gradient_to_the_first_maximum_or_the_first_nan():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, (4, 6, 8, 5)).astype(np.float32)  # many ties
    x[rng.random(x.shape) < 0.15] = np.nan
    windows = x.reshape(4, 3, 2, 4, 2, 5).transpose(0, 1, 3, 2, 4, 5).reshape(4, 3, 4, 4, 5)
    out, vjp = jax.vjp(models.max_pool_2x2, jnp.asarray(x))
    grad = np.asarray(vjp(jnp.ones_like(out))[0])
    grad_windows = grad.reshape(4, 3, 2, 4, 2, 5).transpose(0, 1, 3, 2, 4, 5).reshape(4, 3, 4, 4, 5)
    expected = np.argmax(windows, axis=3)  # numpy: the first NaN, else the first maximum
    np.testing.assert_array_equal(grad_windows.argmax(axis=3), expected)
    np.testing.assert_array_equal(grad_windows.sum(axis=3), 1.0)
    np.testing.assert_array_equal(out, np.max(windows, axis=3))  # NaN where a NaN is
    np.testing.assert_array_equal(jax.jit(models.max_pool_2x2)(x), np.max(windows, axis=3))


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.int8, jnp.bool_, jnp.bfloat16,
                                   jnp.float8_e4m3fn])
def test_max_pool_2x2_pools_every_dtype_like_flax(dtype):
    x = jax.random.randint(jax.random.PRNGKey(0), (2, 6, 5, 3), -100, 100).astype(dtype)
    np.testing.assert_array_equal(
        np.asarray(jax.jit(models.max_pool_2x2)(x)).astype(np.float32),
        np.asarray(nn.max_pool(x.astype(jnp.float32), (2, 2), (2, 2)).astype(dtype)
                   ).astype(np.float32))


def test_scanned_resmlp_computes_what_the_unrolled_one_does():
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 10))
    unrolled = models.get("resmlp", depth=3, width=16, scan=False)
    scanned = models.get("resmlp", depth=3, width=16)  # scan is the default
    params = unrolled.init(jax.random.PRNGKey(0), x)["params"]
    blocks = [params[f"ResidualBlock_{i}"] for i in range(3)]
    stacked = {"Dense_0": params["Dense_0"], "Dense_1": params["Dense_1"],
               "ScanResidualBlock_0": jax.tree.map(lambda *b: jnp.stack(b), *blocks)}
    scanned_params = scanned.init(jax.random.PRNGKey(0), x)["params"]
    assert jax.tree.structure(stacked) == jax.tree.structure(scanned_params)
    np.testing.assert_allclose(scanned.apply({"params": stacked}, x),
                               unrolled.apply({"params": params}, x), rtol=1e-5, atol=1e-6)
