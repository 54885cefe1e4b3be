"""Fully convolutional networks (Long et al., https://arxiv.org/abs/1411.4038) as the
interferogram seed used them: a ResNet18 trunk, a small scoring head and a learned
bilinear-initialised upsampling back to the input size."""

import keras
import numpy as np

from tfseg.models.backbones.resnet import build_resnet_backbone
from tfseg.models.layers import bilinear_upsampling_kernel, crop_padding, pad_to_multiple


def build_fcn_resnet18(*, num_classes, input_shape, stem="small", trainable_upsampling=True,
                       name="fcn_resnet18"):
    """FCN on ResNet18 (the seed's best interferogram model, mean IoU 0.832).

    Args:
        num_classes: int. Number of output classes.
        input_shape: tuple. Static (H, W, C); any H and W (padded inside to the output stride).
        stem: str. "small" (the seed: stride-1 stem, output stride 8) or "imagenet" (output
            stride 32). Defaults to "small".
        trainable_upsampling: bool. Whether the bilinear-initialised transposed convolution
            keeps learning. Defaults to True (the seed).
        name: str. Model name. Defaults to "fcn_resnet18".
    """
    if stem not in ("small", "imagenet"):
        raise ValueError(f"`stem` must be 'small' or 'imagenet'; received stem={stem!r}")
    if not isinstance(trainable_upsampling, bool):
        raise ValueError(f"`trainable_upsampling` must be true or false; received "
                         f"{trainable_upsampling!r}")
    level = 3 if stem == "small" else 5
    stride = 2 ** level
    inputs = keras.Input(shape=input_shape, name="image")
    x, pad = pad_to_multiple(inputs, stride, name=name)
    backbone = build_resnet_backbone(depth=18, stem=stem, input_shape=x.shape[1:],
                                     name=f"{name}_backbone")
    y = backbone(x)[f"P{level}"]
    y = keras.layers.Conv2D(64, 3, padding="same", name=f"{name}_head_conv")(y)
    y = keras.layers.Conv2D(num_classes, 1, name=f"{name}_score")(y)
    upsample = keras.layers.Conv2DTranspose(
        num_classes, 2 * stride, strides=stride, padding="same",
        trainable=trainable_upsampling, name=f"{name}_upsample")
    y = upsample(y)
    upsample.set_weights([bilinear_upsampling_kernel(2 * stride, num_classes),
                          np.zeros(num_classes, np.float32)])
    logits = crop_padding(y, pad, name=name)
    return keras.Model(inputs, logits, name=name)
