"""Small building blocks shared by every architecture: conv + batch norm (+ ReLU), and the
static pad/crop that lets stride-constrained networks accept any input size."""

import keras
import numpy as np

# PyTorch-like batch-norm constants: the seeds' reference models were trained with them, and
# momentum 0.9 lets the moving statistics settle within a short run.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def apply_conv_bn(x, filters, kernel_size, *, strides=1, dilation_rate=1, activation="relu",
                  use_bias=False, name):
    """Conv2D -> BatchNorm -> optional activation, all named `{name}_{conv,bn,relu}`."""
    x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                            dilation_rate=dilation_rate, use_bias=use_bias,
                            name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                        name=f"{name}_bn")(x)
    if activation:
        x = keras.layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def apply_deconv_bn(x, filters, kernel_size, *, strides, use_bias=False, name):
    """Conv2DTranspose (exact x`strides` upsampling) -> BatchNorm -> ReLU."""
    x = keras.layers.Conv2DTranspose(filters, kernel_size, strides=strides, padding="same",
                                     use_bias=use_bias, name=f"{name}_deconv")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                        name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def bilinear_upsampling_kernel(kernel_size, channels):
    """Conv2DTranspose kernel (k, k, channels, channels) that upsamples each channel bilinearly
    (Long et al., FCN): a per-channel tent filter, zero across channels."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    grid = np.arange(kernel_size, dtype=np.float32)
    tent = 1.0 - np.abs(grid - center) / factor
    kernel = np.zeros((kernel_size, kernel_size, channels, channels), np.float32)
    for c in range(channels):
        kernel[:, :, c, c] = np.outer(tent, tent)
    return kernel


def pad_to_multiple(x, multiple, *, name):
    """Zero-pad H and W (bottom/right) up to a multiple of `multiple`.

    Returns the padded tensor and the (bottom, right) amounts, for `crop_padding`. Input sizes
    must be static: exported models have a fixed size anyway (TOOLCHAIN.md traps 2 and 5).
    """
    height, width = x.shape[1], x.shape[2]
    if height is None or width is None:
        raise ValueError(f"{name}: input height and width must be static to pad them to a "
                         f"multiple of {multiple}; received shape {tuple(x.shape)}")
    pad = (-height % multiple, -width % multiple)
    if pad == (0, 0):
        return x, pad
    x = keras.layers.ZeroPadding2D(((0, pad[0]), (0, pad[1])), name=f"{name}_pad")(x)
    return x, pad


def crop_padding(x, pad, *, name):
    """Undo `pad_to_multiple` on a full-resolution output."""
    if pad == (0, 0):
        return x
    return keras.layers.Cropping2D(((0, pad[0]), (0, pad[1])), name=f"{name}_crop")(x)
