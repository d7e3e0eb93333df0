"""jnn.models.conv_general_dilated: lax's convolution, with odd channel counts padded on CPU."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jnn import models
from jnn.models import convolution
from jnn.models.convolution import conv_general_dilated


def _values_and_gradients(conv, x, w, g, **kwargs):
    out, vjp = jax.vjp(lambda x, w: conv(x, w, (1, 1), [(1, 1), (1, 1)], **kwargs), x, w)
    return (out, *vjp(g))


@pytest.mark.parametrize("channels", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_values_and_gradients_equal_lax_conv_general_dilated(channels, layout):
    kx, kw, kg = jax.random.split(jax.random.PRNGKey(channels), 3)
    if layout == "NHWC":
        x = jax.random.normal(kx, (4, 9, 10, channels))
        w = jax.random.normal(kw, (3, 3, channels, 6))
        kwargs = {"dimension_numbers": ("NHWC", "HWIO", "NHWC")}
        g = jax.random.normal(kg, (4, 9, 10, 6))
    else:  # lax's default layout: NCHW inputs, OIHW kernels
        x = jax.random.normal(kx, (4, channels, 9, 10))
        w = jax.random.normal(kw, (6, channels, 3, 3))
        kwargs = {}
        g = jax.random.normal(kg, (4, 6, 9, 10))
    ours = jax.jit(lambda x, w, g: _values_and_gradients(conv_general_dilated, x, w, g,
                                                         **kwargs))(x, w, g)
    reference = jax.jit(lambda x, w, g: _values_and_gradients(lax.conv_general_dilated, x, w,
                                                              g, **kwargs))(x, w, g)
    for got, want in zip(ours, reference):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _input_features_of_the_convolutions(stablehlo: str) -> list[int]:
    # "stablehlo.convolution(%2, %3) ... : (tensor<2x8x8x4xf32>, ...": the last dimension of
    # each convolution's channels-last input (the transposed convolutions of a gradient
    # included)
    return [int(line.split(": (tensor<")[1].split(">")[0].split("x")[-2])
            for line in stablehlo.splitlines() if "stablehlo.convolution" in line]


@pytest.mark.parametrize("pads_without_derivative", [False, True])
def test_on_cpu_three_channels_are_convolved_as_four_where_differentiated(
        monkeypatch, pads_without_derivative):
    monkeypatch.setattr(convolution, "pads_without_derivative", lambda: pads_without_derivative)
    x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 5))

    def conv(x, w):
        return conv_general_dilated(x, w, (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def kernel_gradient(x, w):  # as in a train step: the input batch has no gradient
        return jax.grad(lambda w: (conv(x, w) ** 2).sum())(w)

    # no derivative (eval, predict): padded on AVX-512 hosts, as it is elsewhere;
    # differentiated: padded, and only the forward and the kernel gradient are
    # convolutions (none for the input's zero tangent)
    undifferentiated = _input_features_of_the_convolutions(jax.jit(conv).lower(x, w).as_text())
    assert undifferentiated == [4 if pads_without_derivative else 3]
    gradient_features = _input_features_of_the_convolutions(
        jax.jit(kernel_gradient).lower(x, w).as_text())
    assert len(gradient_features) == 2 and gradient_features[0] == 4
    both = jax.jit(jax.grad(lambda x, w: (conv(x, w) ** 2).sum(), argnums=(0, 1))).lower(x, w)
    assert len(_input_features_of_the_convolutions(both.as_text())) == 3
    exported = jax.export.export(jax.jit(kernel_gradient), platforms=["cuda", "tpu"])(x, w)
    assert 4 not in _input_features_of_the_convolutions(exported.mlir_module())
    for channels in (1, 2):  # one (MNIST) and even counts are convolved as they are
        lowered = jax.jit(kernel_gradient).lower(jnp.ones((2, 8, 8, channels)),
                                                 jnp.ones((3, 3, channels, 5))).as_text()
        assert _input_features_of_the_convolutions(lowered)[0] == channels


def _convolution_dim_labels(optimized_hlo: str) -> list[str]:
    return [line.split("dim_labels=")[1].split(",")[0] for line in optimized_hlo.splitlines()
            if " convolution(" in line]


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("channels", [3, 8])
def test_gradients_inside_a_loop_are_canonical_convolutions(layout, channels):
    # XLA:CPU rewrites a convolution into its canonical dimensions (b01f_01io->b01f) only
    # outside loops; inside one (steps per call, lax.map) lax's kernel gradient
    # (f01b_i01o->01bf) ran 30x slower (see the module). Ours are canonical in the loop.
    if layout == "NHWC":
        x, w, dims = jnp.ones((4, 9, 9, channels)), jnp.ones((3, 3, channels, 6)), (
            "NHWC", "HWIO", "NHWC")
    else:
        x, w, dims = jnp.ones((4, channels, 9, 9)), jnp.ones((6, channels, 3, 3)), None

    def steps(conv):
        def step(w, _):
            gx, gw = jax.grad(lambda x, w: jnp.sum(jnp.tanh(conv(
                x, w, (1, 1), "SAME", dimension_numbers=dims)) ** 2), argnums=(0, 1))(x, w)
            return w - 0.1 * gw, gx.sum()

        return jax.jit(lambda w: jax.lax.scan(step, w, None, length=3))

    labels = _convolution_dim_labels(steps(conv_general_dilated).lower(w).compile().as_text())
    assert len(labels) == 3 and set(labels) == {"b01f_01io->b01f"}, labels
    # the reference, lax's own convolution, is not: the test can tell them apart
    plain = _convolution_dim_labels(steps(lax.conv_general_dilated).lower(w).compile().as_text())
    assert set(plain) != {"b01f_01io->b01f"}
    for got, want in zip(jax.tree.leaves(steps(conv_general_dilated)(w)),
                         jax.tree.leaves(steps(lax.conv_general_dilated)(w))):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))


def test_forward_mode_and_second_derivatives_equal_lax():
    kx, kw, kxt, kwt = jax.random.split(jax.random.PRNGKey(3), 4)
    x, w = jax.random.normal(kx, (2, 7, 7, 3)), jax.random.normal(kw, (3, 3, 3, 4))
    x_dot, w_dot = jax.random.normal(kxt, x.shape), jax.random.normal(kwt, w.shape)
    dims = ("NHWC", "HWIO", "NHWC")

    def loss(conv):
        return lambda x, w: jnp.sum(jnp.tanh(conv(x, w, (1, 1), "SAME",
                                                  dimension_numbers=dims)) ** 2)

    ours, want = loss(conv_general_dilated), loss(lax.conv_general_dilated)
    got = jax.jit(lambda: jax.jvp(ours, (x, w), (x_dot, w_dot)))()
    ref = jax.jit(lambda: jax.jvp(want, (x, w), (x_dot, w_dot)))()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(jnp.abs(ref[1])))
    # Hessian-vector products, forward over reverse, in the kernel and the input
    hvp = lambda f: jax.jvp(jax.grad(f, argnums=(0, 1)), (x, w), (x_dot, w_dot))[1]  # noqa: E731
    for g, r in zip(jax.jit(lambda: hvp(ours))(), jax.jit(lambda: hvp(want))()):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * float(jnp.abs(r).max()))


@pytest.mark.parametrize("groups", [{"feature_group_count": 3}, {"batch_group_count": 2}])
def test_grouped_convolutions_equal_lax(groups):
    # 9 input channels, odd. Feature groups are left to lax: padded, the channels would no
    # longer split into the groups. Batch groups split the batch and the output features,
    # so the padded channels are summed like any others.
    x = jnp.arange(4 * 6 * 6 * 9.0).reshape(4, 6, 6, 9) / 100
    w = jnp.ones((3, 3, 3, 6)) if "feature_group_count" in groups else jnp.ones((3, 3, 9, 6))
    dims = ("NHWC", "HWIO", "NHWC")
    ours = jax.jit(lambda x, w: conv_general_dilated(x, w, (1, 1), "VALID",
                                                     dimension_numbers=dims, **groups))(x, w)
    np.testing.assert_array_equal(ours, lax.conv_general_dilated(
        x, w, (1, 1), "VALID", dimension_numbers=dims, **groups))

    def value_and_grads(conv):  # grouped convolutions keep jax's own derivative
        loss = lambda x, w: jnp.sum(jnp.sin(conv(  # noqa: E731
            x, w, (1, 1), "VALID", dimension_numbers=dims, **groups)))
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, w)

    for got, want in zip(jax.tree.leaves(value_and_grads(conv_general_dilated)),
                         jax.tree.leaves(value_and_grads(lax.conv_general_dilated))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def test_bfloat16_operands_with_a_float32_result_equal_lax():
    # mixed precision: bfloat16 operands accumulated into float32 (preferred_element_type),
    # the three channels padded, gradients in the operands' dtype as lax gives them
    kx, kw = jax.random.split(jax.random.PRNGKey(11))
    x = jax.random.normal(kx, (4, 9, 9, 3)).astype(jnp.bfloat16)
    w = jax.random.normal(kw, (3, 3, 3, 8)).astype(jnp.bfloat16)

    def value_and_grads(conv):
        loss = lambda x, w: jnp.sum(jnp.tanh(conv(  # noqa: E731
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
            preferred_element_type=jnp.float32)))
        out = jax.jit(lambda x, w: conv(x, w, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        preferred_element_type=jnp.float32))(x, w)
        return out, *jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, w)

    for got, want in zip(jax.tree.leaves(value_and_grads(conv_general_dilated)),
                         jax.tree.leaves(value_and_grads(lax.conv_general_dilated))):
        assert got.dtype == want.dtype and got.shape == want.shape
        got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
        np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2 * float(np.abs(want).max()))


@pytest.mark.parametrize("case", ["1d", "3d", "strided_dilated", "dimension_numbers_object"])
def test_other_layouts_strides_and_dilations_equal_lax(monkeypatch, case):
    kx, kw = jax.random.split(jax.random.PRNGKey(7))
    kwargs, padding = {}, "SAME"
    if case == "1d":
        x, w, dims, strides = (jax.random.normal(kx, (3, 11, 5)), jax.random.normal(kw, (3, 5, 4)),
                               ("NWC", "WIO", "NWC"), (1,))
    elif case == "3d":
        x, w = jax.random.normal(kx, (2, 5, 6, 7, 3)), jax.random.normal(kw, (2, 3, 3, 3, 4))
        dims, strides = ("NDHWC", "DHWIO", "NDHWC"), (1, 1, 1)
    else:
        x, w = jax.random.normal(kx, (2, 13, 12, 3)), jax.random.normal(kw, (3, 3, 3, 4))
        dims, strides = ("NHWC", "HWIO", "NHWC"), (2, 1)
        kwargs, padding = {"rhs_dilation": (2, 2), "lhs_dilation": (1, 2)}, [(1, 1), (2, 0)]
        if case == "dimension_numbers_object":  # as flax.linen.Conv passes them
            dims = lax.conv_dimension_numbers(x.shape, w.shape, dims)

    def loss(conv, x, w):
        out = conv(x, w, strides, padding, dimension_numbers=dims, **kwargs)
        return (out * jnp.cos(out)).sum(), out

    ours = jax.jit(jax.value_and_grad(lambda x, w: loss(conv_general_dilated, x, w),
                                      argnums=(0, 1), has_aux=True))(x, w)
    plain = jax.jit(jax.value_and_grad(lambda x, w: loss(lax.conv_general_dilated, x, w),
                                       argnums=(0, 1), has_aux=True))(x, w)
    for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(plain)):
        assert got.shape == want.shape
        # float32 rounding of sums in another order, relative to the largest value: the
        # gradient of out * cos(out) multiplies an output's rounding by up to |out| (about
        # 35 here; 1.6e-4 relative to one element on a CPU without AVX-512)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * float(np.abs(want).max()))
    # differentiated, the forward convolution (the first) is of the padded input; without a
    # derivative, of the input as it is, or padded (AVX-512 hosts) with the same values
    padded_features = 8 if case == "1d" else 4
    padded = jax.jit(jax.grad(lambda x, w: loss(conv_general_dilated, x, w)[0])).lower(x, w)
    assert _input_features_of_the_convolutions(padded.as_text())[0] == padded_features
    for pads, features in [(False, x.shape[-1]), (True, padded_features)]:
        monkeypatch.setattr(convolution, "pads_without_derivative", lambda: pads)
        forward = jax.jit(lambda x, w: loss(conv_general_dilated, x, w)[1])
        assert _input_features_of_the_convolutions(forward.lower(x, w).as_text()) == [features]
        want = plain[0][1]
        np.testing.assert_allclose(forward(x, w), want, rtol=2e-5,
                                   atol=2e-5 * float(np.abs(want).max()))


def test_a_bad_layout_gets_lax_own_error():
    with pytest.raises(TypeError, match="dimension_numbers list/tuple must be length 3"):
        conv_general_dilated(jnp.ones((1, 4, 4, 3)), jnp.ones((3, 3, 3, 2)), (1, 1), "SAME",
                             dimension_numbers=("NHWC", "HWIO"))


def test_the_cifar_cnn_keeps_its_parameters_and_equals_flax_convolutions():
    class PlainCifarCNN(nn.Module):  # the same network with lax's convolution
        @nn.compact
        def __call__(self, x, train=False):
            init = nn.initializers.lecun_normal()
            x = models.max_pool_2x2(nn.relu(nn.Conv(32, (3, 3), padding=1, kernel_init=init)(x)))
            x = models.max_pool_2x2(nn.relu(nn.Conv(64, (3, 3), padding=1, kernel_init=init)(x)))
            x = nn.relu(nn.Dense(120, kernel_init=init)(x.reshape((x.shape[0], -1))))
            x = nn.relu(nn.Dense(84, kernel_init=init)(x))
            return nn.Dense(10, kernel_init=init)(x)

    x = jax.random.normal(jax.random.PRNGKey(0), (8, 32, 32, 3))
    model = models.get("cifar_cnn")
    params = model.init(jax.random.PRNGKey(1), x)
    plain_params = PlainCifarCNN().init(jax.random.PRNGKey(1), x)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, plain_params)

    def loss(apply, p):
        return (apply(p, x) ** 2).mean()

    ours = jax.jit(jax.value_and_grad(lambda p: loss(model.apply, p)))(params)
    plain = jax.jit(jax.value_and_grad(lambda p: loss(PlainCifarCNN().apply, p)))(params)
    for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(plain)):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="reads Linux's CPU flags")
def test_the_avx512_check_agrees_with_the_kernels_cpu_flags():
    with open("/proc/cpuinfo") as f:
        flags = next((line for line in f if line.startswith("flags")), "").split()
    if not flags:
        pytest.skip("/proc/cpuinfo lists no x86 flags (another architecture)")
    assert convolution.host_has_avx512() == ("avx512f" in flags)
    assert convolution.pads_without_derivative() == convolution.host_has_avx512()
