"""LinkNet's options: the width narrows every hidden layer by the same factor, the logits not;
the input link adds a full-resolution head; the box-context head turns sample logits into box
logits; both export to every runtime."""

import keras
import numpy as np
import pytest
from conftest import available_opencv_runtimes

from tfseg.deploy.exports import export_onnx
from tfseg.deploy.opencv_dnn import run_opencv
from tfseg.deploy.parity import run_onnxruntime
from tfseg.models.layers import apply_box_context
from tfseg.models.linknet import build_linknet


def conv_channels(model):
    """{layer name: output channels} of every convolution, nested encoder included."""
    channels = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            channels.update(conv_channels(layer))
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            channels[layer.name] = layer.filters
    return channels


def assert_every_runtime_agrees(model, x, path):
    """`model` exported to `path` gives its Keras logits on `x` in onnxruntime and in every
    OpenCV DNN engine installed."""
    expected = model(x).numpy().transpose(0, 3, 1, 2)
    export_onnx(model, path)
    outputs = {"onnxruntime": run_onnxruntime(path, x),
               **{runtime: run_opencv(path, x, runtime=runtime)
                  for runtime in available_opencv_runtimes()}}
    for runtime, output in outputs.items():
        np.testing.assert_allclose(output, expected, rtol=0, atol=1e-4, err_msg=runtime)


@pytest.mark.parametrize("width, divisor", [(0.5, 2), (0.25, 4)])
def test_width_divides_every_hidden_convolution(width, divisor):
    full = conv_channels(build_linknet(num_classes=3, input_shape=(64, 64, 1)))
    narrow = conv_channels(build_linknet(num_classes=3, input_shape=(64, 64, 1), width=width))
    assert full.keys() == narrow.keys() and len(full) > 30
    assert narrow.pop("linknet_logits") == full.pop("linknet_logits") == 3
    assert {name: filters // divisor for name, filters in full.items()} == narrow


@pytest.mark.parametrize("width, parameters", [(0.5, 2_896_162), (0.25, 728_578)])
def test_width_scales_the_parameters_by_its_square(width, parameters):
    """The default recipe's networks (4 input channels, 2 classes), pinned at the counts the
    docs give (728,578 for the default, 2,896,162 for its half-width predecessor)."""
    full = build_linknet(num_classes=2, input_shape=(64, 64, 4)).count_params()
    narrow = build_linknet(num_classes=2, input_shape=(64, 64, 4), width=width).count_params()
    assert narrow == parameters
    assert narrow / full == pytest.approx(width ** 2, rel=0.05)


def test_input_link_adds_a_full_resolution_head_that_sees_the_input():
    plain = build_linknet(num_classes=2, input_shape=(64, 64, 4), width=0.25)
    linked = build_linknet(num_classes=2, input_shape=(64, 64, 4), width=0.25, input_link=True)
    # 8 features at full size (2x2 deconv + BN), 3x3 conv of 8 + 4 input channels to 8 + BN,
    # 1x1 logits; in place of the paper's 2x2 deconv to the logits (8 x 2 x 4 + 2).
    head = (2 * 2 * 8 * 8 + 4 * 8) + (3 * 3 * 12 * 8 + 4 * 8) + (8 * 2 + 2)
    assert linked.count_params() - plain.count_params() == head - (8 * 2 * 4 + 2)
    concat = linked.get_layer("linknet_input_link")
    assert [tuple(t.shape[1:]) for t in concat.input] == [(64, 64, 8), (64, 64, 4)]


@pytest.mark.slow  # over 5 s: the fast tier keeps its 3-minute budget
def test_input_link_onnx_agrees_with_keras_in_every_runtime(tmp_path):
    """At a size LinkNet pads (the link takes the padded input), in onnxruntime and every
    OpenCV DNN engine (CI runs this in OpenCV 4 too)."""
    model = build_linknet(num_classes=2, input_shape=(45, 77, 3), width=0.25, input_link=True)
    x = np.random.default_rng(2).normal(size=(1, 45, 77, 3)).astype(np.float32)
    assert_every_runtime_agrees(model, x, tmp_path / "linked.onnx")


def test_unsupported_width_is_refused():
    with pytest.raises(ValueError, match=r"`width` must be one of \[1.0, 0.5, 0.25\]"):
        build_linknet(num_classes=2, input_shape=(64, 64, 1), width=0.75)


def box_context_model(window, size=(48, 64), channels=2):
    """`apply_box_context` alone, on logits given as the input."""
    logits = keras.Input((*size, channels))
    return keras.Model(logits, apply_box_context(logits, window, name="box"))


def ellipses_and_boxes(size, ellipses):
    """Foreground mask of axis-aligned ellipses (row, column, half-height, half-width) and
    the mask of their bounding boxes."""
    rows, columns = np.mgrid[:size[0], :size[1]]
    samples, boxes = np.zeros(size, bool), np.zeros(size, bool)
    for row, column, half_height, half_width in ellipses:
        inside = ((rows - row) / half_height) ** 2 + ((columns - column) / half_width) ** 2 <= 1
        samples |= inside
        found_rows, found_columns = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
        boxes[found_rows[0]:found_rows[-1] + 1, found_columns[0]:found_columns[-1] + 1] = True
    return samples, boxes


def test_box_context_starts_as_the_identity():
    logits = np.random.default_rng(0).normal(size=(2, 48, 64, 2)).astype(np.float32)
    output = box_context_model(9)(logits).numpy()
    np.testing.assert_array_equal(output, logits)


def test_box_context_lets_a_linear_rule_fill_each_sample_box():
    """The head's point: with a hand-set 1x1 mix ("foreground where the row strip and the
    column strip both meet a sample"), confident ellipse logits become exactly their boxes."""
    samples, boxes = ellipses_and_boxes((48, 64), [(14, 15, 9, 6), (33, 45, 8, 12)])
    assert (boxes & ~samples).sum() > 100          # corners the ellipses alone miss
    logits = np.stack([-5.0 * (2 * samples - 1), 5.0 * (2 * samples - 1)], -1)[None]
    model = box_context_model(window=25)
    mix = model.get_layer("box_mix")
    kernel = np.zeros((1, 1, 4, 2), np.float32)
    kernel[0, 0, [1, 3], 1] = 30.0                 # foreground of the row and column strips
    mix.set_weights([kernel, np.array([0.0, -45.0], np.float32)])
    predicted = model(logits.astype(np.float32)).numpy()[0].argmax(-1) == 1
    np.testing.assert_array_equal(predicted, boxes)


def test_box_context_adds_a_mix_of_the_strips_only():
    plain = build_linknet(num_classes=2, input_shape=(64, 64, 1), width=0.5).count_params()
    boxed = build_linknet(num_classes=2, input_shape=(64, 64, 1), width=0.5,
                          box_context=41).count_params()
    assert boxed - plain == 2 * 2 * 2 + 2          # a 1x1 conv from 2 x 2 strips to 2 logits


@pytest.mark.slow  # over 5 s: the fast tier keeps its 3-minute budget
def test_box_context_onnx_agrees_with_keras_in_every_runtime(tmp_path):
    """Softmax, strip max pooling and the mix in onnxruntime and every OpenCV DNN engine (CI
    runs this in OpenCV 4 too)."""
    model = box_context_model(window=21, size=(45, 77), channels=3)
    rng = np.random.default_rng(1)
    model.get_layer("box_mix").set_weights([rng.normal(size=(1, 1, 6, 3)).astype(np.float32),
                                            rng.normal(size=3).astype(np.float32)])
    x = rng.normal(scale=3.0, size=(1, 45, 77, 3)).astype(np.float32)
    assert_every_runtime_agrees(model, x, tmp_path / "box.onnx")
