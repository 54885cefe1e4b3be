"""FCN-32s on VGG16: output at the input size for any size, the aligned crop, the bilinear
upsampling, the parameter count, and ImageNet weights (trunk and convolutionalised
classifier); export parity is in test_models.py. FCN-32s has 134 M parameters: builds are shared where possible."""

import math

import keras
import numpy as np
import pytest
from test_vgg import write_legacy_h5

from tfseg import models
from tfseg.models.backbones.vgg import FULL_WEIGHTS_FILE, NOTOP_WEIGHTS_FILE
from tfseg.models.fcn import FCN32_CROP_OFFSET, build_fcn32_vgg16
from tfseg.models.layers import bilinear_upsampling_kernel

# Trainable parameters of the seed's FCN-32s (VGG16-BN, 1 input channel, 2 classes), by part.
PARAMETERS = {
    # 3x3 convs without bias (BN's beta replaces it): 9 * (1*64 + 64*64 + 64*128 + 128*128
    # + 128*256 + 2*256*256 + 256*512 + 5*512*512) = 14,709,312; BN gamma and beta on
    # 2*(2*64 + 2*128 + 3*256 + 6*512) = 8,448 channels.
    "backbone": 14_709_312 + 8_448,
    "fc6": 7 * 7 * 512 * 4096 + 4096,
    "fc7": 4096 * 4096 + 4096,
    "score": 4096 * 2 + 2,
    "upsample": 64 * 64 * 2 * 2 + 2,
}
FCN32_PARAMETERS = 134_288_196  # the acceptance figure: 134.29 M within 0.5 %


def trainable_parameters(model_or_layer):
    return int(sum(np.prod(w.shape) for w in model_or_layer.trainable_weights))


def upsampled_size(size, rounding=math.ceil):
    """Size of FCN-32s' upsampled map: conv1_1 padded by 100 (+198), five 2x2/2 pools
    (ceil mode), 7x7 valid fc6 (-6), 64/32 valid transposed conv ((n - 1) * 32 + 64)."""
    return 32 * (rounding((size + 198) / 32) - 6) + 32


@pytest.fixture(scope="module")
def fcn32():
    """The seed's FCN-32s (VGG16-BN, 1 input channel, 2 classes) at an odd size."""
    return build_fcn32_vgg16(num_classes=2, input_shape=(45, 77, 1))


@pytest.fixture(scope="module")
def notop_file(tmp_path_factory):
    reference = keras.applications.VGG16(weights=None, include_top=False)
    return write_legacy_h5(reference, tmp_path_factory.mktemp("vgg") / NOTOP_WEIGHTS_FILE)


def test_fcn32_output_size_equals_input_size(fcn32):
    x = np.random.default_rng(0).normal(size=(1, 45, 77, 1)).astype(np.float32)
    assert fcn32(x, training=False).shape == (1, 45, 77, 2)
    assert fcn32.get_layer("fcn32_vgg16_upsample").output.shape[1:3] == (upsampled_size(45),
                                                                           upsampled_size(77))


# 1x1 (tiny), 26 (H + 198 a multiple of 32: least room), 27 (most room), odd, the seed's size.
@pytest.mark.parametrize("size", [(1, 1), (26, 27), (33, 33), (768, 128)])
def test_fcn32_output_size_equals_input_size_for_any_size(size):
    model = build_fcn32_vgg16(num_classes=3, input_shape=(*size, 1))
    assert model.get_layer("fcn32_vgg16_upsample").output.shape[1:3] == tuple(
        upsampled_size(s) for s in size)
    assert model(np.ones((1, *size, 1), np.float32), training=False).shape == (1, *size, 3)


def test_crop_fits_every_input_size_only_with_ceil_mode_pooling():
    sizes = np.arange(1, 4097)
    room = np.array([upsampled_size(s) for s in sizes]) - sizes
    assert room.min() == 38 and room.min() >= 2 * FCN32_CROP_OFFSET
    # Floor-mode pooling (PyTorch's default) loses up to 31 pixels: too few for some sizes.
    floor_room = np.array([upsampled_size(s, math.floor) for s in sizes]) - sizes
    assert floor_room.min() == 7


def test_fcn32_parameter_count(fcn32):
    parts = {part: trainable_parameters(fcn32.get_layer(f"fcn32_vgg16_{part}"))
             for part in ("backbone", "score", "upsample")}
    for fc in ("fc6", "fc7"):
        parts[fc] = trainable_parameters(fcn32.get_layer(f"fcn32_vgg16_{fc}_conv"))
    assert parts == PARAMETERS
    assert trainable_parameters(fcn32) == sum(PARAMETERS.values()) == FCN32_PARAMETERS
    assert abs(FCN32_PARAMETERS / 134.29e6 - 1) < 0.005


def test_fcn32_upsampling_starts_bilinear_and_trains(fcn32):
    layer = fcn32.get_layer("fcn32_vgg16_upsample")
    kernel, bias = layer.get_weights()
    np.testing.assert_array_equal(kernel, bilinear_upsampling_kernel(64, 2))
    np.testing.assert_array_equal(bias, 0)
    assert layer.trainable and trainable_parameters(layer) == PARAMETERS["upsample"]


def test_fcn32_upsampling_can_be_frozen():
    model = build_fcn32_vgg16(num_classes=2, input_shape=(33, 33, 1), trainable_upsampling=False)
    layer = model.get_layer("fcn32_vgg16_upsample")
    assert not layer.trainable
    np.testing.assert_array_equal(layer.get_weights()[0], bilinear_upsampling_kernel(64, 2))
    assert trainable_parameters(model) == FCN32_PARAMETERS - PARAMETERS["upsample"]


@pytest.mark.slow  # over 5 s: the fast tier keeps its 3-minute budget
def test_crop_offset_is_aligned_an_impulse_comes_back_centred_on_its_cell():
    """Every conv becomes the identity on channel 0 (centre tap 1), so an impulse at pixel x
    survives the trunk as one coarse pixel, which the bilinear upsampling spreads into a tent
    peaking at the centre of that 32-pixel cell. Over 32 consecutive x (one full cell) the peak
    is x + 15.5 ... x - 15.5, symmetric about x, only if the crop is aligned (19); the seed's
    crop at 16 would shift every peak by +3."""
    model = build_fcn32_vgg16(num_classes=1, input_shape=(48, 48, 1), batch_norm=False)
    for layer in models.all_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            kernel = np.zeros(layer.kernel.shape, np.float32)
            centre = kernel.shape[0] // 2
            kernel[centre, centre, 0, 0] = 1.0
            layer.set_weights([kernel, np.zeros(layer.bias.shape, np.float32)])
    # 32 consecutive positions, two per image: rows 8..23, columns 24..39.
    rows = np.arange(8, 24)
    images = np.zeros((len(rows), 48, 48, 1), np.float32)
    images[np.arange(len(rows)), rows, rows + 16, 0] = 1.0
    outputs = np.concatenate([model(images[i:i + 8], training=False).numpy()[..., 0]
                              for i in range(0, len(rows), 8)])
    peaks = np.array([np.argwhere(o >= o.max() * (1 - 1e-6)).mean(axis=0) for o in outputs])
    displacement = np.concatenate([peaks[:, 0] - rows, peaks[:, 1] - (rows + 16)])
    np.testing.assert_array_equal(np.sort(displacement), np.arange(-15.5, 16))
    assert displacement.mean() == 0


def test_backbone_weights_load_into_the_fcn32_trunk(notop_file):
    model = build_fcn32_vgg16(num_classes=2, input_shape=(32, 32, 3), batch_norm=False,
                              backbone_weights=notop_file)
    reference = keras.applications.VGG16(weights=notop_file, include_top=False)
    for conv in ("block1_conv1", "block5_conv3"):
        got = model.get_layer("fcn32_vgg16_backbone").get_layer(f"fcn32_vgg16_backbone_{conv}_conv")
        for ours, theirs in zip(got.get_weights(), reference.get_layer(conv).get_weights()):
            np.testing.assert_array_equal(ours, theirs)


def test_convolutionalize_classifier_needs_the_full_file(notop_file):
    with pytest.raises(ValueError, match=f"has no classifier.*{FULL_WEIGHTS_FILE}"):
        build_fcn32_vgg16(num_classes=2, input_shape=(32, 32, 3), batch_norm=False,
                          backbone_weights=notop_file, convolutionalize_classifier=True)


@pytest.mark.parametrize("options,match", [
    ({"input_shape": (None, None, 1)}, "`input_shape` must have a static height and width"),
    ({"crop_offset": -1}, "`crop_offset` must be an integer >= 0; received crop_offset=-1"),
    ({"input_shape": (26, 26, 1), "crop_offset": 39},
     ("`crop_offset` must leave room for the 26x26 input in the 64x64 upsampled map; "
      "received crop_offset=39")),
    ({"trainable_upsampling": "no"}, "`trainable_upsampling` must be true or false"),
    ({"convolutionalize_classifier": True}, "`backbone_weights`, which is None"),
    ({"backbone_weights": "vgg16.h5"}, "`weights` needs batch_norm=False"),
])
def test_fcn32_bad_options_raise_value_error(options, match):
    with pytest.raises(ValueError, match=match):
        build_fcn32_vgg16(**{"num_classes": 2, "input_shape": (32, 32, 1), **options})


@pytest.mark.slow
def test_convolutionalized_classifier_computes_vgg16_fc1_and_fc2(tmp_path):
    reference = keras.applications.VGG16(weights=None, include_top=True)
    path = write_legacy_h5(reference, tmp_path / FULL_WEIGHTS_FILE)
    model = build_fcn32_vgg16(num_classes=2, input_shape=(32, 32, 3), batch_norm=False,
                              backbone_weights=path, convolutionalize_classifier=True)
    taps = keras.Model(reference.input, [reference.get_layer(name).output
                                         for name in ("block5_pool", "fc1", "fc2")])
    x = np.random.default_rng(0).uniform(0, 255, size=(1, 224, 224, 3)).astype(np.float32)
    pool5, fc1, fc2 = (t.numpy() for t in taps(x))
    fc6 = model.get_layer("fcn32_vgg16_fc6_conv")(pool5)  # 7x7 valid on 7x7: one pixel
    fc7 = model.get_layer("fcn32_vgg16_fc7_conv")(fc1.reshape(1, 1, 1, -1))
    np.testing.assert_allclose(np.maximum(fc6.numpy(), 0).reshape(fc1.shape), fc1,
                               rtol=1e-4, atol=1e-4 * np.abs(fc1).max())
    np.testing.assert_allclose(np.maximum(fc7.numpy(), 0).reshape(fc2.shape), fc2,
                               rtol=1e-4, atol=1e-4 * np.abs(fc2).max())
