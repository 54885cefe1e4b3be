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

The work is `tfseg.deploy.exports.export_from_run_dir`.
"""

import argparse
import dataclasses
from pathlib import Path

from tfseg.cli import check_in_range, check_run_dir, parse_size, run_cli
from tfseg.config.schema import ExportConfig
from tfseg.deploy.runtimes import EXPORT_RUNTIMES
from tfseg.runs.preflight import check_size_memory
from tfseg.utils.files import check_writable_folder

# The opsets the installed tf2onnx converts (export.opset's range in the config schema).
OPSETS = next(item.metadata["range"] for item in dataclasses.fields(ExportConfig)
              if item.name == "opset")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m tfseg.export",
        description="Export a trained run (SavedModel, ONNX per size, labels.txt) and check "
                    "every runtime against Keras.")
    parser.add_argument("--run-dir", type=Path, required=True, help="a tfseg.train run")
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
    return parser.parse_args(argv)


def check_args(args):
    """Refuses arguments the export would fail on, before TensorFlow loads."""
    check_run_dir(args.run_dir)
    if args.opset is not None:
        check_in_range("--opset", args.opset, *OPSETS, why=" (the opsets tf2onnx converts)")
    for size in args.size:
        check_size_memory("--size", size)
    check_writable_folder(args.run_dir, "export")


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    # Imported after the checks, so `--help` and refusals answer without loading TensorFlow.
    from tfseg.deploy.exports import export_from_run_dir

    export_from_run_dir(args.run_dir, sizes=args.size, layout=args.layout, opset=args.opset,
                        skip=args.skip)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
