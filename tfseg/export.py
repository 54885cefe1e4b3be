"""`python -m tfseg.export --run-dir DIR`: export a trained run as a SavedModel and static-size
ONNX files, and prove that every runtime agrees with Keras.

    python -m tfseg.export --run-dir runs/default --size 128x128 --size 256x256

writes into `DIR/export`: `saved_model/` (raw pixels in, with `assets.extra/tfseg.json`),
`model.onnx` at the training size and `model_<H>x<W>.onnx` at any other `--size` (metadata
inside each), `labels.txt` (segmentation: one class name per line, in id order) and
`parity.json`: Keras against the SavedModel, onnxruntime and both OpenCV DNN engines on the
run's validation frames (resized to each ONNX size that differs from the training size). A
runtime outside the tolerance is named and the command exits with status 2, unless
`--skip-runtime` names it.

    python -m tfseg.export --run-dir runs/default --precision int8 --precision float16

also writes `model.int8.onnx` (static quantization: int8 weights per channel, activation ranges
calibrated on `--calibration-frames` of the run's training frames) and `model.float16.onnx`
(float32 inputs and outputs) beside each float32 ONNX file, and adds to `parity.json` their
outputs against float32's and their validation scores (mIoU and foreground IoU, or PSNR)
against float32's in onnxruntime and each OpenCV DNN engine checked; an OpenCV that cannot
load a copy is reported as not supporting it. These figures are reported, not enforced.

A preset exports the same way into a folder of its own:

    python -m tfseg.export --model preset:NAME --output DIR [--set data.path=FOLDER]

checked on the validation frames of the preset's config (its data as `--set` gives it), or,
where that data cannot be read here and no `--set` is given, on seeded random frames (a line
says so). DIR must be new, empty or a previous export: it is replaced as a whole.

The work is `tfseg.deploy.exports.export_from_run_dir` and `export_preset`.
"""

import argparse
import dataclasses
from pathlib import Path

from tfseg.cli import check_in_range, check_run_dir, parse_size, run_cli
from tfseg.config.schema import ExportConfig
from tfseg.deploy.metadata import PRECISIONS
from tfseg.deploy.precisions import CALIBRATION_FRAMES, check_precisions
from tfseg.deploy.runtimes import EXPORT_RUNTIMES
from tfseg.runs.preflight import check_size_memory
from tfseg.runs.presets import find_preset, is_preset
from tfseg.utils.errors import TfsegError
from tfseg.utils.files import check_writable_folder

# The opsets the installed tf2onnx converts (export.opset's range in the config schema).
OPSETS = next(item.metadata["range"] for item in dataclasses.fields(ExportConfig)
              if item.name == "opset")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m tfseg.export",
        description="Export a trained run or a preset (SavedModel, ONNX per size, "
                    "labels.txt) and check every runtime against Keras.")
    parser.add_argument("--run-dir", type=Path, help="a tfseg.train run (exports into "
                        "RUN/export)")
    parser.add_argument("--model", metavar="preset:NAME",
                        help="a preset instead of a run (python -m tfseg.presets lists "
                        "them); needs --output")
    parser.add_argument("--output", type=Path, help="with --model: the export folder")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="with --model: override a value "
                        "of the preset's config, e.g. --set data.path=FOLDER (the frames "
                        "the parity check runs on)")
    parser.add_argument("--size", type=lambda text: parse_size(text, minimum=8), action="append", default=[],
                        metavar="HxW", help="static ONNX input size (repeatable; default: "
                        "the training size)")
    parser.add_argument("--layout", choices=["NCHW", "NHWC"], default=None,
                        help="ONNX layout (default: the config's export.layout)")
    parser.add_argument("--opset", type=int, default=None,
                        help=f"ONNX opset, {OPSETS[0]}..{OPSETS[1]} (default: the "
                        f"config's export.opset)")
    parser.add_argument("--skip-runtime", dest="skip", action="append", default=[],
                        choices=EXPORT_RUNTIMES, help="do not check this runtime "
                        "(repeatable)")
    parser.add_argument("--precision", dest="precisions", action="append", default=[],
                        metavar="|".join(PRECISIONS), help="ONNX precisions to write "
                        "(repeatable, or a comma-separated list; float32 is always written)")
    parser.add_argument("--calibration-frames", type=int, default=CALIBRATION_FRAMES,
                        metavar="N", help=f"training frames int8 is calibrated on (default "
                        f"{CALIBRATION_FRAMES})")
    args = parser.parse_args(argv)
    if (args.run_dir is None) == (args.model is None):
        parser.error("give --run-dir RUN, or --model preset:NAME with --output DIR")
    if args.run_dir is not None and (args.output or args.overrides):
        parser.error("--output and --set go with --model preset:NAME; a run exports into "
                     "RUN/export with its own config")
    return args


def check_args(args):
    """Refuses arguments the export would fail on, before TensorFlow loads."""
    if args.model is not None:
        check_preset_args(args)
    else:
        check_run_dir(args.run_dir)
    if args.opset is not None:
        check_in_range("--opset", args.opset, *OPSETS, why=" (the opsets tf2onnx converts)")
    for size in args.size:
        check_size_memory("--size", size)
    check_precisions(args.precisions)
    check_in_range("--calibration-frames", args.calibration_frames, 1, 10_000)
    check_writable_folder(args.output or args.run_dir, "export")


def check_preset_args(args):
    """`--model`: a preset that exists, and an `--output` folder the export may replace as a
    whole (new, empty, or a previous export)."""
    if not is_preset(args.model):
        raise TfsegError(f"--model {args.model}: expected preset:NAME (a run is exported "
                         f"with --run-dir)")
    find_preset(args.model)
    if args.output is None:
        raise TfsegError(f"--model {args.model}: give --output, the export folder")
    output = args.output
    if output.exists() and not (output.is_dir() and (
            not any(output.iterdir()) or (output / "parity.json").is_file())):
        raise TfsegError(f"--output {output}: exists and is not an empty folder or a "
                         f"previous export; the export replaces its folder as a whole, so "
                         f"give a new one")


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    # Imported after the checks, so `--help` and refusals answer without loading TensorFlow.
    from tfseg.deploy.exports import export_from_run_dir, export_preset

    if args.model is not None:
        export_preset(args.model, args.output, sizes=args.size, layout=args.layout,
                      opset=args.opset, skip=args.skip, overrides=args.overrides,
                      precisions=args.precisions, calibration_frames=args.calibration_frames)
    else:
        export_from_run_dir(args.run_dir, sizes=args.size, layout=args.layout,
                            opset=args.opset, skip=args.skip, precisions=args.precisions,
                            calibration_frames=args.calibration_frames)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
