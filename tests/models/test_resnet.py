"""ResNet backbones: feature strides for every stem and dilation, parameter counts of the
reference networks, and ImageNet weights loaded from local files (a keras.applications ResNet50
file and a converted torchvision ResNet18 state_dict) reproducing the reference features."""

import logging
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import load_script
from keras.src.legacy.saving import legacy_h5_format

from tfseg.models.backbones.resnet import build_resnet_backbone
from tfseg.utils.errors import TfsegError

TOOL = Path(__file__).resolve().parents[2] / "tools" / "convert_resnet18_weights.py"
APPLICATIONS_FEATURES = {"P1": "conv1_relu", "P2_in": "pool1_pool", "P2": "conv2_block3_out",
                         "P3": "conv3_block4_out", "P4": "conv4_block6_out",
                         "P5": "conv5_block3_out"}


def trainable_parameters(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def randomize_batch_norm(model, rng):
    """Moves every batch norm away from its initial state, so statistics and epsilons matter."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n),
                               rng.normal(0, 0.1, n), rng.uniform(0.05, 2, n)])


@pytest.fixture(scope="module")
def keras_applications_file(tmp_path_factory):
    """A random keras.applications ResNet50 saved in the layout of its ImageNet file."""
    reference = keras.applications.ResNet50(weights=None, include_top=False,
                                            input_shape=(None, None, 3))
    randomize_batch_norm(reference, np.random.default_rng(0))
    path = (tmp_path_factory.mktemp("weights")
            / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, reference)
    return path, reference


def random_torchvision_state(rng, blocks=(2, 2, 2, 2)):
    """A torchvision ResNet state_dict of BasicBlocks (ResNet18 by default) with random values."""
    state = {}

    def conv(key, out_channels, in_channels, size):
        state[f"{key}.weight"] = rng.normal(0, np.sqrt(2 / (in_channels * size * size)),
                                            (out_channels, in_channels, size, size))

    def batch_norm(key, channels):
        state.update({f"{key}.weight": rng.uniform(0.5, 1.5, channels),
                      f"{key}.bias": rng.normal(0, 0.1, channels),
                      f"{key}.running_mean": rng.normal(0, 0.1, channels),
                      f"{key}.running_var": rng.uniform(0.5, 2, channels),
                      f"{key}.num_batches_tracked": np.array(100)})

    conv("conv1", 64, 3, 7)
    batch_norm("bn1", 64)
    in_channels = 64
    for stage, (count, channels) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
        for block in range(count):
            prefix = f"layer{stage}.{block}"
            conv(f"{prefix}.conv1", channels, in_channels, 3)
            batch_norm(f"{prefix}.bn1", channels)
            conv(f"{prefix}.conv2", channels, channels, 3)
            batch_norm(f"{prefix}.bn2", channels)
            if in_channels != channels:
                conv(f"{prefix}.downsample.0", channels, in_channels, 1)
                batch_norm(f"{prefix}.downsample.1", channels)
            in_channels = channels
    state["fc.weight"] = rng.normal(0, 0.01, (1000, 512))
    state["fc.bias"] = np.zeros(1000)
    return {key: value.astype(np.float32) for key, value in state.items()}


def torchvision_resnet18_features(state, images):
    """torchvision's ResNet18 forward pass, written from its definition with explicit PyTorch
    padding (conv k // 2, max-pool 1 with -inf)."""
    def conv(x, key, stride, pad):
        kernel = state[f"{key}.weight"].transpose(2, 3, 1, 0)
        return tf.nn.conv2d(x, kernel, stride, [[0, 0], [pad, pad], [pad, pad], [0, 0]])

    def batch_norm(x, key):
        scale = state[f"{key}.weight"] / np.sqrt(state[f"{key}.running_var"] + 1e-5)
        return (x - state[f"{key}.running_mean"]) * scale + state[f"{key}.bias"]

    x = tf.nn.relu(batch_norm(conv(images, "conv1", 2, 3), "bn1"))
    features = {"P1": x}
    x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=-np.inf)
    x = tf.nn.max_pool2d(x, 3, 2, "VALID")
    features["P2_in"] = x
    for stage in range(1, 5):
        for block in range(2):
            prefix = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            y = tf.nn.relu(batch_norm(conv(x, f"{prefix}.conv1", stride, 1), f"{prefix}.bn1"))
            y = batch_norm(conv(y, f"{prefix}.conv2", 1, 1), f"{prefix}.bn2")
            if f"{prefix}.downsample.0.weight" in state:
                x = batch_norm(conv(x, f"{prefix}.downsample.0", stride, 0),
                               f"{prefix}.downsample.1")
            x = tf.nn.relu(x + y)
        features[f"P{stage + 1}"] = x
    return {key: value.numpy() for key, value in features.items()}


@pytest.fixture(scope="module")
def converter():
    return load_script(TOOL)


@pytest.fixture(scope="module")
def torchvision_npz(tmp_path_factory):
    state = random_torchvision_state(np.random.default_rng(1))
    path = tmp_path_factory.mktemp("torchvision") / "resnet18.npz"
    np.savez(path, **state)
    return path, state


@pytest.fixture(scope="module")
def resnet18_file(converter, torchvision_npz, tmp_path_factory):
    path = tmp_path_factory.mktemp("converted") / "resnet18.weights.h5"
    assert converter.main([str(torchvision_npz[0]), str(path)]) == 0
    return path


def assert_features_close(actual, expected):
    for key, reference in expected.items():
        scale = float(np.abs(reference).max())
        difference = float(np.abs(np.asarray(actual[key]) - reference).max())
        assert actual[key].shape == reference.shape, key
        assert difference <= 1e-5 * max(scale, 1.0), f"{key}: max abs diff {difference:.3g}"


@pytest.mark.parametrize("stem", ["imagenet", "deep"])
def test_resnet50_features_are_at_their_strides(stem):
    backbone = build_resnet_backbone(depth=50, stem=stem, width=0.5, input_shape=(64, 96, 3))
    features = backbone(np.zeros((1, 64, 96, 3), np.float32), training=False)
    stem_channels = 32 if stem == "imagenet" else 64
    expected = {"P1": (32, 48, stem_channels), "P2_in": (16, 24, stem_channels),
                "P2": (16, 24, 128), "P3": (8, 12, 256), "P4": (4, 6, 512), "P5": (2, 3, 1024)}
    assert {key: tuple(value.shape[1:]) for key, value in features.items()} == expected


def test_resnet50_dilated_stages_keep_output_stride_8():
    backbone = build_resnet_backbone(depth=50, stem="deep", width=0.5, dilation=(1, 1, 2, 4),
                                     input_shape=(64, 64, 3))
    features = backbone(np.zeros((1, 64, 64, 3), np.float32), training=False)
    # Stages 4 and 5 stay at stride 8: "P3" holds the deepest feature there (conv5_3).
    assert {key: tuple(value.shape[1:]) for key, value in features.items()} == {
        "P1": (32, 32, 64), "P2_in": (16, 16, 64), "P2": (16, 16, 128), "P3": (8, 8, 1024)}
    conv = backbone.get_layer("resnet50_stage4_block2_2_conv")
    assert conv.dilation_rate == (4, 4) and conv.strides == (1, 1)


def test_resnet18_small_stem_keeps_output_stride_8():
    backbone = build_resnet_backbone(depth=18, stem="small", input_shape=(32, 32, 1))
    features = backbone(np.zeros((1, 32, 32, 1), np.float32), training=False)
    assert {key: tuple(value.shape[1:]) for key, value in features.items()} == {
        "P0": (32, 32, 64), "P1": (16, 16, 128), "P2": (8, 8, 256), "P3": (4, 4, 512)}


@pytest.mark.parametrize("depth,expected", [
    # torchvision resnet18 without its 1000-class classifier (11,689,512 - 513,000).
    (18, 11_176_512),
    # keras.applications.ResNet50(include_top=False).
    (50, 23_534_592),
])
def test_parameter_count_matches_reference(depth, expected):
    assert trainable_parameters(build_resnet_backbone(depth=depth)) == expected


def test_resnet50_reproduces_keras_applications_features(keras_applications_file):
    path, reference = keras_applications_file
    backbone = build_resnet_backbone(depth=50, weights=path, input_shape=(64, 80, 3))
    taps = keras.Model(reference.input, {key: reference.get_layer(name).output
                                         for key, name in APPLICATIONS_FEATURES.items()})
    images = np.random.default_rng(2).normal(size=(2, 64, 80, 3)).astype(np.float32)
    expected = {key: value.numpy() for key, value in taps(images, training=False).items()}
    assert_features_close(backbone(images, training=False), expected)


def test_deep_stem_loads_all_but_the_stem_and_says_which(keras_applications_file, caplog):
    path, reference = keras_applications_file
    with caplog.at_level(logging.WARNING, logger="tfseg.models.backbones.resnet"):
        backbone = build_resnet_backbone(depth=50, stem="deep", dilation=(1, 1, 2, 4),
                                         weights=path, name="trunk")
    listed = caplog.records[-1].getMessage().rsplit(": ", 1)[1].split(", ")
    assert sorted(listed) == sorted(f"trunk_{unit}_{kind}" for kind in ("conv", "bn") for unit in (
        "stem_1", "stem_2", "stem_3", "stage1_block1_1", "stage1_block1_proj"))
    loaded = backbone.get_layer("trunk_stage3_block2_2_conv").get_weights()
    for ours, theirs in zip(loaded, reference.get_layer("conv4_block2_2_conv").get_weights()):
        np.testing.assert_array_equal(ours, theirs)


def test_converted_resnet18_reproduces_torchvision_features(resnet18_file, torchvision_npz):
    # At 65 x 97 every stride-2 layer sees an odd size, where TF "same" padding equals
    # PyTorch's symmetric padding (at even sizes TF pads one pixel less at the top and left).
    backbone = build_resnet_backbone(depth=18, weights=resnet18_file, input_shape=(65, 97, 3))
    images = np.random.default_rng(3).normal(size=(2, 65, 97, 3)).astype(np.float32)
    expected = torchvision_resnet18_features(torchvision_npz[1], images)
    assert_features_close(backbone(images, training=False), expected)


def test_resnet18_weights_load_into_a_one_channel_small_stem(resnet18_file, caplog):
    with caplog.at_level(logging.WARNING, logger="tfseg.models.backbones.resnet"):
        backbone = build_resnet_backbone(depth=18, stem="small", input_shape=(32, 32, 1),
                                         weights=resnet18_file)
    assert caplog.records[-1].getMessage().endswith("resnet18_stem_conv, resnet18_stem_bn")
    reference = build_resnet_backbone(depth=18, weights=resnet18_file)
    for name in ("resnet18_stage1_block1_1_conv", "resnet18_stage4_block2_2_bn"):
        for ours, theirs in zip(backbone.get_layer(name).get_weights(),
                                reference.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)


def test_missing_weights_file_is_named(tmp_path):
    missing = tmp_path / "nowhere.h5"
    with pytest.raises(ValueError, match=f"{missing}: no such weights file.*keras.applications"):
        build_resnet_backbone(depth=50, weights=missing)


def test_weights_of_the_other_depth_are_refused(keras_applications_file, resnet18_file):
    with pytest.raises(ValueError, match=f"{resnet18_file}: cannot be read as the "
                                         f"keras.applications ResNet50"):
        build_resnet_backbone(depth=50, weights=resnet18_file)
    with pytest.raises(ValueError, match=f"{keras_applications_file[0]}: cannot be read as a "
                                         f"ResNet18 weights file"):
        build_resnet_backbone(depth=18, weights=keras_applications_file[0])


def test_weights_of_another_width_are_refused(keras_applications_file):
    with pytest.raises(ValueError, match=r"resnet50_stage1_block1_2_conv needs weights of shapes "
                                         r"\[\(3, 3, 32, 32\), \(32,\)\] but the file holds "
                                         r"conv2_block1_2_conv \[\(3, 3, 64, 64\), \(64,\)\]"):
        build_resnet_backbone(depth=50, width=0.5, weights=keras_applications_file[0])


def test_converter_refuses_a_deeper_resnet(converter, tmp_path):
    npz = tmp_path / "resnet34.npz"
    np.savez(npz, **random_torchvision_state(np.random.default_rng(4), blocks=(3, 4, 6, 3)))
    with pytest.raises(TfsegError, match=r"not a torchvision ResNet18 state_dict; missing keys "
                                         r"\[\], unexpected keys \['layer1.2.bn1.bias'"):
        converter.convert(npz, tmp_path / "out.weights.h5")


def test_converter_refuses_wrong_shapes_and_names(converter, torchvision_npz, tmp_path):
    state = dict(torchvision_npz[1])
    state["layer3.0.conv2.weight"] = state["layer3.0.conv2.weight"][:, :128]
    npz = tmp_path / "bad.npz"
    np.savez(npz, **state)
    with pytest.raises(TfsegError, match=r"layer3.0.conv2.weight converts to shape "
                                         r"\(3, 3, 128, 256\), but ResNet18 layer "
                                         r"resnet18_stage3_block1_2_conv needs \(3, 3, 256, 256\)"):
        converter.convert(npz, tmp_path / "out.weights.h5")
    with pytest.raises(TfsegError, match="must end in .weights.h5"):
        converter.convert(torchvision_npz[0], tmp_path / "out.h5")


@pytest.mark.parametrize("options,message", [
    ({"depth": 34}, "`depth` must be one of"),
    ({"stem": "cifar"}, "`stem` must be one of"),
    ({"width": 0.75}, r"`width` must be one of \[1.0, 0.5, 0.25\]; received width=0.75"),
    ({"dilation": (1, 2)}, "`dilation` must be 4 integers"),
    ({"dilation": (1, 1, 0, 1)}, "`dilation` must be 4 integers"),
])
def test_bad_options_raise(options, message):
    with pytest.raises(ValueError, match=message):
        build_resnet_backbone(**options)
