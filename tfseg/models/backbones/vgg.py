"""VGG16 backbone (Simonyan & Zisserman, https://arxiv.org/abs/1409.1556), optionally with batch
norm, and ImageNet weights read from a local keras.applications `.h5` file (nothing is downloaded).

Layer `{name}_block{b}_conv{i}_relu` is VGG's relu{b}_{i}, the output of keras.applications'
`block{b}_conv{i}` layer, in both variants: feature losses tap relu1_2, relu2_2 and relu3_3 there.
"""

from pathlib import Path

import h5py
import keras

from tfseg.models.layers import apply_conv_bn

VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# keras.applications layer names of the convolutions, in order.
VGG16_CONVS = tuple(f"block{block}_conv{i}" for block, widths in enumerate(VGG16_BLOCKS, 1)
                    for i in range(1, len(widths) + 1))
NOTOP_WEIGHTS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
FULL_WEIGHTS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels.h5"


def apply_vgg_conv(x, filters, *, batch_norm, name):
    """3x3 "same" conv + ReLU, with batch norm in between (VGG-BN): layers `{name}_conv`,
    (`{name}_bn`,) `{name}_relu`. The conv has a bias only without batch norm, whose beta
    already plays that role."""
    if batch_norm:
        return apply_conv_bn(x, filters, 3, name=name)
    x = keras.layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def build_vgg16_backbone(*, batch_norm=False, input_shape=(None, None, 3), first_conv_padding=0,
                         weights=None, name=None):
    """VGG16 feature extractor (https://arxiv.org/abs/1409.1556).

    Max-pooling uses "same" padding, which for 2x2/2 windows is Caffe's ceil mode: a map of odd
    size keeps its last row and column, so level n has ceil(size / 2**n) pixels. For sizes that
    are multiples of 32 it equals keras.applications' "valid" (floor) pooling.

    Args:
        batch_norm: bool. Batch norm after every convolution (VGG16-BN). Defaults to False.
        input_shape: tuple. (H, W, C); H and W may be None. Defaults to (None, None, 3).
        first_conv_padding: int. Zero padding, in pixels per side, of the first convolution
            (Caffe's `pad` of conv1_1). 0 keeps VGG's own "same" padding (1 pixel). FCN uses 100,
            which grows the first feature map by 2*100-2 pixels so that any input survives its
            7x7 valid head. Defaults to 0.
        weights: str or Path. A keras.applications VGG16 weights file (`NOTOP_WEIGHTS_FILE` or
            `FULL_WEIGHTS_FILE`) whose convolutions are loaded; needs `batch_norm=False`, since
            no such file has batch norm. Defaults to None (random initialisation).
        name: str. Model name and layer prefix. Defaults to "vgg16" or "vgg16_bn".

    Returns:
        A `keras.Model` mapping an image to `{"P1": ..., "P5": ...}`, the output of each block's
        max-pool (`Pn` is 2**n times smaller than the first conv's output).

    Raises:
        ValueError: an invalid option, or a weights file that is missing or does not fit.

    Example:
        >>> backbone = build_vgg16_backbone(input_shape=(64, 64, 3))
        >>> backbone(keras.ops.zeros((1, 64, 64, 3)))["P5"].shape
        (1, 2, 2, 512)
    """
    if batch_norm not in (True, False):
        raise ValueError(f"`batch_norm` must be True or False; received batch_norm={batch_norm!r}")
    if isinstance(first_conv_padding, bool) or not isinstance(first_conv_padding, int) \
            or first_conv_padding < 0:
        raise ValueError(f"`first_conv_padding` must be an integer >= 0; received "
                         f"first_conv_padding={first_conv_padding!r}")
    if weights is not None and batch_norm:
        raise ValueError(f"`weights` needs batch_norm=False: keras.applications VGG16 weights "
                         f"have no batch norm; received batch_norm=True, weights={weights!r}")
    name = name or ("vgg16_bn" if batch_norm else "vgg16")
    inputs = keras.Input(shape=input_shape, name=f"{name}_input")
    x = inputs
    if first_conv_padding > 1:
        # The first conv's own "same" padding adds the last pixel.
        x = keras.layers.ZeroPadding2D(first_conv_padding - 1, name=f"{name}_block1_pad")(x)
    features = {}
    for block, widths in enumerate(VGG16_BLOCKS, start=1):
        for i, filters in enumerate(widths, start=1):
            x = apply_vgg_conv(x, filters, batch_norm=batch_norm,
                               name=f"{name}_block{block}_conv{i}")
        x = keras.layers.MaxPooling2D(2, strides=2, padding="same",
                                      name=f"{name}_block{block}_pool")(x)
        features[f"P{block}"] = x
    model = keras.Model(inputs, features, name=name)
    if weights is not None:
        saved = read_vgg16_weights(weights)
        for conv in VGG16_CONVS:
            assign_weights(model.get_layer(f"{name}_{conv}_conv"), saved[conv],
                           source=f"{weights}: {conv}")
    return model


def read_vgg16_weights(path):
    """Weights of a keras.applications VGG16 `.h5` file, keyed by its layer names.

    The file is loaded by `keras.applications.VGG16(weights=path)`, with the classifier when the
    file has one (`FULL_WEIGHTS_FILE`), so Keras itself checks every shape.

    Args:
        path: str or Path. `NOTOP_WEIGHTS_FILE` or `FULL_WEIGHTS_FILE` (or a file of that layout).

    Returns:
        dict layer name -> [kernel, bias] for `VGG16_CONVS`, and "fc1", "fc2", "predictions"
        (Dense layers) for the full file.

    Raises:
        ValueError: the file is missing, is not HDF5, lacks VGG16's layers or does not load.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"VGG16 weights file {path} does not exist; expected a local "
                         f"keras.applications file such as {NOTOP_WEIGHTS_FILE} (weights are "
                         f"never downloaded)")
    try:
        with h5py.File(path, "r") as file:
            saved = [n.decode() if isinstance(n, bytes) else str(n)
                     for n in file.attrs.get("layer_names", [])]
    except OSError as error:
        raise ValueError(f"VGG16 weights file {path} is not an HDF5 file: {error}") from error
    missing = [conv for conv in VGG16_CONVS if conv not in saved]
    if missing:
        raise ValueError(f"VGG16 weights file {path} lacks layers {missing}; expected the "
                         f"keras.applications layers {list(VGG16_CONVS)} (plus fc1, fc2, "
                         f"predictions in {FULL_WEIGHTS_FILE}); found {saved}")
    include_top = "fc1" in saved
    try:
        reference = keras.applications.VGG16(
            weights=str(path), include_top=include_top,
            input_shape=None if include_top else (None, None, 3))
    except ValueError as error:
        raise ValueError(f"VGG16 weights file {path} does not load into keras.applications "
                         f"VGG16(include_top={include_top}): {error}") from error
    return {layer.name: layer.get_weights() for layer in reference.layers if layer.weights}


def assign_weights(layer, values, *, source):
    """`layer.set_weights(values)`, with an error naming `source` and both shapes on mismatch."""
    expected = [tuple(w.shape) for w in layer.weights]
    received = [tuple(v.shape) for v in values]
    if expected != received:
        raise ValueError(f"{source}: weight shapes {received} do not fit layer {layer.name!r}, "
                         f"which expects {expected}")
    layer.set_weights(values)
