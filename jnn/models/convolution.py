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

The padding happens only where a derivative is taken: a train step, and any jax.grad,
jax.jvp or composition of them, differentiates the padded convolution (a custom JVP rule).
Without a derivative (an eval step, prediction) the input is convolved as it is: XLA's
CPU backend then hands the convolution to YNNPACK, for which the zero channels are only
more work (CIFAR-10 CNN eval step: 0.87-0.94x the time of the padded one, 2-core AVX2
CPU). The measurements above are of XLA's own convolution kernels, which a train step
compiled with `jnn.train_compiler_options()` uses. Other platforms get
`lax.conv_general_dilated` itself, and so do convolutions with feature groups. XLA's FLOP
count of a padded convolution includes the zero channels.

Pass it to a Flax convolution: `nn.Conv(32, (3, 3), conv_general_dilated=conv_general_dilated)`;
jnn's CNNs do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero


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
    def convolved(lhs, rhs):
        return plain(lhs, rhs)  # nothing differentiated: as it is (see the module)

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
