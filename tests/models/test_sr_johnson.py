"""Johnson et al.'s super-resolution network: the paper's parameter counts, exact output sizes,
the 0..255 output range, inference mode honoured, argument checks, and ONNX parity in
onnxruntime and both OpenCV DNN engines."""

import keras
import numpy as np
import pytest
from conftest import available_opencv_runtimes, psnr

from tfseg.deploy.exports import export_onnx
from tfseg.deploy.opencv_dnn import run_opencv
from tfseg.deploy.parity import run_onnxruntime
from tfseg.models import randomize_batch_norm
from tfseg.models.sr_johnson import build_sr_johnson


def trainable_parameters(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def normalized_images(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("scale,expected", [(4, 401_859), (8, 438_915)])
@pytest.mark.parametrize("upsample", ["transposed", "resize_conv"])
def test_parameter_count_matches_paper(scale, expected, upsample):
    # MODELS.md: 401,859 for x4 and 438,915 for x8 (RGB, every convolution with its bias).
    model = build_sr_johnson(scale=scale, input_shape=(None, None, 3), upsample=upsample)
    assert trainable_parameters(model) == expected


@pytest.mark.parametrize("upsample", ["transposed", "resize_conv"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("static_size,size", [((9, 7), (9, 7)), ((8, 6), (8, 6)),
                                               ((None, None), (11, 5))])
def test_output_is_input_size_times_scale(upsample, channels, static_size, size):
    model = build_sr_johnson(scale=4, input_shape=(*static_size, channels), upsample=upsample)
    expected = (size[0] * 4, size[1] * 4, channels)
    assert model.output_shape[1:] == tuple(4 * s if s else None for s in static_size) + (
        channels,)
    output = model(normalized_images((2, *size, channels)), training=False)
    assert output.shape == (2, *expected)


@pytest.mark.parametrize("scale", [2, 8])
def test_each_scale_upsamples_exactly(scale):
    model = build_sr_johnson(scale=scale, input_shape=(None, None, 3))
    assert model(normalized_images((1, 5, 3, 3)), training=False).shape == (
        1, 5 * scale, 3 * scale, 3)


def test_upsample_modes_use_their_own_layers():
    transposed = build_sr_johnson(upsample="transposed")
    resize_conv = build_sr_johnson(upsample="resize_conv")
    assert transposed.get_layer("sr_johnson_up2_deconv").strides == (2, 2)
    assert not any(isinstance(layer, keras.layers.Conv2DTranspose)
                   for layer in resize_conv.layers)
    assert resize_conv.get_layer("sr_johnson_up2_resize").interpolation == "nearest"


def test_output_is_in_pixel_range():
    model = build_sr_johnson(input_shape=(None, None, 3))
    randomize_batch_norm(model)
    # Large inputs saturate the tanh: the output must still stay within 0..255.
    output = model(100.0 * normalized_images((2, 10, 10, 3)), training=False).numpy()
    assert output.min() >= 0.0 and output.max() <= 255.0
    assert output.max() - output.min() > 100.0


@pytest.mark.parametrize("upsample", ["transposed", "resize_conv"])
def test_call_without_training_flag_is_inference(upsample):
    # TOOLCHAIN.md trap 1: model(x) must not silently run batch norm in training mode.
    model = build_sr_johnson(input_shape=(None, None, 3), upsample=upsample)
    randomize_batch_norm(model)
    x = normalized_images((2, 12, 10, 3))
    inference = model(x, training=False).numpy()
    np.testing.assert_allclose(model(x).numpy(), inference, atol=1e-4)
    assert np.abs(model(x, training=True).numpy() - inference).max() > 1.0


@pytest.mark.parametrize("options,message", [
    ({"scale": 3}, r"`scale` must be one of \(2, 4, 8\); received scale=3"),
    ({"scale": 16}, "received scale=16"),
    ({"upsample": "bilinear"}, "`upsample` must be one of .*received upsample='bilinear'"),
    ({"input_shape": (32, 32)}, r"`input_shape` must be \(H, W, C\).*\(32, 32\)"),
    ({"input_shape": (32, 32, None)}, "`input_shape` must be"),
])
def test_bad_options_raise(options, message):
    with pytest.raises(ValueError, match=message):
        build_sr_johnson(**options)


@pytest.mark.slow
def test_resize_conv_onnx_matches_keras_in_every_runtime(tmp_path):
    # test_models.py covers the default (transposed) mode.
    upsample = "resize_conv"
    # ONNX exports have a static size (TOOLCHAIN.md trap 5); a non-square one catches H/W mix-ups.
    model = build_sr_johnson(scale=4, input_shape=(24, 20, 3), upsample=upsample)
    randomize_batch_norm(model)
    path = export_onnx(model, tmp_path / "sr.onnx")
    images = normalized_images((2, 24, 20, 3))
    reference = model(images, training=False).numpy().transpose(0, 3, 1, 2)
    outputs = {"onnxruntime": run_onnxruntime(path, images),
               **{runtime: run_opencv(path, images, runtime=runtime)
                  for runtime in available_opencv_runtimes()}}
    for runtime, output in outputs.items():
        assert output.shape == reference.shape == (2, 3, 96, 80), runtime
        assert psnr(output, reference) >= 60.0, runtime
        assert np.abs(output - reference).max() <= 1e-2, runtime
