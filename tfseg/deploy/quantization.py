"""int8 and float16 copies of a float32 ONNX export, and their accuracy against it: the
`--precision` of `python -m tfseg.export`.

- int8 (`model.int8.onnx`): onnxruntime's static quantization, QDQ format, int8 weights per
  output channel and uint8 activations whose ranges are calibrated (min/max) on the run's
  TRAINING frames, preprocessed exactly as the network is fed them (`make_datasets`);
  transposed convolutions are rewritten as convolutions first, which onnxruntime runs in int8
  (`tfseg.deploy.onnx_rewrites.conv_transpose_to_conv`).
- float16 (`model.float16.onnx`): onnxruntime's float16 converter with float32 inputs and
  outputs kept, so callers still feed float32 pixels.

Each copy carries the float32 file's tfseg metadata plus its "precision". Its accuracy is
reported, never enforced: its outputs on the parity frames against the float32 file's in
onnxruntime (max abs difference, argmax agreement or PSNR), and its scores on the run's
validation data (`tfseg.deploy.evaluation.score`) against the float32 file's, in onnxruntime
and in each OpenCV DNN engine checked. An OpenCV that cannot load the copy (OpenCV 4 has no
float16 tensors; 4.6 no DequantizeLinear) is reported as not supporting it, not as a
disagreement. A recurrent model has no int8 copy: its state would need a calibration of its
own.
"""

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
import onnx
import tensorflow as tf

from tfseg.data.pipeline import make_datasets
from tfseg.deploy.evaluation import evaluation_batches, score
from tfseg.deploy.metadata import encode_metadata
from tfseg.deploy.onnx_rewrites import conv_transpose_to_conv
from tfseg.deploy.opencv_dnn import OpenCVError, installed_engines
from tfseg.deploy.parity import Tolerance, record_precisions, run_model, run_parity
from tfseg.deploy.precisions import CALIBRATION_FRAMES, opencv_reason, precision_path
from tfseg.deploy.runtimes import load

# The scores compared with float32's, by task; figures are differences (copy - float32).
_SCORES = {"segmentation": ("mean_iou", "foreground_iou"), "super_resolution": ("psnr_y",)}


def calibration_frames(config, size, count=CALIBRATION_FRAMES):
    """float32 NHWC (n <= `count`, H, W, C): the first training frames of `config` as the
    network at `size` (H, W) is fed them (`make_datasets`; augmentation runs later, in the
    training step); super-resolution LR patches resized (bilinear) to `size` if they differ."""
    super_resolution = config.model.task == "super_resolution"
    train = make_datasets(config, None if super_resolution else size).train
    frames = np.stack([np.asarray(inputs, np.float32)
                       for inputs, _ in train.unbatch().take(count)])
    if tuple(frames.shape[1:3]) != tuple(size):
        frames = tf.image.resize(frames, size).numpy()
    return frames


def calibration_reader(onnx_path, frames):
    """An onnxruntime `CalibrationDataReader` feeding NHWC `frames` one at a time to the
    input of `onnx_path`, in the file's layout."""
    from onnxruntime.quantization import CalibrationDataReader

    proto = onnx.load(str(onnx_path), load_external_data=False)
    (name,) = [tensor.name for tensor in proto.graph.input]
    nchw = {p.key: p.value for p in proto.metadata_props}.get("layout") == "NCHW"

    class TrainingFrames(CalibrationDataReader):
        def __init__(self):
            self.frames = iter(frames)

        def get_next(self):
            frame = next(self.frames, None)
            if frame is None:
                return None
            return {name: np.ascontiguousarray((frame.transpose(2, 0, 1) if nchw else frame)
                                               [None], np.float32)}

    return TrainingFrames()


def quantize_int8(onnx_path, output, frames):
    """`output`: the int8 QDQ copy of the float32 `onnx_path`, calibrated on NHWC `frames`;
    its transposed convolutions first rewritten as convolutions (`conv_transpose_to_conv`),
    which onnxruntime runs in int8."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    proto = conv_transpose_to_conv(onnx.load(str(onnx_path)))
    advice = _WithoutPreProcessingAdvice()
    logging.getLogger().addFilter(advice)
    try:
        quantize_static(proto, str(output), calibration_reader(onnx_path, frames),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        calibration_providers=["CPUExecutionProvider"])
    finally:
        logging.getLogger().removeFilter(advice)


class _WithoutPreProcessingAdvice(logging.Filter):
    """Drops onnxruntime's advice, logged on every quantization, to run its quant_pre_process
    first. Not taken: tfseg's exports have static shapes already, and tried on
    docs/benchmarks.md's ICNet 0.5, its graph optimisations made the int8 copy lose more
    accuracy, not less."""

    def filter(self, record):
        return "pre-processing before quantization" not in record.getMessage()


def convert_float16(onnx_path, output):
    """`output`: the float16 copy of the float32 `onnx_path`, float32 inputs and outputs."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True),
              str(output))


def write_precision(onnx_path, precision, frames=None):
    """Writes the `precision` copy of the float32 export `onnx_path` beside it (int8:
    calibrated on NHWC `frames`), with its tfseg metadata plus "precision"; returns its
    path. Written whole or not at all."""
    output = precision_path(onnx_path, precision)
    partial = output.with_name(output.name + ".partial")
    try:
        if precision == "int8":
            quantize_int8(onnx_path, partial, frames)
        else:
            convert_float16(onnx_path, partial)
        # The float32 file's metadata (not the converter's own marks), plus the precision.
        properties = {p.key: p.value for p in onnx.load(
            str(onnx_path), load_external_data=False).metadata_props}
        proto = onnx.load(str(partial))
        proto.ClearField("metadata_props")
        onnx.helper.set_model_props(proto, {**properties,
                                            **encode_metadata({"precision": precision})})
        onnx.save(proto, str(partial))
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, output)
    return output


@dataclasses.dataclass(frozen=True)
class PrecisionJob:
    """The extra precisions an export writes beside each float32 ONNX file, and the run
    they are calibrated and scored on.

    Attributes:
        precisions: extra precisions (`check_precisions`), e.g. ("int8", "float16").
        config: the run's `Config`: its training frames calibrate, its validation data scores.
        calibration_frames: int. Training frames the int8 ranges are calibrated on.
    """

    precisions: tuple
    config: object
    calibration_frames: int = CALIBRATION_FRAMES


def export_precisions(job, onnx_paths, images, *, runtimes, skip=(), report_path):
    """Writes `job`'s precisions of every float32 file of `onnx_paths`, compares them with
    it (module docstring) on NHWC `images` (the parity frames, resized to each file's size)
    and in every runtime of `runtimes` not in `skip`, and adds the results to the parity
    report `report_path`.

    Returns:
        dict: file name -> {"precision", "float32_file", "bytes", "float32_bytes",
        "runtimes": {runtime: figures, "not_supported" or "unavailable"}}.
    """
    results = {}
    opencv_version = None
    for onnx_path in map(Path, onnx_paths):
        float32 = load(onnx_path, "onnxruntime")
        size = tuple(float32.input_size)
        sized = images if images.shape[1:3] == size else tf.image.resize(images, size).numpy()
        reference = run_model(float32, sized)
        float32_scores = _scores(float32, job.config)
        frames = (calibration_frames(job.config, size, job.calibration_frames)
                  if "int8" in job.precisions else None)
        for precision in job.precisions:
            path = write_precision(onnx_path, precision, frames)
            figures = {}
            for runtime in (name for name in runtimes if name not in skip):
                if runtime.startswith("opencv") and opencv_version is None:
                    opencv_version = _opencv_version()
                figures[runtime] = _compare(path, runtime, sized, reference, job.config,
                                            float32_scores, opencv_version)
            results[path.name] = {"precision": precision, "float32_file": onnx_path.name,
                                  "bytes": path.stat().st_size,
                                  "float32_bytes": onnx_path.stat().st_size,
                                  "calibration_frames": len(frames) if precision == "int8"
                                  else None, "runtimes": figures}
    record_precisions(report_path, results)
    return results


def _compare(path, runtime, images, reference, config, float32_scores, opencv_version):
    """One runtime's figures for the copy `path` against the float32 file in onnxruntime:
    its outputs (`run_parity`, nothing enforced) and its validation scores."""
    task = config.model.task
    result = run_parity(path, runtime, images, reference, task=task, tolerance=Tolerance())
    result.pop("passed")
    if "error" in result and runtime.startswith("opencv"):
        reason = opencv_reason(result["error"], path)
        return {"not_supported": f"OpenCV {opencv_version}: {reason}"}
    if "version" not in result:
        return result
    with load(path, runtime) as loaded:
        scores = _scores(loaded, config)
    for key, value in scores.items():
        result[key] = value
        result[f"{key}_difference"] = value - float32_scores[key]
    return result


def _scores(runtime, config):
    """The scores of `runtime` on `config`'s validation data compared across precisions."""
    with runtime:
        report = score(runtime, config, evaluation_batches(config, "validation", runtime))
    return {key: float(report[key]) for key in _SCORES[config.model.task] if key in report}


def _opencv_version():
    """The version of the OpenCV that checks exports (`TFSEG_OPENCV_PYTHON`'s or this
    interpreter's)."""
    try:
        return installed_engines()[1]
    except OpenCVError as error:
        return f"(unknown: {error})"
