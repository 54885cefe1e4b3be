"""Fully convolutional networks (Long et al., https://arxiv.org/abs/1411.4038) as the
interferogram seed used them: a backbone, a small scoring head and a learned bilinear-initialised
upsampling back to the input size. FCN-32s on VGG16 and FCN on ResNet18."""

import keras
import numpy as np

from tfseg.models.backbones.resnet import build_resnet_backbone
from tfseg.models.backbones.vgg import (
    FULL_WEIGHTS_FILE,
    assign_weights,
    build_vgg16_backbone,
    read_vgg16_weights,
)
from tfseg.models.layers import (
    bilinear_upsampling_kernel,
    crop_padding,
    pad_to_multiple,
)

# FCN-32s geometry (Caffe's coordinate mapping, pixel centres): conv1_1 with pad 100 maps its
# output y to input y - 99; each 2x2/2 pool maps y to 2y + 0.5 (five: 32y + 15.5); the 7x7 valid
# fc6 maps y to y + 3; so score pixel y sits over input pixel 32y + 12.5. The 64/32 transposed
# conv puts score pixel y at output 32y + 31.5, so input pixel x lands on output x + 19: the
# aligned crop starts at 19 (the offset Caffe's Crop layer computes for voc-fcn32s). The seed's
# PyTorch code cropped at 16, 3 pixels off.
FCN32_CROP_OFFSET = 19
FCN32_FIRST_CONV_PADDING = 100


def apply_bilinear_upsampling(x, factor, *, padding, trainable, name):
    """Transposed conv (kernel 2*factor, stride factor) starting as bilinear interpolation of
    each channel (FCN); with `trainable` it keeps learning. "same" padding upsamples exactly
    x`factor`; "valid" gives (n - 1) * factor + 2 * factor pixels, as FCN-32s' Caffe deconv."""
    channels = x.shape[-1]
    layer = keras.layers.Conv2DTranspose(channels, 2 * factor, strides=factor, padding=padding,
                                         trainable=trainable, name=name)
    y = layer(x)
    layer.set_weights([bilinear_upsampling_kernel(2 * factor, channels),
                       np.zeros(channels, np.float32)])
    return y


def apply_fc_conv(x, filters, kernel_size, *, name):
    """A convolutionalised fully connected layer of FCN: valid conv + ReLU + dropout 0.5."""
    x = keras.layers.Conv2D(filters, kernel_size, name=f"{name}_conv")(x)
    x = keras.layers.Activation("relu", name=f"{name}_relu")(x)
    return keras.layers.Dropout(0.5, name=f"{name}_dropout")(x)


def check_trainable_upsampling(trainable_upsampling):
    """Raises ValueError unless `trainable_upsampling` (an FCN builder option) is a bool."""
    if trainable_upsampling not in (True, False):
        raise ValueError(f"`trainable_upsampling` must be true or false; received "
                         f"{trainable_upsampling!r}")


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
    check_trainable_upsampling(trainable_upsampling)
    level = 3 if stem == "small" else 5
    stride = 2 ** level
    inputs = keras.Input(shape=input_shape, name="image")
    x, pad = pad_to_multiple(inputs, stride, name=name)
    backbone = build_resnet_backbone(depth=18, stem=stem, input_shape=x.shape[1:],
                                     name=f"{name}_backbone")
    y = backbone(x)[f"P{level}"]
    y = keras.layers.Conv2D(64, 3, padding="same", name=f"{name}_head_conv")(y)
    y = keras.layers.Conv2D(num_classes, 1, name=f"{name}_score")(y)
    y = apply_bilinear_upsampling(y, stride, padding="same", trainable=trainable_upsampling,
                                  name=f"{name}_upsample")
    logits = crop_padding(y, pad, name=name)
    return keras.Model(inputs, logits, name=name)


def build_fcn32_vgg16(*, num_classes, input_shape, batch_norm=True, trainable_upsampling=True,
                      backbone_weights=None, convolutionalize_classifier=False,
                      crop_offset=FCN32_CROP_OFFSET, name="fcn32_vgg16"):
    """FCN-32s on VGG16 (the seed's first interferogram model; paper: 59.4 mean IU on VOC 2011).

    The first conv pads by 100 pixels and the pools round up (Caffe's ceil mode), so the 7x7
    valid fc6 always has input and the upsampled map, 32 * ceil((H + 198) / 32) - 160 >= H + 38
    pixels, always covers the crop [crop_offset, crop_offset + H) for crop_offset <= 38.

    Trainable parameters with 1 input channel and 2 classes (batch_norm=True): 134,288,196 =
    VGG16-BN trunk 14,717,760 (convs without bias 14,709,312 + BN gamma/beta 8,448) + fc6
    102,764,544 + fc7 16,781,312 + score 8,194 + upsampling 16,386. The seed's PyTorch model
    (conv biases under BN, 21 score channels, 21->2 upsampling) has 134,525,911.

    Args:
        num_classes: int. Number of output classes.
        input_shape: tuple. Static (H, W, C); any H and W, odd ones included.
        batch_norm: bool. VGG16-BN trunk (the seed, trained from scratch). Defaults to True.
        trainable_upsampling: bool. Whether the bilinear-initialised transposed convolution
            keeps learning. Defaults to True (the seed).
        backbone_weights: str or Path. keras.applications VGG16 weights file for the trunk
            (needs batch_norm=False and 3 input channels). Defaults to None (random).
        convolutionalize_classifier: bool. Also start fc6 and fc7 from the ImageNet classifier
            of `backbone_weights` (its fc1 and fc2 Dense kernels reshaped to 7x7x512 and
            1x1x4096 convolutions, as FCN does); needs the full file, `FULL_WEIGHTS_FILE`.
            Defaults to False.
        crop_offset: int. Where the input-sized output is cropped from the upsampled map.
            Defaults to `FCN32_CROP_OFFSET` (19, aligned); the seed used 16.
        name: str. Model name and layer prefix. Defaults to "fcn32_vgg16".

    Returns:
        A `keras.Model` from (batch, H, W, C) images to (batch, H, W, num_classes) logits.

    Raises:
        ValueError: an invalid option, or a weights file that is missing or does not fit.
    """
    height, width = input_shape[:2]
    if height is None or width is None:
        raise ValueError(f"`input_shape` must have a static height and width (the output crop "
                         f"is static, as exported models need); received "
                         f"input_shape={input_shape}")
    check_trainable_upsampling(trainable_upsampling)
    if convolutionalize_classifier not in (True, False):
        raise ValueError(f"`convolutionalize_classifier` must be True or False; received "
                         f"{convolutionalize_classifier!r}")
    if convolutionalize_classifier and backbone_weights is None:
        raise ValueError("`convolutionalize_classifier=True` reads the classifier from "
                         "`backbone_weights`, which is None")
    if isinstance(crop_offset, bool) or not isinstance(crop_offset, int) or crop_offset < 0:
        raise ValueError(f"`crop_offset` must be an integer >= 0; received "
                         f"crop_offset={crop_offset!r}")
    inputs = keras.Input(shape=input_shape, name="image")
    backbone = build_vgg16_backbone(batch_norm=batch_norm, input_shape=input_shape,
                                    first_conv_padding=FCN32_FIRST_CONV_PADDING,
                                    weights=backbone_weights, name=f"{name}_backbone")
    x = backbone(inputs)["P5"]
    x = apply_fc_conv(x, 4096, 7, name=f"{name}_fc6")
    x = apply_fc_conv(x, 4096, 1, name=f"{name}_fc7")
    x = keras.layers.Conv2D(num_classes, 1, name=f"{name}_score")(x)
    y = apply_bilinear_upsampling(x, 32, padding="valid", trainable=trainable_upsampling,
                                  name=f"{name}_upsample")
    spare = (y.shape[1] - height - crop_offset, y.shape[2] - width - crop_offset)
    if min(spare) < 0:
        raise ValueError(f"`crop_offset` must leave room for the {height}x{width} input in the "
                         f"{y.shape[1]}x{y.shape[2]} upsampled map; received "
                         f"crop_offset={crop_offset}")
    logits = keras.layers.Cropping2D(((crop_offset, spare[0]), (crop_offset, spare[1])),
                                     name=f"{name}_crop")(y)
    model = keras.Model(inputs, logits, name=name)
    if convolutionalize_classifier:
        convolutionalize(model, read_vgg16_weights(backbone_weights), name=name,
                         source=backbone_weights)
    return model


def convolutionalize(model, vgg_weights, *, name, source):
    """Copies VGG16's fc1 and fc2 Dense layers into FCN's fc6 (7x7) and fc7 (1x1) convolutions.

    keras.applications flattens the 7x7x512 pool5 map row by row, channels last, which is the
    (7, 7, 512) order of a conv kernel: a reshape is the whole conversion."""
    if "fc1" not in vgg_weights:
        raise ValueError(f"{source} has no classifier (fc1, fc2); "
                         f"`convolutionalize_classifier=True` needs the full VGG16 file, "
                         f"{FULL_WEIGHTS_FILE}")
    for fc, conv in (("fc1", "fc6"), ("fc2", "fc7")):
        layer = model.get_layer(f"{name}_{conv}_conv")
        kernel, bias = vgg_weights[fc]
        assign_weights(layer, [kernel.reshape(layer.kernel.shape), bias],
                       source=f"{source}: {fc}")
