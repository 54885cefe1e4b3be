"""`python -m tfseg.evaluate`: score a trained run or an exported model on a run's data.

    python -m tfseg.evaluate --run-dir DIR                         # latest checkpoint, Keras
    python -m tfseg.evaluate --run-dir DIR --runtime onnxruntime   # DIR/export/model.onnx
    python -m tfseg.evaluate --model FILE --config FILE [--runtime opencv]
    python -m tfseg.evaluate --run-dir DIR --set data.val_path=FOLDER    # other held-out data
    python -m tfseg.evaluate --run-dir DIR --robustness    # the out-of-distribution scorecard
    python -m tfseg.evaluate --model preset:NAME --output DIR [--set data.path=FOLDER]

The model runs in any runtime of `tfseg.deploy.runtimes` (with `--run-dir`: keras = the
latest checkpoint, savedmodel = `export/saved_model`, onnxruntime and the OpenCV DNN engines
(`tfseg.deploy.opencv_dnn`) = `export/model.onnx`) on the validation frames (or one epoch of
training batches with `--split train`) of the run's `config.yaml` or `--config`. A per-class
table is printed, and written with every score to `evaluation.json`, `evaluation.csv` (one row
per class) and `confusion_matrix.png` in the run directory, the `--output` folder, or else the
model's folder.

Scores: those of every training run's validation, by the same code
(`tfseg.tasks.validation`): the loss, the confusion-matrix scores (mean IoU, per-class IoU,
pixel and mean class accuracy, frequency-weighted IoU, foreground IoU), iIoU, the
interferogram seed's per-image figure under its honest name, and, where a class is named
background (the interferogram recipes), sample-level precision, recall and F1: each
connected component of the predicted and of the labelled foreground is a sample, as its
bounding box, matched one to one at box IoU >= 0.5, counts summed over the frames
(`tfseg.tasks.samples`; touching labelled boxes are one sample, as touching predictions are).

Frames are preprocessed as the config's data says (`tfseg.data.preprocess`, as in training);
an export whose metadata describes another preprocessing (but for its size) is refused with
the step that differs, so an export is scored on the inputs `python -m tfseg.predict` gives it.

A static model of another size than the config's (an ONNX file exported at another `--size`)
is fed the raw frames preprocessed at its size, as `python -m tfseg.predict` feeds it (and as
training at that size would), and its logits are resized (bilinear) to the config's size, so
scores are always counted on the data's own masks; a note says so.

Super-resolution models are scored on whole validation images (Set5 in the recipes): PSNR
and SSIM on Y with the scale's border shaved, per image and on average, next to bicubic
scored by the same code (`evaluation.json`, `evaluation.csv` with one row per image). A
static-size ONNX runs tile by tile (`tfseg.deploy.tiling`, a quarter-tile overlap), so its
scores can differ slightly from the whole-image Keras ones; a note says so. `--samples N` writes
LR | bicubic | SR | HR strips of the first N images.

`--robustness` scores a run trained on the synthetic generator along each axis of that
generator, at levels inside and beyond the run's training ranges (its config.yaml's
`data.synthetic`), the other factors at their training ranges, and on a set rendered by an
independent holography model: `robustness.csv`, `.md`, `.json` and `.png` and
`independent_set/` (a data set in the on-disk format) in the output folder; `tfseg.deploy.
robustness` says how the levels are chosen. `--robustness-sequences N` held-out sequences per
cell (default 8).
"""

import argparse
from pathlib import Path

from tfseg.cli import check_exists, check_in_range, check_run_dir, run_cli
from tfseg.deploy.runtimes import RUN_RUNTIMES
from tfseg.runs.presets import find_preset, is_preset
from tfseg.utils.errors import TfsegError
from tfseg.utils.files import check_writable_folder


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m tfseg.evaluate",
        description="Score a trained run or an exported model on a run's data.")
    parser.add_argument("--run-dir", type=Path, help="a tfseg.train run")
    parser.add_argument("--model", type=Path,
                        help="a SavedModel directory, .onnx or .keras file (instead of the "
                             "run's latest checkpoint), or preset:NAME (python -m "
                             "tfseg.presets lists them; its config.yaml is the default "
                             "--config)")
    parser.add_argument("--config", type=Path,
                        help="the recipe whose data to score on (default: the run's "
                             "config.yaml)")
    parser.add_argument("--runtime", choices=["keras", *RUN_RUNTIMES],
                        help="default: keras for a run, the file's own for --model")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override a value of the config "
                        "(repeatable), e.g. --set data.val_path=FOLDER to score other data")
    parser.add_argument("--split", choices=["validation", "train"], default="validation")
    parser.add_argument("--output", type=Path, help="folder for the evaluation files")
    parser.add_argument("--samples", type=int, default=0, metavar="N",
                        help="also write samples.png: the first N frames as input | ground "
                        "truth | prediction (SR: LR | bicubic | SR | HR)")
    parser.add_argument("--robustness", action="store_true",
                        help="instead, the out-of-distribution scorecard: every factor of the "
                        "synthetic generator inside and beyond the run's training ranges, and "
                        "an independent renderer's set (robustness.csv, .md, .json, .png)")
    parser.add_argument("--robustness-sequences", type=int, default=8, metavar="N",
                        help="held-out sequences per scorecard cell (default 8)")
    args = parser.parse_args(argv)
    if args.run_dir is None and (args.model is None or (args.config is None
                                                        and not is_preset(args.model))):
        parser.error("give --run-dir, --model preset:NAME, or --model with --config")
    return args


def check_args(args):
    """Refuses arguments the evaluation would fail on, before TensorFlow loads and before any
    scoring (an output folder that cannot be written included)."""
    if args.run_dir is not None:
        check_run_dir(args.run_dir)
    if args.model is not None and is_preset(args.model):
        find_preset(args.model)
        if args.output is None:
            raise TfsegError(f"--model {args.model}: give --output, the folder for the "
                             f"evaluation files")
        if args.runtime not in (None, "keras"):
            raise TfsegError(f"--runtime {args.runtime}: a preset runs in keras; export it "
                             f"first (python -m tfseg.export --model {args.model} --output "
                             f"DIR) and evaluate DIR's model")
    elif args.model is not None:
        check_exists(args.model, "model file or SavedModel folder")
    if args.config is not None:
        check_exists(args.config, "config file")
    check_in_range("--samples", args.samples, 0)
    check_in_range("--robustness-sequences", args.robustness_sequences, 1)
    if args.robustness and (args.split != "validation" or args.samples):
        raise TfsegError("--robustness scores held-out sets of its own: --split and "
                         "--samples do not apply")
    check_writable_folder(args.output or args.run_dir or args.model.parent,
                          "evaluation files")


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    # Imported after the checks, so `--help` and refusals answer without loading TensorFlow.
    from tfseg.deploy.evaluation import evaluate_to_folder
    from tfseg.deploy.robustness import robustness_to_folder

    if args.robustness:
        robustness_to_folder(run_dir=args.run_dir, model_path=args.model,
                             config_path=args.config, runtime_name=args.runtime,
                             overrides=args.overrides, output=args.output,
                             sequences=args.robustness_sequences)
        return 0
    evaluate_to_folder(run_dir=args.run_dir, model_path=args.model, config_path=args.config,
                       runtime_name=args.runtime, overrides=args.overrides, split=args.split,
                       output=args.output, samples=args.samples)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
