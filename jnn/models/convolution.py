"""`lax.conv_general_dilated` with a faster path for odd channel counts on CPU.

XLA's CPU backend convolves an input with an odd number of channels (3: an RGB image)
several times slower than one with an even number: on this project's 2-core machines a
3x3 convolution of a (128, 32, 32, 3) batch to 32 channels took 18-22 ms forward and
23-27 ms for the kernel gradient, against 6 ms and 12-14 ms once the input carries a
fourth channel of zeros. So on CPU, an input with an odd number (>= 3) of channels is
padded with zero channels to a multiple of 4, and the kernel with zero input rows to
match: the same sums with zeros added, so the outputs and gradients are those of the
plain convolution up to float rounding (the order of the additions changes). The
kernel's gradient for the added rows is dropped by the slice, so parameters keep their
shape. Other platforms get `lax.conv_general_dilated` itself.

Pass it to a Flax convolution: `nn.Conv(32, (3, 3), conv_general_dilated=conv_general_dilated)`;
jnn's CNNs do.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def _padded_channels(channels: int) -> int:
    if channels < 3 or channels % 2 == 0:
        return channels
    return -(-channels // 4) * 4


def _channel_axes(lhs_ndim: int, dimension_numbers) -> tuple[int, int] | None:
    """The input-feature axes of (lhs, rhs), or None where the layout is not one we pad."""
    if dimension_numbers is None:  # lax's default: NCHW inputs, OIHW kernels
        return 1, 1
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return dimension_numbers.lhs_spec[1], dimension_numbers.rhs_spec[1]
    lhs_spec, rhs_spec, _ = dimension_numbers
    if not isinstance(lhs_spec, str) or len(lhs_spec) != lhs_ndim:
        return None
    return lhs_spec.index("C"), rhs_spec.index("I")


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
    """`lax.conv_general_dilated`, same arguments and results; on CPU an odd number (>= 3)
    of input channels is padded with zeros to a multiple of 4 first (see the module)."""

    def plain(lhs, rhs):
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type)

    axes = _channel_axes(lhs.ndim, dimension_numbers)
    if axes is None or feature_group_count != 1 or batch_group_count != 1:
        return plain(lhs, rhs)
    lhs_axis, rhs_axis = axes
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

    return lax.platform_dependent(lhs, rhs, cpu=padded, default=plain)
