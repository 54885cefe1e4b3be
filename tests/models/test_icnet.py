"""ICNet: output sizes of every cascade level for odd and even inputs, one shared trunk,
PyTorch adaptive-pooling windows, inference mode without an explicit flag, weights shared
between the cascade (training) and inference models, and ONNX parity in onnxruntime and both
OpenCV DNN engines."""

import math

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import available_opencv_runtimes
from keras.src.legacy.saving import legacy_h5_format

from tfseg.deploy.exports import export_onnx
from tfseg.deploy.opencv_dnn import run_opencv
from tfseg.deploy.parity import run_onnxruntime
from tfseg.models import all_layers, randomize_batch_norm
from tfseg.models.backbones.resnet import build_resnet_backbone
from tfseg.models.icnet import AdaptiveAveragePooling, build_icnet

SIZES = [(64, 64), (65, 97)]


def trainable_parameters(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def images(size, batch=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (batch, *size, 1)).astype(np.float32)


def torch_adaptive_average_pool(x, bins):
    """PyTorch AdaptiveAvgPool2d on NHWC numpy: window i spans [floor(i*H/b), ceil((i+1)*H/b))."""
    height, width = x.shape[1:3]
    out = np.zeros((x.shape[0], bins, bins, x.shape[3]))
    for i in range(bins):
        for j in range(bins):
            rows = slice(math.floor(i * height / bins), math.ceil((i + 1) * height / bins))
            columns = slice(math.floor(j * width / bins), math.ceil((j + 1) * width / bins))
            out[:, i, j] = x[:, rows, columns].mean(axis=(1, 2))
    return out


@pytest.mark.parametrize("size", SIZES)
def test_icnet_outputs_cover_the_input_at_every_level(size):
    model = build_icnet(num_classes=3, input_shape=(*size, 1), width=0.5, cascade_outputs=True)
    outputs = model(images(size), training=False)
    expected = {"logits": size, **{f"logits_{s}": tuple(math.ceil(v / s) for v in size)
                                   for s in (4, 8, 16)}}
    assert {key: tuple(value.shape) for key, value in outputs.items()} == {
        key: (2, *value, 3) for key, value in expected.items()}


def test_icnet_call_without_training_flag_is_inference():
    model = build_icnet(num_classes=2, input_shape=(65, 97, 1), width=0.5, cascade_outputs=True)
    randomize_batch_norm(model)
    x = images((65, 97))
    inference = model(x, training=False)
    default = model(x)
    training = model(x, training=True)
    for key, value in inference.items():
        np.testing.assert_allclose(default[key], value, atol=1e-5, err_msg=key)
        assert np.abs(training[key] - value).max() > 1e-3, key


def test_icnet_cascade_weights_copy_by_name_into_the_inference_model():
    cascade = build_icnet(num_classes=2, input_shape=(64, 64, 1), width=0.5,
                          cascade_outputs=True)
    inference = build_icnet(num_classes=2, input_shape=(64, 64, 1), width=0.5)
    randomize_batch_norm(cascade)
    trained = {layer.name: layer for layer in all_layers(cascade) if layer.weights}
    targets = {layer.name: layer for layer in all_layers(inference) if layer.weights}
    assert sorted(set(trained) - set(targets)) == ["icnet_cff16_classifier",
                                                   "icnet_cff8_classifier"]
    assert set(targets) <= set(trained)
    for name, layer in targets.items():
        layer.set_weights(trained[name].get_weights())
    x = images((64, 64))
    np.testing.assert_array_equal(inference(x, training=False),
                                  cascade(x, training=False)["logits"])


def test_icnet_sub2_and_sub4_share_one_trunk():
    model = build_icnet(num_classes=2, input_shape=(64, 64, 1), width=0.5)
    trunk = build_resnet_backbone(depth=50, stem="deep", width=0.5, dilation=(1, 1, 2, 4),
                                  input_shape=(None, None, 1), name="icnet_backbone")
    halves = [model.get_layer(f"icnet_trunk_{part}_conv3_1") for part in ("to", "from")]
    weighted = [[layer.name for layer in half.layers if layer.weights] for half in halves]
    assert not set(weighted[0]) & set(weighted[1])
    assert sorted(weighted[0] + weighted[1]) == sorted(
        layer.name for layer in trunk.layers if layer.weights)
    assert "icnet_backbone_stage2_block1_3_conv" in weighted[0]
    assert "icnet_backbone_stage2_block2_1_conv" in weighted[1]
    # The trunk's parameters are counted once.
    others = [layer for layer in model.layers if layer not in halves]
    assert trainable_parameters(model) == trainable_parameters(trunk) + sum(
        trainable_parameters(layer) for layer in others)


@pytest.mark.parametrize("size", [(3, 4), (5, 7), (6, 6), (32, 32), (2, 3)])
@pytest.mark.parametrize("bins", [1, 2, 3, 6])
def test_pyramid_pooling_windows_are_pytorch_adaptive_pooling(size, bins):
    x = np.random.default_rng(5).normal(size=(2, *size, 3)).astype(np.float32)
    layer = AdaptiveAveragePooling(bins)
    expected = torch_adaptive_average_pool(x, bins)
    np.testing.assert_allclose(layer(x), expected, atol=1e-6)
    # Static windows also trace in a tf.function (Keras' own layer fails there for 1 bin).
    np.testing.assert_allclose(tf.function(layer)(x), expected, atol=1e-6)


@pytest.mark.parametrize("width,expected", [(1.0, 24_727_778), (0.5, 6_431_234)])
def test_icnet_parameter_count(width, expected):
    # 2 classes, 1 channel; the count does not depend on the input size (1024 x 1024 alike).
    model = build_icnet(num_classes=2, input_shape=(64, 64, 1), width=width)
    assert trainable_parameters(model) == expected


def test_icnet_keras_round_trip_preserves_outputs(tmp_path):
    model = build_icnet(num_classes=2, input_shape=(64, 64, 1), width=0.5, cascade_outputs=True)
    randomize_batch_norm(model)
    model.save(tmp_path / "icnet.keras")
    restored = keras.models.load_model(tmp_path / "icnet.keras")
    x = images((64, 64))
    expected = model(x, training=False)
    for key, value in restored(x, training=False).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)


def test_icnet_backbone_weights_load_into_the_trunk(tmp_path):
    reference = keras.applications.ResNet50(weights=None, include_top=False,
                                            input_shape=(None, None, 3))
    path = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, reference)
    model = build_icnet(num_classes=2, input_shape=(64, 64, 3), backbone_weights=path)
    loaded = model.get_layer("icnet_trunk_from_conv3_1").get_layer(
        "icnet_backbone_stage4_block3_3_conv").get_weights()
    for ours, theirs in zip(loaded, reference.get_layer("conv5_block3_3_conv").get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(ValueError, match="needs weights of shapes"):
        build_icnet(num_classes=2, input_shape=(64, 64, 3), width=0.5, backbone_weights=path)


@pytest.mark.parametrize("options,message", [
    ({"width": 0.75}, r"`width` must be one of \[1.0, 0.5\]; received width=0.75"),
    # The encoder takes 0.25 (the default LinkNet's); ICNet's blocks keep the two widths.
    ({"width": 0.25}, r"`width` must be one of \[1.0, 0.5\]; received width=0.25"),
    ({"cascade_outputs": "yes"}, "`cascade_outputs` must be True or False"),
    ({"input_shape": (None, 64, 1)}, "`input_shape` must be a static"),
    ({"num_classes": 0}, "`num_classes` must be a positive integer"),
])
def test_icnet_bad_options_raise(options, message):
    with pytest.raises(ValueError, match=message):
        build_icnet(**{"num_classes": 2, "input_shape": (64, 64, 1), **options})


@pytest.mark.slow
def test_icnet_onnx_with_fractional_pyramid_resizes_matches_keras(tmp_path):
    # Padded to 96 x 224: 1/32 is 3 x 7; tf2onnx's scales 7/3 and 7/6 floor to 6 (TOOLCHAIN
    # trap 2), which export_onnx must rewrite to sizes. (test_models.py covers a plain size.)
    size = (65, 201)
    model = build_icnet(num_classes=3, input_shape=(*size, 1), width=0.5)
    randomize_batch_norm(model)
    x = images(size)
    expected = model(x, training=False).numpy().transpose(0, 3, 1, 2)
    path = export_onnx(model, tmp_path / "icnet.onnx")
    outputs = {"onnxruntime": run_onnxruntime(path, x),
               **{runtime: run_opencv(path, x, runtime=runtime)
                  for runtime in available_opencv_runtimes()}}
    for runtime, output in outputs.items():
        assert output.shape == expected.shape, runtime
        difference = float(np.abs(output - expected).max())
        assert difference <= 1e-3, f"{runtime}: max abs diff {difference:.3g}"
