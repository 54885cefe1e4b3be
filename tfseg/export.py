"""Exports a trained model as a SavedModel and a static-size ONNX file, and proves that the
exports agree with Keras.

Every export calls the model with `training=False` explicitly (TOOLCHAIN.md trap 1), writes to a
temporary name and renames when complete, so an interrupted export never looks finished.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime
import tensorflow as tf
from keras.export import ExportArchive

from tfseg.errors import TfsegError
from tfseg.files import write_text_atomic
from tfseg.onnx_conversion import INPUT_NAME, OUTPUT_NAME
from tfseg.opencv_dnn import run_opencv


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


def export_onnx(model, path, *, opset=17, layout="NCHW", metadata=None, timeout=3600):
    """ONNX file at the model's static input size, batch 1.

    With layout "NCHW" the input and output are channels-first, so the blob from
    `cv2.dnn.blobFromImage` feeds the model directly. `metadata` (str -> str) is stored in the
    file's metadata_props next to the tfseg version, input size and layout.

    The conversion runs in a child process (`tfseg.onnx_conversion`) on a saved copy of the
    model: tf2onnx keeps a copy of every weight per optimiser pass under the default protobuf
    backend (2 GB extra for LinkNet, out of memory for FCN-32s), which the child avoids.

    Raises:
        TfsegError: the conversion failed; the message holds the converter's last line.
    """
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    with tempfile.TemporaryDirectory(prefix="tfseg-onnx-") as tmp:
        saved = Path(tmp) / "model.keras"
        model.save(saved)
        options = {"opset": opset, "layout": layout, "metadata": metadata or {}}
        command = [sys.executable, "-m", "tfseg.onnx_conversion", str(saved), str(partial),
                   json.dumps(options)]
        environment = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
                       "TF_CPP_MIN_LOG_LEVEL": "2"}
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                    env=environment)
        except subprocess.TimeoutExpired:
            partial.unlink(missing_ok=True)
            raise TfsegError(f"{path}: ONNX conversion took longer than {timeout} s") from None
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise TfsegError(f"{path}: ONNX conversion failed: {last}")
    os.replace(partial, path)
    return path


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
