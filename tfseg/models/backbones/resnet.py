"""ResNet backbones (He et al., https://arxiv.org/abs/1512.03385)."""

import keras

from tfseg.models.layers import apply_conv_bn

RESNET_STAGES = {18: (2, 2, 2, 2)}
RESNET_WIDTHS = (64, 128, 256, 512)


def apply_basic_block(x, filters, *, strides, name):
    """ResNet BasicBlock: two 3x3 conv-BN, identity (or 1x1 conv-BN projection) shortcut, ReLU."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = apply_conv_bn(x, filters, 1, strides=strides, activation=None,
                                 name=f"{name}_proj")
    x = apply_conv_bn(x, filters, 3, strides=strides, name=f"{name}_1")
    x = apply_conv_bn(x, filters, 3, activation=None, name=f"{name}_2")
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


def build_resnet_backbone(*, depth=18, stem="imagenet", input_shape=(None, None, 3),
                          name=None):
    """ResNet feature extractor (He et al., https://arxiv.org/abs/1512.03385).

    Args:
        depth: int. Number of layers; 18 (BasicBlocks). Defaults to 18.
        stem: str. `"imagenet"`: 7x7/2 conv + 3x3/2 max-pool, stages at strides 4-32.
            `"small"`: 3x3/1 conv, no pool, stages at strides 1-8 (the CIFAR-style ResNet of the
            interferogram seed). Defaults to `"imagenet"`.
        input_shape: tuple. (H, W, C); H and W may be None. Defaults to (None, None, 3).
        name: str. Model name. Defaults to `f"resnet{depth}"`.

    Returns:
        A `keras.Model` mapping an image to `{"Pn": features}`: the stem output, and each stage's
        output under its stride's key. With the ImageNet stem, `"P2_in"` also holds the max-pool
        output (the input of the first stage, which LinkNet links to).
    """
    if depth not in RESNET_STAGES:
        raise ValueError(f"`depth` must be one of {sorted(RESNET_STAGES)}; received depth={depth}")
    if stem not in ("imagenet", "small"):
        raise ValueError(f"`stem` must be 'imagenet' or 'small'; received stem={stem!r}")
    name = name or f"resnet{depth}"
    inputs = keras.Input(shape=input_shape, name=f"{name}_input")
    features = {}
    if stem == "imagenet":
        x = apply_conv_bn(inputs, 64, 7, strides=2, name=f"{name}_stem")
        features["P1"] = x
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_pool")(x)
        features["P2_in"] = x
        level = 2
    else:
        x = apply_conv_bn(inputs, 64, 3, name=f"{name}_stem")
        level = 0
    for stage, (blocks, filters) in enumerate(zip(RESNET_STAGES[depth], RESNET_WIDTHS)):
        stride = 1 if stage == 0 else 2
        level += stride - 1
        for block in range(blocks):
            x = apply_basic_block(x, filters, strides=stride if block == 0 else 1,
                                  name=f"{name}_stage{stage + 1}_block{block + 1}")
        features[f"P{level}"] = x
    return keras.Model(inputs, features, name=name)
