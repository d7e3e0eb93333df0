"""`lax.conv_general_dilated` with faster paths on CPU: for odd channel counts, and for
gradients inside loops.

XLA's CPU backend convolves an input with an odd number of channels (3: an RGB image)
several times slower than one with an even number. On this project's 2-core machines a
3x3 convolution of a (128, 32, 32, C) batch to 32 channels took, forward + kernel
gradient: C=3 18-22 + 23-27 ms, padded to 4 channels 6 + 12-14 ms; C=5 18 + 21 ms,
padded to 8 6 + 22 ms; C=7 20 + 17 ms, padded to 8 7 + 22 ms (even counts, 2, 4, 6, 12,
were fast as they are; 1 is fast too, and padding it to 4 was slower). So on CPU, an
input with an odd number (>= 3) of channels is padded with zero channels to a multiple
of 4, and the kernel with zero input rows to match: the same sums with zeros added, so
the outputs and gradients equal those of the plain convolution up to float rounding (the
order of the additions changes). The kernel's gradient for the added rows is dropped by
the slice, so parameters keep their shape.

The padding happens where a derivative is taken: a train step, and any jax.grad,
jax.jvp or composition of them, differentiates the padded convolution (a custom JVP rule).
Without a derivative (an eval step, prediction) XLA's CPU backend hands the convolution to
YNNPACK, whose speed on an odd channel count depends on the CPU. On hosts with AVX-512
the undifferentiated convolution is padded too: the CIFAR-10 CNN's eval step took 0.70x
the time padded (2-core Intel Xeon with AVX-512, 15 interleaved rounds; 0.71x when first
measured, 2026-12-02), its first convolution with ReLU and pooling 2.9 ms against 6.6 ms;
on a 2-core AMD EPYC with AVX-512 (Zen 4) that convolution took the same time either way
(2.75 against 2.71 ms, 15 interleaved rounds), so padding it costs nothing there.
Elsewhere it is convolved as it is: on a 2-core AMD EPYC with AVX2 the unpadded eval
step took 0.87-0.94x the time of the padded one. The measurements of the first paragraph
are of XLA's own convolution kernels, which a train step compiled with
`jnn.train_compiler_options()` uses. Other platforms get `lax.conv_general_dilated`
itself, and so do convolutions with feature groups. XLA's FLOP count of a padded
convolution includes the zero channels.

Inside a loop (a `lax.scan` of train steps, such as `steps_per_call`, or a `lax.map` over
ensemble members), XLA's CPU backend runs a convolution fast only if its dimensions are
already XLA's canonical ones (input batch-first and feature-last, kernel (spatial...,
in, out)): outside loops it rewrites the others into them, inside loops it does not and
emits a slow generic loop nest. jax writes the kernel's gradient as a convolution that
swaps batch and feature, and the input's gradient with the kernel's features swapped,
so in a loop the kernel gradient of the CIFAR-10 CNN's second convolution took 2.6 s
against 42 ms outside one, and a scanned MNIST CNN train step 77 ms against 10 ms
(jaxlib 0.10.2). So on CPU, where a derivative is taken, the convolution and its two
linear parts are written on transposed operands such that the convolutions jax derives
for the gradients are canonical: scanned train steps then take no longer per step than
unscanned ones (MNIST CNN 9.2 against 10.0 ms, CIFAR-10 CNN 46 against 50 ms), and an
unscanned step is unchanged (in an A/B on that 2-core host: the same parameters bit for
bit, in the same time). Batch-grouped convolutions and ones with an `out_sharding` keep jax's own derivative.

Pass it to a Flax convolution: `nn.Conv(32, (3, 3), conv_general_dilated=conv_general_dilated)`;
jnn's CNNs do.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero


@functools.cache
def host_has_avx512() -> bool:
    """Whether this process's CPU has AVX-512 (numpy's table of the CPU features it
    detected at import; False where numpy has none)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:
        try:  # numpy 1.x
            from numpy.core._multiarray_umath import __cpu_features__
        except ImportError:
            return False
    return bool(__cpu_features__.get("AVX512F", False))


def pads_without_derivative() -> bool:
    """Whether an undifferentiated CPU convolution of an odd channel count is padded too:
    on hosts with AVX-512 (see the module). Read when a convolution is traced."""
    return host_has_avx512()


def _padded_channels(channels: int) -> int:
    if channels < 3 or channels % 2 == 0:
        return channels
    return -(-channels // 4) * 4


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None,
                         out_sharding=None):
    """`lax.conv_general_dilated`, same arguments and results; on CPU an odd number (>= 3)
    of input channels is padded with zeros to a multiple of 4 first (see the module)."""

    def plain(lhs, rhs):
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type,
            out_sharding=out_sharding)

    if feature_group_count != 1:  # padded channels would not split into the groups
        return plain(lhs, rhs)
    # every form lax accepts (None, specs as strings, ConvDimensionNumbers), checked by lax
    numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    lhs_axis, rhs_axis = numbers.lhs_spec[1], numbers.rhs_spec[1]  # the input features
    channels = lhs.shape[lhs_axis]
    extra = _padded_channels(channels) - channels

    def pad(x, axis):
        if extra == 0:
            return x
        widths = [(0, 0)] * x.ndim
        widths[axis] = (0, extra)
        return jnp.pad(x, widths)

    def padded(lhs, rhs):
        return plain(pad(lhs, lhs_axis), pad(rhs, rhs_axis))

    def linear(lhs, rhs, linear_in: str | None):
        # the values of padded(lhs, rhs), in the form whose transpose with respect to the
        # operand `linear_in` names (that operand's gradient), or the convolution itself
        # for None, XLA runs fast inside loops (see the module)
        if batch_group_count != 1 or out_sharding is not None:
            return padded(lhs, rhs)
        return _linear_convolution(
            pad(lhs, lhs_axis), pad(rhs, rhs_axis), numbers, linear_in,
            window_strides=window_strides, padding=padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, precision=precision,
            preferred_element_type=preferred_element_type)

    @jax.custom_jvp
    def convolved(lhs, rhs):  # nothing differentiated: padded with AVX-512 (see the module)
        return padded(lhs, rhs) if extra and pads_without_derivative() else plain(lhs, rhs)

    def convolved_jvp(primals, tangents):
        # Differentiated (forward or reverse mode): the padded convolution, and its
        # derivatives only with respect to the operands that have tangents (a training
        # step's input batch has none, and no convolution of zeros is computed for it).
        # The convolution is bilinear: its tangent is the sum of one convolution per
        # operand with a tangent.
        (lhs, rhs), (lhs_dot, rhs_dot) = primals, tangents
        out = linear(lhs, rhs, None)
        parts = []
        if not isinstance(lhs_dot, SymbolicZero):
            parts.append(linear(lhs_dot, rhs, "input"))
        if not isinstance(rhs_dot, SymbolicZero):
            parts.append(linear(lhs, rhs_dot, "kernel"))
        return out, sum(parts[1:], parts[0]) if parts else jnp.zeros_like(out)

    convolved.defjvp(convolved_jvp, symbolic_zeros=True)
    return lax.platform_dependent(lhs, rhs, cpu=convolved, default=plain)


def _linear_convolution(lhs, rhs, numbers: lax.ConvDimensionNumbers, linear_in: str | None,
                        **conv_args):
    """lax.conv_general_dilated(lhs, rhs) with `numbers`, computed on transposed operands
    chosen so that XLA:CPU gets its canonical dimensions (input batch-first and
    feature-last, kernel (spatial..., input features, output features), output like the
    input): for the convolution itself (linear_in None), or for jax's transpose of it
    with respect to `linear_in` ("input" or "kernel"). Then XLA need not rewrite the
    convolution or the gradient's convolution, which it fails to do inside loops (see
    the module).

    jax transposes a convolution with respect to its input into one of the output's
    cotangent with the kernel's two feature axes swapped, and with respect to its kernel
    into one that swaps the roles of batch and feature; the layouts below are those that
    these swaps turn into canonical ones."""
    ndim = lhs.ndim
    lhs_spec, rhs_spec, out_spec = numbers
    inner = tuple(range(1, ndim - 1))  # spatial axes between two others
    if linear_in == "kernel":
        # input (features, spatial..., batch), kernel (in, spatial..., out),
        # output (spatial..., batch, features)
        lhs_order, rhs_order = (lhs_spec[1], *lhs_spec[2:], lhs_spec[0]), (
            rhs_spec[1], *rhs_spec[2:], rhs_spec[0])
        transposed = lax.ConvDimensionNumbers(
            lhs_spec=(ndim - 1, 0, *inner), rhs_spec=(ndim - 1, 0, *inner),
            out_spec=(ndim - 2, ndim - 1, *range(ndim - 2)))
    else:
        # input and output (batch, spatial..., features); kernel (spatial..., out, in) for
        # the input's gradient, (spatial..., in, out) for the convolution itself
        lhs_order = (lhs_spec[0], *lhs_spec[2:], lhs_spec[1])
        kernel_features = (0, 1) if linear_in == "input" else (1, 0)
        rhs_order = (*rhs_spec[2:], *(rhs_spec[i] for i in kernel_features))
        feature_axes = (ndim - 2, ndim - 1) if linear_in == "input" else (ndim - 1, ndim - 2)
        transposed = lax.ConvDimensionNumbers(
            lhs_spec=(0, ndim - 1, *inner), rhs_spec=(*feature_axes, *range(ndim - 2)),
            out_spec=(0, ndim - 1, *inner))
    out = lax.conv_general_dilated(jnp.transpose(lhs, lhs_order), jnp.transpose(rhs, rhs_order),
                                   dimension_numbers=transposed, **conv_args)
    # back to the layout out_spec names: axis out_spec[k] of the result is the axis of
    # `out` that holds what transposed.out_spec[k] names
    source = [0] * ndim
    for axis, held in zip(out_spec, transposed.out_spec):
        source[axis] = held
    return jnp.transpose(out, source)
