"""Keras model file -> static-size ONNX, run as a child process by
`tfseg.deploy.exports.export_onnx`:

    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python python -m tfseg.deploy.onnx_conversion \\
        MODEL.keras OUT.onnx '{"opset": 17, "layout": "NCHW"}'

The model is called with `training=False` (TOOLCHAIN.md trap 1) through a tf.function with a
static batch-1 signature, converted by tf2onnx, its Resize nodes are given exact sizes
(trap 2), and what OpenCV 4 imports wrongly is rewritten (`tfseg.deploy.onnx_rewrites`, trap 5b).
Run with the pure-python protobuf backend: under the default one tf2onnx keeps a copy of the
weights per optimiser pass.
"""

import json
import sys

import keras
import numpy as np
import onnx
import tensorflow as tf
import tf2onnx

import tfseg
import tfseg.models  # noqa: F401  (registers the custom layers the model file names)
from tfseg.deploy.metadata import STATE_INPUT, STATE_OUTPUT, encode_metadata, state_metadata
from tfseg.deploy.onnx_rewrites import rewrite_for_opencv
from tfseg.deploy.runtimes import frame_input_shape, model_state_shape, step_outputs

INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"


def convert(model, *, opset, layout, metadata):
    """The ONNX ModelProto of `model` at its static input size, batch 1.

    A recurrent step model (`tfseg.deploy.runtimes.model_state_shape`) gets a second input,
    the state `STATE_INPUT`, and a second output, the next state `STATE_OUTPUT`; with layout
    "NCHW" the state is channels-first too, so OpenCV DNN feeds both alike. The state's
    description joins the metadata (`tfseg.deploy.metadata.state_metadata`).
    """
    height, width, channels = frame_input_shape(model)[1:]
    state_shape = model_state_shape(model)
    specs = [tf.TensorSpec([1, height, width, channels], tf.float32, name=INPUT_NAME)]
    outputs = [OUTPUT_NAME]
    if state_shape is None:
        def infer(pixels):
            return {OUTPUT_NAME: model(pixels, training=False)}
    else:
        specs.append(tf.TensorSpec([1, *state_shape], tf.float32, name=STATE_INPUT))
        outputs.append(STATE_OUTPUT)
        metadata = {**metadata, **encode_metadata(state_metadata(state_shape, layout))}

        def infer(pixels, state):
            return step_outputs(model, pixels, state)   # {OUTPUT_NAME, STATE_OUTPUT}

    nchw = layout == "NCHW"
    proto, _ = tf2onnx.convert.from_function(
        tf.function(infer, input_signature=specs), input_signature=specs, opset=opset,
        inputs_as_nchw=[f"{spec.name}:0" for spec in specs] if nchw else None,
        outputs_as_nchw=outputs if nchw else None)
    # The file's own facts win over the caller's metadata (str -> str, already encoded).
    properties = {**metadata, "tfseg_version": tfseg.__version__, "input_name": INPUT_NAME,
                  "output_name": OUTPUT_NAME, "input_size": f"{height}x{width}", "input_channels": str(channels),
                  "layout": layout}
    onnx.helper.set_model_props(proto, properties)
    resize_by_sizes(proto)
    rewrite_for_opencv(proto)
    return proto


def resize_by_sizes(proto):
    """Rewrites every Resize that tf2onnx gave `scales` to exact integer `sizes`.

    tf2onnx stores a static 3 -> 7 resize as scale 7/3, which runtimes floor to 6: onnxruntime
    then rejects the graph and OpenCV DNN silently returns the wrong size (TOOLCHAIN.md trap 2).
    The intended size is round(input size x scale), since the scale is that ratio in float32.
    Nodes are rewritten in graph order, and shapes are inferred again after each size that
    flooring got wrong, so later nodes see their true input sizes.
    """
    graph = proto.graph
    constants = {tensor.name: tensor for tensor in graph.initializer}
    shapes = _inferred_shapes(proto)
    for node in graph.node:
        if node.op_type != "Resize" or len(node.input) != 3 or node.input[2] not in constants:
            continue
        scales = onnx.numpy_helper.to_array(constants[node.input[2]]).astype(np.float64)
        shape = shapes.get(node.input[0])
        if not shape or 0 in shape or len(shape) != len(scales):
            raise ValueError(f"Resize node {node.name!r}: cannot rewrite scales {scales} to "
                             f"sizes without the static input shape (got {shape})")
        exact = np.round(np.asarray(shape) * scales)
        sizes_name = f"{node.name}_sizes"
        graph.initializer.append(onnx.numpy_helper.from_array(exact.astype(np.int64),
                                                              sizes_name))
        node.input[2] = ""
        node.input.append(sizes_name)
        if not np.array_equal(np.floor(np.asarray(shape) * scales.astype(np.float32)), exact):
            shapes = _inferred_shapes(proto)
    used = {name for node in graph.node for name in node.input}
    unused = [tensor for tensor in graph.initializer if tensor.name not in used]
    for tensor in unused:
        graph.initializer.remove(tensor)
    graph.ClearField("value_info")
    for output in graph.output:
        output.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    graph.ClearField("output")
    graph.output.extend(inferred.graph.output)


def _inferred_shapes(proto):
    """Static shapes of the graph's inputs, intermediate tensors and outputs (which other
    nodes may read too: a recurrent model's state), inferred afresh (shapes recorded before a
    rewrite are stale)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    probe.graph.ClearField("value_info")
    for output in probe.graph.output:
        output.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(probe).graph
    return {info.name: [d.dim_value for d in info.type.tensor_type.shape.dim]
            for info in [*inferred.input, *inferred.value_info, *inferred.output]}


def main(model_path, onnx_path, options):
    options = json.loads(options)
    model = keras.saving.load_model(model_path, compile=False)
    onnx.save(convert(model, **options), onnx_path)


if __name__ == "__main__":
    main(*sys.argv[1:4])
