"""ICNet (Zhao et al., https://arxiv.org/abs/1704.08545): an image cascade for real-time
segmentation of high-resolution images.

The paper's cascade, with the trunk shared as in the official Caffe model: a light branch sees
the full image; the 1/2 image runs a ResNet50 up to conv3_1 (1/16 of the input), and that
feature map, downsampled 2x, runs the rest of the dilated ResNet50 at 1/32. Cascade feature
fusion (CFF) units then merge the 1/32, 1/16 and 1/8 features. The encoder (the three
branches) and the decoder (fusion and head) exist once, for `build_icnet` and the recurrent
`tfseg.models.icnet_temporal`, which puts a ConvGRU between them.

Every resize has a static integer size: 2x downsampling is a 2x2 average pool (exactly what a
half-pixel bilinear resize by 0.5 computes), upsampling is bilinear `UpSampling2D` by 2 or 4,
and only the pyramid-pooling bins are resized to an arbitrary (static) size.
"""

import math

import keras

from tfseg.models.backbones.resnet import build_resnet_backbone
from tfseg.models.layers import apply_conv_bn, crop_padding, pad_to_multiple

OUTPUT_STRIDE = 32
# The full network and the official Caffe model's half width.
ICNET_WIDTHS = (1.0, 0.5)
PYRAMID_BINS = (1, 2, 3, 6)
SUB1_FILTERS = (32, 32, 64)
CFF_FILTERS = 128


@keras.saving.register_keras_serializable(package="tfseg")
class BilinearResize(keras.layers.Layer):
    """Bilinear resize to a fixed size, with half-pixel centres (as `UpSampling2D`).

    `keras.layers.Resizing` computes the same, but in Keras 3.15 its `training` argument
    defaults to True and reaches the batch-norm layers after it (TOOLCHAIN.md trap 1); this
    layer has no `training` argument.

    Args:
        size: tuple of 2 ints. Output (height, width).
    """

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        if not (len(size) == 2 and all(isinstance(v, int) and v >= 1 for v in size)):
            raise ValueError(f"`size` must be 2 positive integers; received size={size!r}")
        self.size = tuple(size)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def call(self, inputs):
        return keras.ops.image.resize(inputs, self.size, interpolation="bilinear")

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.size, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "size": self.size}


def adaptive_pool_windows(size, bins):
    """PyTorch adaptive-pooling windows along one axis: [floor(i*size/bins), ceil((i+1)*size/bins))
    for i < bins."""
    return [(i * size // bins, -(-(i + 1) * size // bins)) for i in range(bins)]


@keras.saving.register_keras_serializable(package="tfseg")
class AdaptiveAveragePooling(keras.layers.Layer):
    """Average pooling to `bins` x `bins` with PyTorch's adaptive windows, on a static size.

    Each window is a static slice, averaged rows first, then columns (exportable as Slice,
    ReduceMean and Concat). `keras.layers.AdaptiveAveragePooling2D` has the same windows but,
    in Keras 3.15, fails inside a `tf.function` when `bins` divides the size (1 bin over 3 rows
    tries a 4-row pool), so no model using it can be exported.

    Args:
        bins: int. Output height and width.
    """

    def __init__(self, bins, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(bins, int) or bins < 1:
            raise ValueError(f"`bins` must be a positive integer; received bins={bins!r}")
        self.bins = bins
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def call(self, inputs):
        height, width = inputs.shape[1:3]
        rows = [keras.ops.mean(inputs[:, start:end], axis=1, keepdims=True)
                for start, end in adaptive_pool_windows(height, self.bins)]
        x = keras.ops.concatenate(rows, axis=1)
        columns = [keras.ops.mean(x[:, :, start:end], axis=2, keepdims=True)
                   for start, end in adaptive_pool_windows(width, self.bins)]
        return keras.ops.concatenate(columns, axis=2)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.bins, self.bins, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "bins": self.bins}


def apply_pyramid_pooling(x, filters, *, bins=PYRAMID_BINS, name):
    """ICNet's pyramid pooling: average-pool to each of `bins` x `bins` with PyTorch's
    adaptive windows [floor(i*H/b), ceil((i+1)*H/b)), resize back bilinearly, SUM onto `x`,
    then 1x1 conv-BN-ReLU to `filters`. The input's height and width must be static."""
    size = tuple(x.shape[1:3])
    branches = [x]
    for b in bins:
        pooled = AdaptiveAveragePooling(b, name=f"{name}_pool{b}")(x)
        branches.append(BilinearResize(size, name=f"{name}_pool{b}_up")(pooled))
    x = keras.layers.Add(name=f"{name}_sum")(branches)
    return apply_conv_bn(x, filters, 1, name=f"{name}_reduce")


def apply_cascade_feature_fusion(coarse, fine, *, filters=CFF_FILTERS, name):
    """CFF unit: `coarse` upsampled 2x then a 3x3 conv (dilation 2) + BN, `fine` through a
    1x1 conv + BN, summed, ReLU.

    Returns:
        The fused features and the upsampled coarse input (where the level's auxiliary
        classifier reads).
    """
    upsampled = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_up")(coarse)
    coarse = apply_conv_bn(upsampled, filters, 3, dilation_rate=2, activation=None,
                           name=f"{name}_coarse")
    fine = apply_conv_bn(fine, filters, 1, activation=None, name=f"{name}_fine")
    x = keras.layers.Add(name=f"{name}_add")([coarse, fine])
    return keras.layers.Activation("relu", name=f"{name}_relu")(x), upsampled


def split_trunk(backbone, *, name):
    """Cuts the ICNet trunk (a dilated ResNet50 backbone) after conv3_1 into two functional
    models sharing its layers: image -> conv3_1 (stride 8), and conv3_1 -> conv5_3."""
    cut = backbone.get_layer(f"{backbone.name}_stage2_block1_out").output
    end = backbone.get_layer(f"{backbone.name}_stage4_block3_out").output
    return (keras.Model(backbone.input, cut, name=f"{name}_to_conv3_1"),
            keras.Model(cut, end, name=f"{name}_from_conv3_1"))


def check_icnet_arguments(num_classes, input_shape, width, cascade_outputs):
    """Raises ValueError (one line, naming the argument) for an invalid ICNet argument."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"`num_classes` must be a positive integer; received "
                         f"num_classes={num_classes!r}")
    if len(input_shape) != 3 or not all(isinstance(v, int) and v >= 1 for v in input_shape):
        raise ValueError(f"`input_shape` must be a static (H, W, C); received "
                         f"input_shape={input_shape!r}")
    if width not in ICNET_WIDTHS:
        raise ValueError(f"`width` must be one of {list(ICNET_WIDTHS)}; received "
                         f"width={width!r}")
    if cascade_outputs not in (True, False):
        raise ValueError(f"`cascade_outputs` must be True or False; received "
                         f"cascade_outputs={cascade_outputs!r}")


def apply_icnet_encoder(inputs, *, width, backbone_weights, name):
    """ICNet's three branches on `inputs` (batch, H, W, C), padded to a multiple of 32.

    Returns:
        A dict: `"sub1"` (1/8, 64 channels), `"sub2"` (1/16, the trunk at conv3_1), `"sub4"`
        (1/32, the rest of the trunk and the pyramid pooling, 256 x `width` channels), all of
        the padded input, and `"pad"`, the (bottom, right) padding for `apply_icnet_decoder`.
    """
    x, pad = pad_to_multiple(inputs, OUTPUT_STRIDE, name=name)
    sub1 = x
    for index, filters in enumerate(SUB1_FILTERS):
        sub1 = apply_conv_bn(sub1, filters, 3, strides=2, name=f"{name}_sub1_{index + 1}")

    backbone = build_resnet_backbone(depth=50, stem="deep", width=width, dilation=(1, 1, 2, 4),
                                     input_shape=(None, None, inputs.shape[-1]),
                                     weights=backbone_weights, name=f"{name}_backbone")
    to_conv3_1, from_conv3_1 = split_trunk(backbone, name=f"{name}_trunk")
    half = keras.layers.AveragePooling2D(2, name=f"{name}_sub2_down")(x)
    sub2 = to_conv3_1(half)
    sub4 = keras.layers.AveragePooling2D(2, name=f"{name}_sub4_down")(sub2)
    sub4 = from_conv3_1(sub4)
    sub4 = apply_pyramid_pooling(sub4, pyramid_channels(width), name=f"{name}_ppm")
    return {"sub1": sub1, "sub2": sub2, "sub4": sub4, "pad": pad}


def apply_icnet_decoder(sub4, sub2, sub1, *, pad, num_classes, input_shape, cascade_outputs,
                        name):
    """ICNet's fusion and head: CFF(sub4, sub2) -> 1/16, CFF(that, sub1) -> 1/8, upsampled
    2x, 1x1 classifier -> 1/4 logits, upsampled 4x and cropped by `pad` -> full size.

    Returns:
        A dict: `"logits"` (batch, H, W, num_classes), and with `cascade_outputs` the cascade
        levels `"logits_4"`, `"logits_8"`, `"logits_16"` (see `build_icnet`).
    """
    y, coarse_16 = apply_cascade_feature_fusion(sub4, sub2, name=f"{name}_cff16")
    y, coarse_8 = apply_cascade_feature_fusion(y, sub1, name=f"{name}_cff8")
    y = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_head_up")(y)
    logits_4 = keras.layers.Conv2D(num_classes, 1, name=f"{name}_classifier")(y)
    logits = keras.layers.UpSampling2D(4, interpolation="bilinear",
                                       name=f"{name}_logits_up")(logits_4)
    outputs = {"logits": crop_padding(logits, pad, name=name)}
    if not cascade_outputs:
        return outputs
    aux_16 = keras.layers.Conv2D(num_classes, 1, name=f"{name}_cff16_classifier")(coarse_16)
    aux_8 = keras.layers.Conv2D(num_classes, 1, name=f"{name}_cff8_classifier")(coarse_8)
    for key, level, stride in (("logits_4", logits_4, 4), ("logits_8", aux_8, 8),
                               ("logits_16", aux_16, 16)):
        outputs[key] = crop_to_input(level, stride, input_shape, name=f"{name}_{key}")
    return outputs


def pyramid_channels(width):
    """Channels of the pyramid pooling's output (the 1/32 features): 256 x `width`."""
    return int(256 * width)


def build_icnet(*, num_classes, input_shape, width=1.0, cascade_outputs=False,
                backbone_weights=None, name="icnet"):
    """ICNet with a shared, dilated ResNet50 trunk (deep stem).

    Branches: sub1, three 3x3/2 conv-BN-ReLU (32, 32, 64) on the full image -> 1/8; sub2, the
    1/2 image through the trunk up to conv3_1 -> 1/16; sub4, that downsampled 2x through the
    rest of the trunk (stages 4 and 5 dilated 2 and 4) and pyramid pooling -> 1/32. CFF(sub4,
    sub2) -> 1/16, CFF(that, sub1) -> 1/8, upsampled 2x, 1x1 classifier -> 1/4 logits,
    upsampled 4x -> full-size logits.

    Args:
        num_classes: int. Number of output classes.
        input_shape: tuple. Static (H, W, C); any H and W (padded inside to a multiple of 32
            and cropped back).
        width: float. Channel multiplier of the ResNet50 trunk and of the pyramid-pooling
            output (256 x width); 1.0, or 0.5 as in the official Caffe model. Defaults to 1.0.
        cascade_outputs: bool. False: the model returns full-size logits
            (batch, H, W, num_classes). True: a dict with those under `"logits"` and the
            cascade label guidance outputs `"logits_4"`, `"logits_8"`, `"logits_16"` at 1/4,
            1/8 and 1/16 of the input, each ceil(H / s) x ceil(W / s) (pixel (i, j) covers
            input pixels [s*i, s*i + s)). Both models name their layers alike, so weights
            trained with cascade outputs copy by layer name into the inference model, which
            lacks only the two auxiliary classifiers. Defaults to False.
        backbone_weights: str or None. Local ImageNet weights for the trunk (see
            `build_resnet_backbone`); the deep stem and the first block's input convs stay
            random. Defaults to None.
        name: str. Model name, prefix of every layer name. Defaults to "icnet".

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: an argument is invalid.

    Example:
        >>> model = build_icnet(num_classes=2, input_shape=(65, 97, 1), width=0.5)
        >>> model(np.zeros((1, 65, 97, 1)), training=False).shape
        TensorShape([1, 65, 97, 2])
    """
    check_icnet_arguments(num_classes, input_shape, width, cascade_outputs)
    inputs = keras.Input(shape=input_shape, name="image")
    features = apply_icnet_encoder(inputs, width=width, backbone_weights=backbone_weights,
                                   name=name)
    outputs = apply_icnet_decoder(features["sub4"], features["sub2"], features["sub1"],
                                  pad=features["pad"], num_classes=num_classes,
                                  input_shape=input_shape, cascade_outputs=cascade_outputs,
                                  name=name)
    return keras.Model(inputs, outputs if cascade_outputs else outputs["logits"], name=name)


def crop_to_input(x, stride, input_shape, *, name):
    """Crops a 1/`stride` map of the padded input to the ceil(H / stride) x ceil(W / stride)
    pixels that cover the input."""
    excess = tuple(x.shape[1 + axis] - math.ceil(input_shape[axis] / stride) for axis in (0, 1))
    return crop_padding(x, excess, name=name)
