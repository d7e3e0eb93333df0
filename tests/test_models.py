import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
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
    assert _count("resmlp", (1, 10), depth=5, width=64) == base + 4 * per_block
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


@pytest.mark.parametrize("name,check", [
    ("normal", lambda w: abs(w.std() - 0.01) < 0.001 and abs(w.mean()) < 0.001),
    ("uniform", lambda w: w.min() >= -0.05 and w.max() <= 0.05 and w.max() > 0.045),
    ("he_normal", lambda w: abs(w.std() - np.sqrt(2 / 400)) < 0.01),
    ("glorot_uniform", lambda w: abs(w).max() <= np.sqrt(6 / (400 + 300))),
])
def test_initializers_have_their_documented_scale(name, check):
    w = np.asarray(models.get_initializer(name)(jax.random.PRNGKey(0), (400, 300)))
    assert check(w)


def test_max_pool_2x2_matches_flax_max_pool_and_its_gradient():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 9, 10, 4))  # odd height is cropped
    ours = lambda x: (models.max_pool_2x2(x) ** 3).sum()
    flax_pool = lambda x: (nn.max_pool(x, (2, 2), (2, 2)) ** 3).sum()
    np.testing.assert_array_equal(models.max_pool_2x2(x), nn.max_pool(x, (2, 2), (2, 2)))
    np.testing.assert_allclose(jax.grad(ours)(x), jax.grad(flax_pool)(x), rtol=1e-6)


def test_max_pool_2x2_gives_a_tied_windows_gradient_to_one_position():
    x = jnp.ones((1, 2, 2, 1))
    grad = jax.grad(lambda x: models.max_pool_2x2(x).sum())(x)
    assert float(grad.sum()) == 1.0 and float(grad[0, 0, 0, 0]) == 1.0
