"""ResNet backbones (He et al., https://arxiv.org/abs/1512.03385): ResNet18 (BasicBlocks) and
ResNet50 (Bottlenecks), with the stems and dilated stages segmentation networks use, and
ImageNet weights loaded from local files.

ResNet50 follows the keras.applications layout (ResNet v1: the stride sits in the first 1x1
conv of a block, every conv has a bias, the ImageNet stem pads symmetrically), so the
keras.applications ImageNet file loads into it layer by layer. ResNet18 keeps the layout the
first tfseg models (LinkNet, FCN) were built with; tools/convert_resnet18_weights.py turns
torchvision's ImageNet weights into a file for it.
"""

import dataclasses
import logging
import os
import re
import warnings
from collections.abc import Callable

import keras

from tfseg.models.layers import apply_conv_bn, batch_norm

logger = logging.getLogger(__name__)

STEMS = ("imagenet", "small", "deep")
WIDTHS = (1.0, 0.5, 0.25)
STAGE_FILTERS = (64, 128, 256, 512)


def apply_shortcut(x, filters, *, strides, use_bias, name):
    """Residual shortcut: identity, or a 1x1 conv-BN projection (`{name}_proj`) when the
    stride or the channel count changes."""
    if strides == 1 and x.shape[-1] == filters:
        return x
    return apply_conv_bn(x, filters, 1, strides=strides, activation=None, use_bias=use_bias,
                         name=f"{name}_proj")


def apply_basic_block(x, filters, *, strides, dilation, use_bias, name):
    """ResNet BasicBlock: two 3x3 conv-BN plus the shortcut, then ReLU; `filters` channels out."""
    shortcut = apply_shortcut(x, filters, strides=strides, use_bias=use_bias, name=name)
    x = apply_conv_bn(x, filters, 3, strides=strides, dilation_rate=dilation, use_bias=use_bias,
                      name=f"{name}_1")
    x = apply_conv_bn(x, filters, 3, dilation_rate=dilation, activation=None, use_bias=use_bias,
                      name=f"{name}_2")
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


def apply_bottleneck_block(x, filters, *, strides, dilation, use_bias, name):
    """ResNet v1 Bottleneck: 1x1 conv (carrying the stride), 3x3 conv, 1x1 conv to 4x`filters`,
    each with BN, plus the shortcut, then ReLU.

    The stride in the first 1x1 conv is the keras.applications (Caffe) layout its ImageNet
    weights were trained with.
    """
    shortcut = apply_shortcut(x, 4 * filters, strides=strides, use_bias=use_bias, name=name)
    x = apply_conv_bn(x, filters, 1, strides=strides, use_bias=use_bias, name=f"{name}_1")
    x = apply_conv_bn(x, filters, 3, dilation_rate=dilation, use_bias=use_bias, name=f"{name}_2")
    x = apply_conv_bn(x, 4 * filters, 1, activation=None, use_bias=use_bias, name=f"{name}_3")
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    """What differs between ResNet depths.

    Attributes:
        blocks: tuple of 4 ints. Blocks per stage (conv2_x ... conv5_x).
        block: callable. `apply_basic_block` or `apply_bottleneck_block`.
        use_bias: bool. Whether every conv has a bias (keras.applications ResNet50 does,
            torchvision ResNet18 does not).
        symmetric_padding: bool. Whether the stem's strided conv and max-pool pad k // 2 on
            every side, as keras.applications and torchvision do, rather than TF's "same"
            (which pads one pixel less on the top and left of even sizes). ResNet18 keeps
            "same", the layout LinkNet and FCN were trained with.
        weights_file: str. What `weights=path` must point to.
    """

    blocks: tuple
    block: Callable
    use_bias: bool
    symmetric_padding: bool
    weights_file: str


RESNETS = {
    18: ResNetSpec(blocks=(2, 2, 2, 2), block=apply_basic_block, use_bias=False,
                   symmetric_padding=False,
                   weights_file="a ResNet18 weights file written by "
                                "tools/convert_resnet18_weights.py"),
    50: ResNetSpec(blocks=(3, 4, 6, 3), block=apply_bottleneck_block, use_bias=True,
                   symmetric_padding=True,
                   weights_file="the keras.applications ResNet50 ImageNet weights without top "
                                "(resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5)"),
}


def apply_strided_conv_bn(x, filters, kernel_size, *, symmetric_padding, use_bias, name):
    """Stride-2 conv-BN-ReLU; with `symmetric_padding`, explicit k // 2 zero padding on every
    side and a valid conv, as in keras.applications and torchvision."""
    if not symmetric_padding:
        return apply_conv_bn(x, filters, kernel_size, strides=2, use_bias=use_bias, name=name)
    x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
    x = keras.layers.Conv2D(filters, kernel_size, strides=2, use_bias=use_bias,
                            name=f"{name}_conv")(x)
    x = batch_norm(f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def apply_stem_pool(x, *, symmetric_padding, name):
    """3x3 stride-2 max-pool; zero padding is exact here because the input follows a ReLU."""
    if not symmetric_padding:
        return keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_pool")(x)
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_pool_pad")(x)
    return keras.layers.MaxPooling2D(3, strides=2, name=f"{name}_pool")(x)


def build_resnet_backbone(*, depth=18, stem="imagenet", width=1.0, dilation=(1, 1, 1, 1),
                          input_shape=(None, None, 3), weights=None, name=None):
    """ResNet feature extractor (He et al., https://arxiv.org/abs/1512.03385).

    Args:
        depth: int. 18 (BasicBlocks [2, 2, 2, 2]) or 50 (Bottlenecks [3, 4, 6, 3], 4x
            expansion). Defaults to 18.
        stem: str. `"imagenet"`: 7x7/2 conv + 3x3/2 max-pool. `"deep"`: three 3x3 convs
            (64, 64, 128 channels at width 1, the first with stride 2) + 3x3/2 max-pool, the
            PSPNet/ICNet stem. `"small"`: one 3x3/1 conv, no pool (the CIFAR-style ResNet of
            the interferogram seed). Defaults to `"imagenet"`.
        width: float. Channel multiplier, 1.0, 0.5 (ICNet's half-width ResNet50) or 0.25
            (the default recipe's LinkNet), applied to every conv. Defaults to 1.0.
        dilation: tuple of 4 ints. Dilation rate of the 3x3 convs of each stage (conv2_x ...
            conv5_x). A stage with a rate above 1 keeps its input resolution instead of
            striding: (1, 1, 2, 4) gives output stride 8 (PSPNet, ICNet). Defaults to
            (1, 1, 1, 1).
        input_shape: tuple. (H, W, C); H and W may be None. Defaults to (None, None, 3).
        weights: str or None. Path of a local ImageNet weights file: for depth 50 the
            keras.applications file `resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`,
            for depth 18 a file written by tools/convert_resnet18_weights.py. Nothing is
            downloaded. Layers whose weights cannot come from the file because of the stem
            choice or the input channels (the stem, and the convs of the first block that read
            the stem's output) keep their random initialisation, and a warning lists them.
            Defaults to None (random initialisation).
        name: str. Model name, prefix of every layer name. Defaults to `f"resnet{depth}"`.

    Returns:
        A `keras.Model` mapping an image to `{"Pn": features}`, `Pn` being 2**n times smaller
        than the input. Each stage's output is stored under its stride's key, so with dilated
        stages a key holds the deepest feature at that stride. With a pooling stem, `"P1"` is
        the stem's conv output and `"P2_in"` the max-pool output (the input of the first
        stage, which LinkNet links to).

    Raises:
        ValueError: an argument is invalid, or `weights` is missing, of another depth or
            layout, or holds weights of other shapes.

    Example:
        >>> backbone = build_resnet_backbone(depth=50, stem="deep", width=0.5,
        ...                                  dilation=(1, 1, 2, 4), input_shape=(64, 64, 3))
        >>> backbone(np.zeros((1, 64, 64, 3)))["P3"].shape
        TensorShape([1, 8, 8, 1024])
    """
    if depth not in RESNETS:
        raise ValueError(f"`depth` must be one of {sorted(RESNETS)}; received depth={depth!r}")
    if stem not in STEMS:
        raise ValueError(f"`stem` must be one of {list(STEMS)}; received stem={stem!r}")
    if width not in WIDTHS:
        raise ValueError(f"`width` must be one of {list(WIDTHS)}; received width={width!r}")
    if not (isinstance(dilation, (tuple, list)) and len(dilation) == len(STAGE_FILTERS)
            and all(isinstance(rate, int) and rate >= 1 for rate in dilation)):
        raise ValueError(f"`dilation` must be {len(STAGE_FILTERS)} integers >= 1, one per stage; "
                         f"received dilation={dilation!r}")
    spec = RESNETS[depth]
    name = name or f"resnet{depth}"
    inputs = keras.Input(shape=input_shape, name=f"{name}_input")
    features = {}
    if stem == "small":
        x = apply_conv_bn(inputs, int(64 * width), 3, use_bias=spec.use_bias, name=f"{name}_stem")
        level = 0
    else:
        if stem == "imagenet":
            x = apply_strided_conv_bn(inputs, int(64 * width), 7,
                                      symmetric_padding=spec.symmetric_padding,
                                      use_bias=spec.use_bias, name=f"{name}_stem")
        else:
            x = apply_strided_conv_bn(inputs, int(64 * width), 3,
                                      symmetric_padding=spec.symmetric_padding,
                                      use_bias=spec.use_bias, name=f"{name}_stem_1")
            x = apply_conv_bn(x, int(64 * width), 3, use_bias=spec.use_bias,
                              name=f"{name}_stem_2")
            x = apply_conv_bn(x, int(128 * width), 3, use_bias=spec.use_bias,
                              name=f"{name}_stem_3")
        features["P1"] = x
        x = apply_stem_pool(x, symmetric_padding=spec.symmetric_padding, name=name)
        features["P2_in"] = x
        level = 2
    for stage, (blocks, filters, rate) in enumerate(zip(spec.blocks, STAGE_FILTERS, dilation)):
        strides = 2 if stage > 0 and rate == 1 else 1
        level += strides - 1
        for block in range(blocks):
            x = spec.block(x, int(filters * width), strides=strides if block == 0 else 1,
                           dilation=rate, use_bias=spec.use_bias,
                           name=f"{name}_stage{stage + 1}_block{block + 1}")
        features[f"P{level}"] = x
    model = keras.Model(inputs, features, name=name)
    if weights is not None:
        _load_weights(model, os.fspath(weights), depth=depth)
    return model


# Units (conv + BN pairs) whose shapes follow the stem and the input channels: they stay random
# when the file was trained with another stem or channel count. Any other mismatch is an error.
_STEM_DEPENDENT_UNIT = re.compile(r"stem(_\d)?|stage1_block1_(1|proj)")


def _load_weights(model, path, *, depth):
    """Copies the weights of file `path` into backbone `model`, unit by unit (a conv and its
    BN), matched by layer name."""
    spec = RESNETS[depth]
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such weights file; `weights` of a depth-{depth} ResNet must "
                         f"be {spec.weights_file}")
    reference, source_name = _read_weights_file(path, depth)
    sources = {layer.name: layer for layer in reference.layers}
    units = {}
    for layer in model.layers:
        if layer.weights:
            local = layer.name.removeprefix(f"{model.name}_")
            source = sources.get(source_name(local))
            units.setdefault(local.rsplit("_", 1)[0], []).append((layer, source))
    left_random = []
    for unit, pairs in units.items():
        mismatch = next(((layer, source) for layer, source in pairs
                         if source is None or _shapes(source) != _shapes(layer)), None)
        if mismatch is None:
            for layer, source in pairs:
                _copy_layer_weights(source, layer)
        elif _STEM_DEPENDENT_UNIT.fullmatch(unit):
            left_random.extend(layer.name for layer, _ in pairs)
        else:
            layer, source = mismatch
            held = "nothing" if source is None else f"{source.name} {_shapes(source)}"
            raise ValueError(f"{path}: {layer.name} needs weights of shapes {_shapes(layer)} but "
                             f"the file holds {held}; expected {spec.weights_file}, for width 1.0")
    if left_random:
        logger.warning("%s: no weights of matching shapes for %d layers of %s (stem or input "
                       "channels differ from the file's), left randomly initialised: %s",
                       path, len(left_random), model.name, ", ".join(left_random))


def _read_weights_file(path, depth):
    """Loads `path` into a model of the file's own layout; returns it and a function mapping
    our layer names (without the model prefix) to its layer names.

    Keras only warns about parts of a file it cannot place (and leaves them random); those
    warnings become errors here, so a file of another layout never loads partially.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            if depth == 50:
                reference = keras.applications.ResNet50(include_top=False, weights=path,
                                                        input_shape=(None, None, 3))
                return reference, _keras_applications_name
            # The converter writes the weights of this very model.
            reference = build_resnet_backbone(depth=depth)
            reference.load_weights(path)
            return reference, lambda local: f"{reference.name}_{local}"
    except (ValueError, OSError, KeyError, UserWarning) as error:
        raise ValueError(f"{path}: cannot be read as {RESNETS[depth].weights_file}, which a "
                         f"depth-{depth} ResNet needs: {error}") from None


def _keras_applications_name(local):
    """Our ResNet50 layer name -> keras.applications': stem -> conv1, stage{s}_block{b}_{i}
    -> conv{s+1}_block{b}_{i}, and the projection stage{s}_block{b}_proj -> ..._0."""
    if local.startswith("stem_"):
        return local.replace("stem", "conv1", 1)
    stage, block, part, kind = re.fullmatch(r"stage(\d)_block(\d+)_(\w+)_(conv|bn)",
                                            local).groups()
    return f"conv{int(stage) + 1}_block{block}_{'0' if part == 'proj' else part}_{kind}"


def _shapes(layer):
    return [tuple(weight.shape) for weight in layer.weights]


def _copy_layer_weights(source, target):
    """Copies weights; for batch norm, shifts the moving variance by the difference of the
    epsilons (keras.applications uses 1.001e-5) so the normalisation stays identical."""
    values = source.get_weights()
    if isinstance(target, keras.layers.BatchNormalization):
        values[3] = values[3] + (source.epsilon - target.epsilon)
    target.set_weights(values)
