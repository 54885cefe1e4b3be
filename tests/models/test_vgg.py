"""VGG16 backbone: feature strides, Caffe ceil-mode pooling, the FCN first-conv padding, the BN
and plain layer sets, and ImageNet weights read from a local keras.applications file."""

import math

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

from tfseg.models.backbones.vgg import (
    NOTOP_WEIGHTS_FILE,
    VGG16_CONVS,
    build_vgg16_backbone,
    read_vgg16_weights,
)

WIDTHS = (64, 128, 256, 512, 512)


def write_legacy_h5(model, path):
    """Saves `model`'s weights in the layout of the keras.applications `.h5` files."""
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, model)
    return path


@pytest.fixture(scope="module")
def imagenet_notop(tmp_path_factory):
    """A randomly initialised keras.applications VGG16 (no top) and its weights file."""
    reference = keras.applications.VGG16(weights=None, include_top=False,
                                         input_shape=(None, None, 3))
    path = write_legacy_h5(reference, tmp_path_factory.mktemp("vgg") / NOTOP_WEIGHTS_FILE)
    return reference, path


def trainable_parameters(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


@pytest.mark.parametrize("size", [(64, 64), (45, 77)])
def test_vgg16_level_n_is_ceil_of_size_over_two_to_the_n(size):
    features = build_vgg16_backbone(input_shape=(*size, 3))(np.zeros((1, *size, 3)))
    assert sorted(features) == ["P1", "P2", "P3", "P4", "P5"]
    for level, width in enumerate(WIDTHS, start=1):
        # "same" 2x2/2 pooling keeps the last odd row/column: Caffe's ceil mode.
        expected = (1, *(math.ceil(s / 2 ** level) for s in size), width)
        assert features[f"P{level}"].shape == expected


def test_first_conv_padding_grows_the_first_map_by_twice_the_padding_minus_two():
    backbone = build_vgg16_backbone(input_shape=(45, 77, 1), first_conv_padding=100)
    assert backbone.get_layer("vgg16_block1_conv1_relu").output.shape == (None, 243, 275, 64)
    assert backbone.output["P5"].shape == (None, math.ceil(243 / 32), math.ceil(275 / 32), 512)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg16_layer_sets(batch_norm):
    backbone = build_vgg16_backbone(batch_norm=batch_norm, input_shape=(32, 32, 3))
    name = backbone.name
    assert name == ("vgg16_bn" if batch_norm else "vgg16")
    layers = {layer.name: layer for layer in backbone.layers}
    for conv in VGG16_CONVS:
        assert layers[f"{name}_{conv}_conv"].use_bias is not batch_norm
        assert (f"{name}_{conv}_bn" in layers) is batch_norm
        assert f"{name}_{conv}_relu" in layers
    assert sum(isinstance(layer, keras.layers.BatchNormalization)
               for layer in backbone.layers) == (13 if batch_norm else 0)
    # keras.applications VGG16 (no top): 14,714,688. BN drops the 4,224 conv biases and adds
    # gamma and beta for each of those 4,224 channels.
    assert trainable_parameters(backbone) == (14_718_912 if batch_norm else 14_714_688)


def test_relu_features_for_perceptual_losses_are_reachable_by_name():
    backbone = build_vgg16_backbone(input_shape=(32, 32, 3))
    taps = ["vgg16_block1_conv2_relu", "vgg16_block2_conv2_relu", "vgg16_block3_conv3_relu"]
    extractor = keras.Model(backbone.input, [backbone.get_layer(t).output for t in taps])
    shapes = [tuple(f.shape) for f in extractor(np.zeros((1, 32, 32, 3)))]
    assert shapes == [(1, 32, 32, 64), (1, 16, 16, 128), (1, 8, 8, 256)]


def test_imagenet_file_reproduces_keras_applications_features(imagenet_notop):
    reference, path = imagenet_notop
    backbone = build_vgg16_backbone(input_shape=(64, 64, 3), weights=path)
    taps = ["block1_conv2", "block2_conv2", "block3_conv3", "block5_pool"]
    expected = keras.Model(reference.input, [reference.get_layer(t).output for t in taps])
    ours = keras.Model(backbone.input, [backbone.get_layer(f"vgg16_{t}_relu").output
                                        for t in taps[:3]] + [backbone.output["P5"]])
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 64, 64, 3)).astype(np.float32)
    for got, want in zip(ours(x), expected(x)):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_read_vgg16_weights_returns_every_conv(imagenet_notop):
    _, path = imagenet_notop
    weights = read_vgg16_weights(path)
    assert sorted(weights) == sorted(VGG16_CONVS)
    assert weights["block1_conv1"][0].shape == (3, 3, 3, 64)


def test_missing_weights_file_is_named(tmp_path):
    path = tmp_path / NOTOP_WEIGHTS_FILE
    with pytest.raises(ValueError, match=f"{NOTOP_WEIGHTS_FILE} does not exist"):
        build_vgg16_backbone(weights=path)


def test_non_hdf5_weights_file_is_rejected(tmp_path):
    path = tmp_path / "vgg16.h5"
    path.write_text("not weights")
    with pytest.raises(ValueError, match="vgg16.h5 is not an HDF5 file"):
        build_vgg16_backbone(weights=path)


def test_weights_file_of_another_model_is_rejected(tmp_path):
    inputs = keras.Input((8, 8, 3))
    other = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(inputs))
    path = write_legacy_h5(other, tmp_path / "other.h5")
    with pytest.raises(ValueError, match=r"other.h5 lacks layers \['block1_conv1'"):
        build_vgg16_backbone(weights=path)


def test_weights_shape_mismatch_names_file_layer_and_shapes(imagenet_notop):
    _, path = imagenet_notop
    with pytest.raises(ValueError, match=r"block1_conv1: weight shapes \[\(3, 3, 3, 64\), "
                                         r"\(64,\)\] do not fit layer 'vgg16_block1_conv1_conv'"):
        build_vgg16_backbone(input_shape=(None, None, 1), weights=path)


@pytest.mark.parametrize("options,match", [
    ({"batch_norm": True, "weights": "vgg16.h5"}, "`weights` needs batch_norm=False"),
    ({"batch_norm": "yes"}, "`batch_norm` must be True or False; received batch_norm='yes'"),
    ({"first_conv_padding": -1}, ("`first_conv_padding` must be an integer >= 0; received "
                                   "first_conv_padding=-1")),
    ({"first_conv_padding": 1.5}, "received first_conv_padding=1.5"),
])
def test_bad_options_raise_value_error(options, match):
    with pytest.raises(ValueError, match=match):
        build_vgg16_backbone(**options)
