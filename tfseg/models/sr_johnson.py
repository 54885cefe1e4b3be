"""Johnson et al.'s image transformation network for super-resolution ("Perceptual Losses for
Real-Time Style Transfer and Super-Resolution", https://arxiv.org/abs/1603.08155): residual
blocks at the low resolution, then x2 upsampling blocks, so most of the work is done on the
small image."""

import math

import keras

from tfseg.models.layers import apply_conv_bn, apply_deconv_bn

SCALES = (2, 4, 8)
UPSAMPLING_MODES = ("transposed", "resize_conv")
FILTERS = 64
RESIDUAL_BLOCKS = 4


def apply_residual_block(x, *, name):
    """conv3x3-BN-ReLU-conv3x3-BN plus the identity, with no ReLU after the sum (the paper's
    supplementary material), so the block can pass its input through unchanged."""
    filters = x.shape[-1]
    y = apply_conv_bn(x, filters, 3, use_bias=True, name=f"{name}_1")
    y = apply_conv_bn(y, filters, 3, activation=None, use_bias=True, name=f"{name}_2")
    return keras.layers.Add(name=f"{name}_add")([x, y])


def apply_upsampling_block(x, filters, *, mode, name):
    """Exact x2 upsampling + BN + ReLU.

    Args:
        x: tensor. (batch, H, W, C) features.
        filters: int. Output channels.
        mode: str. "transposed" (3x3 transposed convolution, stride 2: the paper) or
            "resize_conv" (nearest-neighbour x2 resize, then a 3x3 convolution: the same
            parameters without the transposed convolution's checkerboard artefacts, Odena et
            al., https://distill.pub/2016/deconv-checkerboard/).
        name: str. Prefix of the block's layer names.
    """
    if mode == "transposed":
        return apply_deconv_bn(x, filters, 3, strides=2, use_bias=True, name=name)
    x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_resize")(x)
    return apply_conv_bn(x, filters, 3, use_bias=True, name=name)


def build_sr_johnson(*, scale=4, input_shape=(None, None, 3), upsample="transposed",
                     name="sr_johnson"):
    """Johnson et al.'s super-resolution network: a normalised image in, pixels 0..255 out.

    conv 9x9 (64) + BN + ReLU, 4 residual blocks of 64 channels, log2(`scale`) x2 upsampling
    blocks of 64 channels, then conv 9x9 back to the input channels with tanh, scaled to
    (tanh + 1) * 127.5. Every convolution keeps its bias: 401,859 trainable parameters for x4
    RGB (438,915 for x8), as in the paper. The input normalisation is not part of this network
    (`tfseg.models.build` adds it).

    Args:
        scale: int. Upscaling factor, one of `SCALES`. Defaults to 4.
        input_shape: tuple. (H, W, C); H and W may be None (fully convolutional) or any static
            size, odd included. The output is (H * scale, W * scale, C). Defaults to
            (None, None, 3).
        upsample: str. One of `UPSAMPLING_MODES`, see `apply_upsampling_block`. Defaults to
            "transposed" (the paper).
        name: str. Model name and layer-name prefix. Defaults to "sr_johnson".

    Example:
        >>> model = build_sr_johnson(scale=4, input_shape=(72, 72, 3))
        >>> model.output_shape
        (None, 288, 288, 3)
    """
    if scale not in SCALES:
        raise ValueError(f"`scale` must be one of {SCALES}; received scale={scale!r}")
    if upsample not in UPSAMPLING_MODES:
        raise ValueError(f"`upsample` must be one of {UPSAMPLING_MODES}; received "
                         f"upsample={upsample!r}")
    if len(input_shape) != 3 or input_shape[-1] is None:
        raise ValueError(f"`input_shape` must be (H, W, C) with a known C; received "
                         f"input_shape={input_shape!r}")
    inputs = keras.Input(shape=input_shape, name="image")
    x = apply_conv_bn(inputs, FILTERS, 9, use_bias=True, name=f"{name}_stem")
    for block in range(1, RESIDUAL_BLOCKS + 1):
        x = apply_residual_block(x, name=f"{name}_res{block}")
    for block in range(1, int(math.log2(scale)) + 1):
        x = apply_upsampling_block(x, FILTERS, mode=upsample, name=f"{name}_up{block}")
    x = keras.layers.Conv2D(input_shape[-1], 9, padding="same", activation="tanh",
                            name=f"{name}_output_conv")(x)
    pixels = keras.layers.Rescaling(127.5, offset=127.5, name=f"{name}_to_pixels")(x)
    return keras.Model(inputs, pixels, name=name)
