"""Exports a trained model as a SavedModel and a static-size ONNX file, and proves that the
exports agree with Keras.

Every export calls the model with `training=False` explicitly (TOOLCHAIN.md trap 1), writes to a
temporary name and renames when complete, so an interrupted export never looks finished.
"""

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import tensorflow as tf
import tf2onnx
from keras.export import ExportArchive

import tfseg
from tfseg.errors import TfsegError
from tfseg.files import write_text_atomic
from tfseg.opencv_dnn import run_opencv

INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"


class ParityError(TfsegError):
    """An exported model disagrees with Keras beyond the configured tolerance."""


def export_saved_model(model, directory):
    """SavedModel with a `serving_default` signature: `pixels` (N, H, W, C) -> `logits`."""
    directory = Path(directory)
    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name=INPUT_NAME)
    archive = ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default",
                         lambda pixels: {OUTPUT_NAME: model(pixels, training=False)},
                         input_signature=[spec])
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    archive.write_out(str(partial), verbose=False)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(partial, directory)
    return directory


def export_onnx(model, path, *, opset=17, layout="NCHW", metadata=None):
    """ONNX file at the model's static input size, batch 1.

    With layout "NCHW" the input and output are channels-first, so the blob from
    `cv2.dnn.blobFromImage` feeds the model directly. `metadata` (str -> str) is stored in the
    file's metadata_props next to the tfseg version, input size and layout.
    """
    path = Path(path)
    height, width, channels = model.input_shape[1:]
    spec = tf.TensorSpec([1, height, width, channels], tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def infer(pixels):
        return {OUTPUT_NAME: model(pixels, training=False)}

    nchw = layout == "NCHW"
    proto, _ = tf2onnx.convert.from_function(
        infer, input_signature=[spec], opset=opset,
        inputs_as_nchw=[f"{INPUT_NAME}:0"] if nchw else None,
        outputs_as_nchw=[OUTPUT_NAME] if nchw else None)
    shape = [1, channels, height, width] if nchw else [1, height, width, channels]
    properties = {"tfseg_version": tfseg.__version__, "input_name": INPUT_NAME,
                  "input_shape": json.dumps(shape), "layout": layout, **(metadata or {})}
    onnx.helper.set_model_props(proto, properties)
    _resize_by_sizes(proto)
    partial = path.with_name(path.name + ".partial")
    onnx.save(proto, str(partial))
    os.replace(partial, path)
    return path


def _resize_by_sizes(proto):
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
    """Static shapes of the graph's inputs and intermediate tensors, inferred afresh (shapes
    recorded before a rewrite are stale)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    probe.graph.ClearField("value_info")
    for output in probe.graph.output:
        output.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(probe).graph
    return {info.name: [d.dim_value for d in info.type.tensor_type.shape.dim]
            for info in [*inferred.input, *inferred.value_info]}


def run_onnxruntime(onnx_path, images):
    """Outputs of `onnx_path` in onnxruntime (CPU) for NHWC `images`, batch 1 each."""
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    nchw = session.get_modelmeta().custom_metadata_map["layout"] == "NCHW"
    name = session.get_inputs()[0].name
    outputs = []
    for image in images:
        batch = image[None].transpose(0, 3, 1, 2) if nchw else image[None]
        outputs.append(session.run(None, {name: batch.astype(np.float32)})[0])
    return np.concatenate(outputs)


def check_parity(saved_model_dir, onnx_path, images, *, runtimes, layout, max_abs_diff,
                 min_argmax_agreement, report_path):
    """Compares ONNX runtimes with the SavedModel on `images` and writes a JSON report.

    Returns:
        dict runtime -> {"max_abs_diff", "argmax_agreement", "passed"} (or {"error"}).

    Raises:
        ParityError: a runtime failed or missed a tolerance; the message names it.
    """
    serve = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    reference = serve(**{INPUT_NAME: tf.constant(images)})[OUTPUT_NAME].numpy()
    report = {}
    for runtime in runtimes:
        try:
            if runtime == "onnxruntime":
                outputs = run_onnxruntime(onnx_path, images)
            else:
                outputs = run_opencv(onnx_path, images, runtime=runtime)
        except (TypeError, AttributeError, NameError):
            raise  # a bug here, not a runtime failure: keep the traceback
        except Exception as error:  # any runtime failure fails that runtime, by name
            report[runtime] = {"error": str(error), "passed": False}
            continue
        if layout == "NCHW":
            outputs = outputs.transpose(0, 2, 3, 1)
        if outputs.shape != reference.shape:
            report[runtime] = {"error": f"output shape {outputs.shape}, expected "
                                        f"{reference.shape}", "passed": False}
            continue
        difference = float(np.max(np.abs(outputs - reference)))
        agreement = float(np.mean(outputs.argmax(-1) == reference.argmax(-1)))
        report[runtime] = {"max_abs_diff": difference, "argmax_agreement": agreement,
                           "passed": difference <= max_abs_diff
                           and agreement >= min_argmax_agreement}
    report = {"reference": "saved_model", "samples": int(len(images)),
              "tolerance": {"max_abs_diff": max_abs_diff,
                            "min_argmax_agreement": min_argmax_agreement},
              "runtimes": report}
    write_json(report, report_path)
    failed = {name: r for name, r in report["runtimes"].items() if not r["passed"]}
    if failed:
        details = "; ".join(f"{name}: {r.get('error') or _describe(r)}"
                            for name, r in failed.items())
        raise ParityError(f"exported ONNX disagrees with the SavedModel ({details}); "
                          f"see {report_path}")
    return report["runtimes"]


def _describe(result):
    return (f"max abs diff {result['max_abs_diff']:.3g}, "
            f"argmax agreement {100 * result['argmax_agreement']:.3f} %")


def write_json(data, path):
    """Writes JSON atomically (temporary name, then rename); NaN becomes null (valid JSON)."""
    write_text_atomic(path, json.dumps(_finite_or_none(data), indent=2, allow_nan=False) + "\n")


def _finite_or_none(value):
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
