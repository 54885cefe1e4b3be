"""Every registered model: output size for odd and even inputs, inference mode honoured,
parameter counts equal to the reference architectures (../shared/reference/MODELS.md), and
exports that agree with Keras in onnxruntime and both OpenCV DNN engines."""

import numpy as np
import pytest
from conftest import available_opencv_runtimes, psnr

from tfseg import models
from tfseg.config.schema import MODEL_TASKS, RECURRENT_MODELS
from tfseg.deploy.exports import export_onnx
from tfseg.deploy.opencv_dnn import run_opencv
from tfseg.deploy.parity import run_onnxruntime
from tfseg.models import randomize_batch_norm

# Per-frame models (one input, one output); recurrent step models (inputs pixels and state)
# are tested in their own files (test_icnet_temporal.py).
FRAME_MODELS = sorted(set(models.MODEL_BUILDERS) - set(RECURRENT_MODELS))
SEGMENTERS = sorted(set(models.SEGMENTATION_MODELS) - set(RECURRENT_MODELS))
# Small versions where the architecture has a width option.
SMALL = {"icnet": {"width": 0.5}, "linknet": {"width": 0.5}}


def trainable_parameters(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def build_small(name, size, channels=1, **options):
    """`name` at `size` with normalisation inside, small options, 3 classes or x2 SR."""
    task = {"num_classes": 3} if name in models.SEGMENTATION_MODELS else {"scale": 2}
    return models.build(name, input_shape=size, input_channels=channels,
                        mean=[10.0] * channels, std=[5.0] * channels,
                        **task, **SMALL.get(name, {}), **options)


def pixels(size, channels=1, batch=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 40, (batch, *size, channels)).astype(
        np.float32)


@pytest.mark.parametrize("name", SEGMENTERS)
@pytest.mark.parametrize("size", [(64, 64), (45, 77)])
def test_segmentation_logits_have_the_input_size(name, size):
    model = build_small(name, size)
    assert model(pixels(size), training=False).shape == (2, *size, 3)


@pytest.mark.parametrize("size", [(64, 64), (45, 77)])
def test_super_resolution_output_is_the_input_size_times_the_scale(size):
    model = build_small("sr_johnson", size, channels=3)
    assert model(pixels(size, 3), training=False).shape == (2, 2 * size[0], 2 * size[1], 3)


@pytest.mark.parametrize("name", FRAME_MODELS)
def test_call_without_training_flag_is_inference(name):
    channels = 3 if name in models.SUPER_RESOLUTION_MODELS else 1
    model = build_small(name, (64, 64), channels)
    randomize_batch_norm(model)
    x = pixels((64, 64), channels)
    inference = model(x, training=False).numpy()
    np.testing.assert_allclose(model(x).numpy(), inference, atol=1e-4)
    assert np.abs(model(x, training=True).numpy() - inference).max() > 1e-3


@pytest.mark.parametrize("name,options,expected", [
    # LinkNet, 12 CamVid classes: 11,534,796 (paper: 11.5 M).
    ("linknet", {"num_classes": 12, "input_shape": (360, 480), "input_channels": 3},
     11_534_796),
    # FCN-ResNet18, 1 channel, 2 classes: 11,464,838 counted with the seed's unused ResNet
    # classifier (512 x 2 + 2 = 1,026 parameters), which this model rightly omits.
    ("fcn_resnet18", {"num_classes": 2, "input_shape": (768, 128), "input_channels": 1},
     11_464_838 - 1_026),
    # sr_johnson (401,859 / 438,915), fcn32_vgg16 (134.29 M) and icnet are counted part by
    # part in their own test files.
])
def test_parameter_count_matches_reference(name, options, expected):
    assert trainable_parameters(models.build(name, **options)) == expected


def test_fcn_upsampling_starts_bilinear_and_can_be_frozen():
    model = models.build("fcn_resnet18", num_classes=2, input_shape=(64, 64),
                         input_channels=1, trainable_upsampling=False)
    layer = model.get_layer("fcn_resnet18_upsample")
    kernel = layer.get_weights()[0]
    assert not layer.trainable
    assert kernel[:, :, 0, 1].max() == 0 and kernel[7, 7, 0, 0] == kernel.max()


def test_unknown_option_suggests_the_closest():
    with pytest.raises(ValueError, match="has no option 'stm'; did you mean 'stem'"):
        models.build("fcn_resnet18", num_classes=2, input_shape=(64, 64), stm="small")


def test_task_arguments_are_checked():
    with pytest.raises(ValueError, match="'linknet' segments: give num_classes"):
        models.build("linknet", input_shape=(64, 64))
    with pytest.raises(ValueError, match="takes `scale`, not num_classes"):
        models.build("sr_johnson", num_classes=2, input_shape=(64, 64))


@pytest.mark.slow
@pytest.mark.parametrize("name", FRAME_MODELS)
def test_onnx_export_agrees_with_keras_in_every_runtime(name, tmp_path):
    """Static odd-size export, NCHW: logits within 1e-3 and argmax agreement >= 99.9 %
    (super-resolution: PSNR >= 60 dB between runtimes on the 0..255 scale)."""
    super_resolution = name in models.SUPER_RESOLUTION_MODELS
    channels, size = (3, (24, 20)) if super_resolution else (1, (45, 77))
    model = build_small(name, size, channels)
    randomize_batch_norm(model)
    x = pixels(size, channels)
    expected = model(x, training=False).numpy().transpose(0, 3, 1, 2)
    path = export_onnx(model, tmp_path / f"{name}.onnx")
    outputs = {"onnxruntime": run_onnxruntime(path, x),
               **{runtime: run_opencv(path, x, runtime=runtime)
                  for runtime in available_opencv_runtimes()}}
    for runtime, output in outputs.items():
        assert output.shape == expected.shape, runtime
        if super_resolution:
            assert psnr(output, expected) >= 60.0, runtime
        else:
            # Relative to the logits too: a randomly initialised FCN-32s's are about 4e-4.
            tolerance = min(1e-3, 1e-3 * float(np.abs(expected).max()))
            difference = float(np.abs(output - expected).max())
            agreement = float(np.mean(output.argmax(1) == expected.argmax(1)))
            assert difference <= tolerance and agreement >= 0.999, (
                runtime, difference, tolerance, agreement)


def test_every_model_has_its_task_in_the_one_table_that_says_it():
    # A builder without a task fails at import; a task without a builder here.
    assert set(models.MODEL_BUILDERS) == set(MODEL_TASKS)
