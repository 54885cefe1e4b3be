"""The precisions a tfseg ONNX export is written in, by name: checked before TensorFlow
loads (`python -m tfseg.export --precision`), the copies' file names, and the one-line
description of their figures. The copies are made and scored by
`tfseg.deploy.quantization`."""

import re
from pathlib import Path

from tfseg.deploy.metadata import PRECISIONS
from tfseg.utils.errors import TfsegError

# Training frames the int8 activation ranges are calibrated on, by default.
CALIBRATION_FRAMES = 32


def check_precisions(precisions, *, recurrent=False, source="--precision"):
    """The extra precisions (those beside float32) of `precisions` (names, each possibly
    "a,b" lists), in `PRECISIONS` order; TfsegError naming `source` for an unknown one, or
    int8 for a `recurrent` model."""
    names = [name.strip() for text in precisions for name in str(text).split(",")]
    for name in names:
        if name not in PRECISIONS:
            raise TfsegError(f"{source} {name!r}: expected {', '.join(PRECISIONS)}")
    if recurrent and "int8" in names:
        raise TfsegError(f"{source} int8: a recurrent model's state cannot be calibrated "
                         f"from single frames; export it in float32 or float16")
    return tuple(name for name in PRECISIONS[1:] if name in names)


def precision_path(onnx_path, precision):
    """`model.int8.onnx` beside `model.onnx` (`model_HxW.float16.onnx` beside
    `model_HxW.onnx`); the float32 file itself for "float32"."""
    onnx_path = Path(onnx_path)
    if precision == "float32":
        return onnx_path
    return onnx_path.with_name(f"{onnx_path.stem}.{precision}{onnx_path.suffix}")


def opencv_reason(error, path):
    """OpenCV's own words in a runtime's `error` about `path`, without what names the file,
    the runtime, the child's exit status and OpenCV's log prefix."""
    reason = re.sub(r"^(.*?: )?opencv\w*: (exit status -?\d+: )?", "",
                    error.replace(f"{path}: ", "").replace(str(path), "the file"))
    # OpenCV's log prefix ("[ERROR:0@0.02] global onnx_importer2.cpp:1215 parseNode ").
    reason = re.sub(r"\[ERROR:[^\]]*\] (global )?\S+ (\w+ )?", "", reason)
    return re.sub(r"^(>: )?(OpenCV [\d.]+ )?", "", reason.strip())


def describe_precision(name, result):
    """One line: a precision copy's size against float32, and each runtime's figures."""
    ratio = result["float32_bytes"] / max(result["bytes"], 1)
    parts = []
    for runtime, figures in result["runtimes"].items():
        if "not_supported" in figures:
            parts.append(f"{runtime}: not supported by {figures['not_supported']}")
        elif "error" in figures:
            parts.append(f"{runtime}: {figures['error']}")
        elif "unavailable" in figures:   # said once already, on the float32 parity line
            continue
        else:
            parts.append(f"{runtime}: {_figures(figures)}")
    return (f"{name} ({result['bytes'] / 1e6:.1f} MB, {ratio:.1f}x smaller than "
            f"{result['float32_file']}): {'; '.join(parts)}")


def _figures(figures):
    """Score differences (points for IoUs, dB for PSNR) and output agreement."""
    text = []
    for key in ("mean_iou", "foreground_iou"):
        if f"{key}_difference" in figures:
            text.append(f"{key} {100 * figures[f'{key}_difference']:+.2f} points")
    if "psnr_y_difference" in figures:
        text.append(f"psnr_y {figures['psnr_y_difference']:+.2f} dB")
    if "argmax_agreement" in figures:
        text.append(f"argmax agreement {100 * figures['argmax_agreement']:.2f} %")
    if "psnr" in figures:
        text.append(f"PSNR to float32 {figures['psnr']:.1f} dB")
    text.append(f"max abs diff {figures['max_abs_diff']:.2g} ({figures['version']})")
    return ", ".join(text)
