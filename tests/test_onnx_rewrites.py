"""Each OpenCV 4 rewrite (tfseg.deploy.onnx_rewrites) on small hand-built graphs and on a tiny Keras
model converted by tf2onnx: the rewritten graph is valid, computes the same in onnxruntime, and
has the form old OpenCV importers need."""

import keras
import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from tfseg.deploy import onnx_rewrites
from tfseg.deploy.onnx_conversion import convert
from tfseg.models.icnet import apply_pyramid_pooling

END = onnx_rewrites.TO_THE_END


def make_model(nodes, shape, constants=None):
    """An opset-17 model from `nodes` with input "x" of `shape` (float) and output "y"."""
    initializers = [numpy_helper.from_array(np.asarray(value), name)
                    for name, value in (constants or {}).items()]
    graph = helper.make_graph(
        nodes, "test", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializers)
    return onnx.shape_inference.infer_shapes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))


def run(model, x):
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def rewritten(model, rewrite, atol=1e-5):
    """`rewrite` applied to a copy of `model`, checked valid and equivalent on random input."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    rewrite(result)
    onnx.checker.check_model(result)
    onnx.shape_inference.infer_shapes(result, strict_mode=True)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    expected = run(model, x)
    np.testing.assert_allclose(run(result, x), expected, rtol=0, atol=atol)
    return result


def nodes(model, op_type):
    return [node for node in model.graph.node if node.op_type == op_type]


def attribute(node, name):
    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == name)


def slice_bounds(model, node):
    """A Slice node's starts, ends, axes (and steps) as lists."""
    constants = {t.name: numpy_helper.to_array(t).tolist() for t in model.graph.initializer}
    return [constants[name] for name in node.input[1:]]


def int64(*values):
    return np.asarray(values, np.int64)


@pytest.mark.parametrize("pads", [[0, 0, 1, 1], [1, 0, 2, 1]])
def test_asymmetric_conv_transpose_becomes_unpadded_then_cropped(pads):
    weights = np.random.default_rng(1).normal(size=(4, 3, 3, 3)).astype(np.float32)
    model = make_model([helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2],
                                         kernel_shape=[3, 3], pads=pads)],
                       [1, 4, 5, 6], {"w": weights})
    result = rewritten(model, onnx_rewrites.crop_asymmetric_conv_transpose)
    [convolution], [crop] = nodes(result, "ConvTranspose"), nodes(result, "Slice")
    assert attribute(convolution, "pads") == [0, 0, 0, 0]
    starts, ends, axes = slice_bounds(result, crop)
    assert axes == [2, 3] and starts == pads[:2]
    assert ends == [-pad if pad else END for pad in pads[2:]]


@pytest.mark.parametrize("padding", [
    {"pads": [1, 1, 1, 1]},
    # Pads are ignored where output_shape is given.
    {"pads": [0, 0, 1, 1], "output_shape": [10, 12]},
])
def test_symmetric_or_implied_conv_transpose_padding_is_left_alone(padding):
    weights = np.ones((4, 3, 3, 3), np.float32)
    model = make_model([helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2],
                                         kernel_shape=[3, 3], **padding)],
                       [1, 4, 5, 6], {"w": weights})
    result = rewritten(model, onnx_rewrites.crop_asymmetric_conv_transpose)
    assert result.graph.node == model.graph.node


@pytest.mark.parametrize("kernel,stride,pads,bias", [
    (3, 2, [0, 0, 0, 0], True),    # LinkNet's upsampling (its crop follows as a Slice)
    (2, 2, [0, 0, 0, 0], False),   # LinkNet's logits: no crop needed
    (4, 2, [0, 0, 0, 0], True),
    (3, 3, [0, 0, 0, 0], True),
    (1, 2, [0, 0, 0, 0], True),    # every other row and column is the bias alone
    (3, 1, [1, 1, 1, 1], True),    # LinkNet's first decoder block
    (3, 1, [0, 1, 2, 1], False),
])
def test_conv_transpose_becomes_convolution(kernel, stride, pads, bias):
    rng = np.random.default_rng(2)
    constants = {"w": rng.normal(size=(3, 5, kernel, kernel)).astype(np.float32)}
    if bias:
        constants["b"] = rng.normal(size=5).astype(np.float32)
    model = make_model([helper.make_node("ConvTranspose", ["x", *constants], ["y"],
                                         strides=[stride, stride], kernel_shape=[kernel] * 2,
                                         pads=pads)], [1, 3, 5, 7], constants)
    result = rewritten(model, onnx_rewrites.conv_transpose_to_conv)
    assert not nodes(result, "ConvTranspose") and len(nodes(result, "Conv")) == 1
    assert len(nodes(result, "DepthToSpace")) == (stride > 1)


@pytest.mark.parametrize("attributes,shape", [
    ({"strides": [2, 2], "pads": [0, 0, 1, 1]}, [1, 3, 5, 7]),   # pads with a stride
    ({"strides": [2, 2], "group": 3}, [1, 3, 5, 7]),
    ({"strides": [2, 2], "output_padding": [1, 1]}, [1, 3, 5, 7]),
    ({"strides": [2, 1]}, [1, 3, 5, 7]),
    ({"strides": [2, 2]}, [1, 3, "height", 7]),                   # no static height
])
def test_conv_transpose_it_cannot_rewrite_is_left_alone(attributes, shape):
    weights = np.ones((3, 1 if "group" in attributes else 3, 3, 3), np.float32)
    model = make_model([helper.make_node("ConvTranspose", ["x", "w"], ["y"],
                                         kernel_shape=[3, 3], **attributes)],
                       shape, {"w": weights})
    result = rewritten(model, onnx_rewrites.conv_transpose_to_conv)
    assert result.graph.node == model.graph.node


@pytest.mark.parametrize("bounds,expected", [
    # tf2onnx's crop of an NHWC tensor in an NCHW graph: N and C whole, H and W cut.
    (([0, 0, 0, 0], [END, -19, -19, END], [0, 2, 3, 1]), ([0, 0], [-19, -19], [2, 3])),
    # Only one axis cut, the others whole (ICNet's adaptive-pooling windows).
    (([0, 0, 2], [END, END, 3], [0, 2, 3]), ([2], [3], [3])),
    # Cuts on C and W, descending: sorted, and the whole H between them filled in.
    (([1, 2], [-1, 4], [3, 1]), ([2, 0, 1], [4, END, -1], [1, 2, 3])),
    # Negative axes count from the end; a start before the beginning takes the axis whole.
    (([-99, 1], [END, 3], [-1, -2]), ([1], [3], [2])),
])
def test_slice_keeps_only_its_cut_axes_ascending(bounds, expected):
    starts, ends, axes = (int64(*values) for values in bounds)
    model = make_model([helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"])],
                       [1, 3, 40, 50], {"starts": starts, "ends": ends, "axes": axes})
    result = rewritten(model, onnx_rewrites.order_slice_axes)
    [node] = nodes(result, "Slice")
    assert slice_bounds(result, node) == list(map(list, expected))


def test_slice_steps_follow_their_axes():
    constants = {"starts": int64(0, 1), "ends": int64(END, 40), "axes": int64(3, 2),
                 "steps": int64(2, 3)}
    model = make_model([helper.make_node("Slice", ["x", *constants], ["y"])],
                       [1, 3, 40, 50], constants)
    result = rewritten(model, onnx_rewrites.order_slice_axes)
    assert slice_bounds(result, nodes(result, "Slice")[0]) == [
        [1, 0], [40, END], [2, 3], [3, 2]]


@pytest.mark.parametrize("axes,kernel", [([2], [6, 1]), ([-1], [1, 7]), ([3, 2], [6, 7])])
def test_reduce_mean_over_height_or_width_becomes_average_pool(axes, kernel):
    model = make_model([helper.make_node("ReduceMean", ["x"], ["y"], axes=axes, keepdims=1)],
                       [1, 300, 6, 7])
    result = rewritten(model, onnx_rewrites.reduce_mean_to_average_pool)
    [pool] = nodes(result, "AveragePool")
    assert not nodes(result, "ReduceMean") and attribute(pool, "kernel_shape") == kernel


@pytest.mark.parametrize("axes,keepdims", [([1], 1), ([2], 0)])
def test_other_reduce_means_are_left_alone(axes, keepdims):
    model = make_model([helper.make_node("ReduceMean", ["x"], ["y"], axes=axes,
                                         keepdims=keepdims)], [1, 3, 6, 7])
    result = rewritten(model, onnx_rewrites.reduce_mean_to_average_pool)
    assert result.graph.node == model.graph.node


def repeat(data, axis, times, shape, name):
    """`tf.repeat(data, times, axis)` as tf2onnx writes it: Unsqueeze, Tile, Reshape."""
    repeats = [1] * (len(shape) + 1)
    repeats[axis + 1] = times
    constants = {f"{name}_axes": int64(axis + 1), f"{name}_repeats": int64(*repeats),
                 f"{name}_shape": int64(*shape)}
    return [helper.make_node("Unsqueeze", [data, f"{name}_axes"], [f"{name}_expanded"]),
            helper.make_node("Tile", [f"{name}_expanded", f"{name}_repeats"],
                             [f"{name}_tiled"]),
            helper.make_node("Reshape", [f"{name}_tiled", f"{name}_shape"], [name])], constants


def test_repeated_rows_and_columns_become_one_nearest_resize():
    rows, row_constants = repeat("x", 2, 2, [1, 3, 10, 5], "rows")
    columns, column_constants = repeat("rows", 3, 3, [1, 3, 10, 15], "columns")
    columns[-1].output[0] = "y"
    model = make_model([*rows, *columns], [1, 3, 5, 5], {**row_constants, **column_constants})
    result = rewritten(model, onnx_rewrites.repeats_to_resize, atol=0)
    [resize] = result.graph.node
    assert resize.op_type == "Resize" and attribute(resize, "mode") == b"nearest"


def test_tile_that_is_not_an_upsampling_is_left_alone():
    model = make_model([helper.make_node("Tile", ["x", "repeats"], ["y"])], [1, 3, 5, 5],
                       {"repeats": int64(1, 1, 2, 2)})
    result = rewritten(model, onnx_rewrites.repeats_to_resize)
    assert result.graph.node == model.graph.node


@pytest.fixture(scope="module")
def keras_export():
    """A tiny Keras model with every pattern the rewrites target (ICNet's pyramid pooling,
    a stride-2 transposed convolution, nearest upsampling, a crop), exported by
    `tfseg.deploy.onnx_conversion.convert`, and the Keras output (NCHW) on a random input."""
    inputs = keras.Input((12, 20, 2))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    x = apply_pyramid_pooling(x, 8, name="ppm")
    x = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same")(x)
    x = keras.layers.UpSampling2D(2, interpolation="nearest")(x)
    model = keras.Model(inputs, keras.layers.Cropping2D(((1, 2), (3, 0)))(x))
    image = np.random.default_rng(2).normal(size=(1, 12, 20, 2)).astype(np.float32)
    expected = model(image, training=False).numpy().transpose(0, 3, 1, 2)
    proto = convert(model, opset=17, layout="NCHW", metadata={})
    return proto, image.transpose(0, 3, 1, 2), expected


def test_export_has_only_what_opencv_4_imports(keras_export):
    proto, _, _ = keras_export
    onnx.checker.check_model(proto)
    onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    assert not nodes(proto, "ReduceMean") and not nodes(proto, "Tile")
    for node in nodes(proto, "ConvTranspose"):
        pads = attribute(node, "pads")
        assert pads[:2] == pads[2:]
    for node in nodes(proto, "Slice"):
        axes = slice_bounds(proto, node)[2]
        assert axes == list(range(axes[0], axes[0] + len(axes)))


def test_export_agrees_with_keras(keras_export):
    proto, image, expected = keras_export
    np.testing.assert_allclose(run(proto, image), expected, rtol=0, atol=1e-5)


def test_rewriting_twice_changes_nothing(keras_export):
    proto, _, _ = keras_export
    again = onnx.ModelProto()
    again.CopyFrom(proto)
    assert onnx_rewrites.rewrite_for_opencv(again) == proto
