"""`lax.conv_general_dilated` with a faster path for odd channel counts on CPU.

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
measured, 2026-12-02), its first convolution with ReLU and pooling 2.9 ms against 6.6 ms.
Elsewhere it is convolved as it is: on a 2-core AMD EPYC with AVX2 the unpadded eval
step took 0.87-0.94x the time of the padded one. The measurements of the first paragraph
are of XLA's own convolution kernels, which a train step compiled with
`jnn.train_compiler_options()` uses. Other platforms get `lax.conv_general_dilated`
itself, and so do convolutions with feature groups. XLA's FLOP count of a padded
convolution includes the zero channels.

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
    if extra == 0:
        return plain(lhs, rhs)

    def padded(lhs, rhs):
        def pad(x, axis):
            widths = [(0, 0)] * x.ndim
            widths[axis] = (0, extra)
            return jnp.pad(x, widths)

        return plain(pad(lhs, lhs_axis), pad(rhs, rhs_axis))

    @jax.custom_jvp
    def convolved(lhs, rhs):  # nothing differentiated: padded with AVX-512 (see the module)
        return padded(lhs, rhs) if pads_without_derivative() else plain(lhs, rhs)

    def convolved_jvp(primals, tangents):
        # Differentiated (forward or reverse mode): the padded convolution, and its
        # derivatives only with respect to the operands that have tangents (a training
        # step's input batch has none, and no convolution of zeros is computed for it).
        (lhs, rhs), (lhs_dot, rhs_dot) = primals, tangents
        if isinstance(lhs_dot, SymbolicZero):
            return jax.jvp(lambda r: padded(lhs, r), (rhs,), (rhs_dot,))
        if isinstance(rhs_dot, SymbolicZero):
            return jax.jvp(lambda l: padded(l, rhs), (lhs,), (lhs_dot,))
        return jax.jvp(padded, (lhs, rhs), (lhs_dot, rhs_dot))

    convolved.defjvp(convolved_jvp, symbolic_zeros=True)
    return lax.platform_dependent(lhs, rhs, cpu=convolved, default=plain)
