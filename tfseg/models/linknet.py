"""LinkNet (Chaurasia & Culurciello, https://arxiv.org/abs/1707.03718): a ResNet18 encoder whose
block inputs are added to the matching decoder outputs, so the decoder recovers spatial detail
cheaply."""

import keras

from tfseg.models.backbones.resnet import build_resnet_backbone
from tfseg.models.layers import (
    apply_box_context,
    apply_conv_bn,
    apply_deconv_bn,
    crop_padding,
    pad_to_multiple,
)

OUTPUT_STRIDE = 32


def apply_decoder_block(x, filters, *, strides, name):
    """m -> n decoder: 1x1 conv to m/4, 3x3 transposed conv (x`strides`), 1x1 conv to n."""
    reduced = x.shape[-1] // 4
    x = apply_conv_bn(x, reduced, 1, name=f"{name}_reduce")
    x = apply_deconv_bn(x, reduced, 3, strides=strides, name=f"{name}_up")
    return apply_conv_bn(x, filters, 1, name=f"{name}_expand")


def build_linknet(*, num_classes, input_shape, width=1.0, box_context=0, input_link=False,
                  name="linknet"):
    """LinkNet with the paper's ResNet18 encoder; returns per-pixel logits at the input size.

    Args:
        num_classes: int. Number of output classes (CamVid: 12 including void).
        input_shape: tuple. Static (H, W, C); any H and W (padded to a multiple of 32 inside).
        width: float. Channel multiplier of the encoder and decoder: 1.0 (the paper), 0.5 (a
            quarter of the compute) or 0.25 (a sixteenth; the default recipe, whose 128x128
            two-class frames gained more from 1.5x the steps than from the channels).
        input_link: bool. Ends in a full-resolution head that also sees the input: the
            last transposed convolution upsamples to features, which are concatenated with
            the (padded) input and mixed by a 3x3 convolution before 1x1 logits. LinkNet's
            links stop at a quarter of the resolution; this one lets box edges be placed by
            the pixels themselves (the default recipe: +0.009-0.014 foreground IoU at three
            seeds, for a 15-23 % slower step; docs/benchmarks.md, session 19). False (the
            default): the paper's 2x2 transposed-convolution logits.
        box_context: int. Strip length in pixels of a box-context head on the logits
            (`apply_box_context`), for box labels; about the largest box. 0 (the default):
            none, the paper's network.
        name: str. Model name. Defaults to "linknet".
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x, pad = pad_to_multiple(inputs, OUTPUT_STRIDE, name=name)
    encoder = build_resnet_backbone(depth=18, stem="imagenet", width=width,
                                    input_shape=x.shape[1:], name=f"{name}_encoder")
    features = encoder(x)
    links = [features["P2_in"], features["P2"], features["P3"], features["P4"]]
    y = features["P5"]
    for level in range(4, 0, -1):
        link = links[level - 1]
        y = apply_decoder_block(y, link.shape[-1], strides=1 if level == 1 else 2,
                                name=f"{name}_decoder{level}")
        y = keras.layers.Add(name=f"{name}_link{level}")([y, link])
    # The final block's convolutions keep their biases, as in the paper's parameter count.
    final_filters = int(32 * width)
    y = apply_deconv_bn(y, final_filters, 3, strides=2, use_bias=True, name=f"{name}_final1")
    y = apply_conv_bn(y, final_filters, 3, use_bias=True, name=f"{name}_final2")
    if input_link:
        y = apply_deconv_bn(y, final_filters, 2, strides=2, name=f"{name}_final3")
        y = keras.layers.Concatenate(name=f"{name}_input_link")([y, x])
        y = apply_conv_bn(y, final_filters, 3, name=f"{name}_input_head")
        logits = keras.layers.Conv2D(num_classes, 1, name=f"{name}_logits")(y)
    else:
        logits = keras.layers.Conv2DTranspose(num_classes, 2, strides=2, padding="same",
                                              name=f"{name}_logits")(y)
    logits = crop_padding(logits, pad, name=name)
    if box_context:
        logits = apply_box_context(logits, box_context, name=f"{name}_box_context")
    return keras.Model(inputs, logits, name=name)
