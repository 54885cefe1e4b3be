"""`python -m tfseg.bench`: speed of every model in every runtime on this machine.

Per model (at the seeds' input sizes) and runtime (Keras, SavedModel, onnxruntime, OpenCV DNN
new and classic engines): median and p90 latency after warm-up, images per second, GFLOPs per
image, the achieved GFLOP/s and its fraction of two float32 ceilings, the CPU's own (cores x
clock x vector lanes x 2 FMA units x 2) and a large matmul's measured on the same run, and the
peak resident memory of the process that ran it. With `--pipelines`, the images per second of
the input pipelines too. With `--train`, the training step of every recipe (configs/) at its
batch and training size instead, per precision and XLA setting, and with `--pytorch PYTHON`
the same networks' PyTorch training step (benchmarks/pytorch_reference.py) and the ratio.
Prints one Markdown table; `--json` and `--markdown` also write the results, `--compare
OLD.json` prints new / old ratios.

Every measurement runs in a fresh child process, so each row's peak memory is that runtime's
own, thread pools and compiled graphs never carry over, and a runtime that fails or crashes
fails its row only:

    python -m tfseg.bench --json runs/bench.json --markdown runs/bench.md
    python -m tfseg.bench --models linknet --runtimes keras onnxruntime --dtypes float32 bfloat16
    python -m tfseg.bench --models --pipelines
    python -m tfseg.bench --train --models linknet --dtypes float32 --jit-compile off on \\
        --pytorch /work/torchenv/bin/python
"""

import argparse
import shlex
import sys
from pathlib import Path

from tfseg.benchmarking.cases import DTYPES, MODEL_NAMES, PIPELINES, rows_of
from tfseg.benchmarking.report import read_results
from tfseg.benchmarking.runner import benchmark
from tfseg.benchmarking.training import TRAIN_RECIPES
from tfseg.cli import parse_size, run_cli
from tfseg.deploy.runtimes import RUNTIMES
from tfseg.utils.errors import TfsegError


class _Parser(argparse.ArgumentParser):
    """Argument errors become a `TfsegError`: one line on stderr and exit status 2."""

    def error(self, message):
        raise TfsegError(message)


def parse_args(argv):
    """Command-line arguments of `python -m tfseg.bench`, checked."""
    parser = _Parser(prog="python -m tfseg.bench",
                     description="Latency, throughput, GFLOP/s and memory of every model in "
                                 "every runtime, and the input pipelines' images per second.")
    parser.add_argument("--models", nargs="*", choices=MODEL_NAMES, default=MODEL_NAMES,
                        metavar="NAME", help=f"models at their seed sizes, or with --train "
                        f"the recipes training them (default: all of "
                        f"{', '.join(MODEL_NAMES)}; none: no model rows)")
    parser.add_argument("--train", action="store_true",
                        help=f"time the training step of the recipes "
                             f"({', '.join(TRAIN_RECIPES)}) at their batch and training size, "
                             f"on a fixed batch, instead of inference")
    parser.add_argument("--pytorch", type=Path, metavar="PYTHON",
                        help="with --train: an interpreter with PyTorch, to time the same "
                             "networks' training step (benchmarks/pytorch_reference.py) and "
                             "print the tfseg / PyTorch images/s ratio")
    parser.add_argument("--size", type=parse_size, metavar="HxW",
                        help="input size for every model instead of its seed size (with "
                             "--train: whole HxW frames, no crop; super-resolution: HxW "
                             "low-resolution patches)")
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=RUNTIMES,
                        metavar="RUNTIME", help=f"default: all of {', '.join(RUNTIMES)}")
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=["auto"],
                        help="compute precision of the keras runtime (Keras mixed_bfloat16 "
                             "or mixed_float16 policy); default: auto, the one training picks "
                             "on this machine (the exported runtimes run float32)")
    parser.add_argument("--jit-compile", nargs="+", choices=("off", "on"), default=["off"],
                        help="XLA compilation of the keras runtime's function; give both "
                             "to compare")
    parser.add_argument("--repeats", type=_positive, default=10, help="timed calls per row")
    parser.add_argument("--warmup", type=_positive, default=3,
                        help="untimed calls first (the first one traces or loads lazily)")
    parser.add_argument("--batch", type=_positive,
                        help="images per call (default 1), or with --train per step (default: "
                             "the recipe's train.batch_size)")
    parser.add_argument("--timeout", type=_positive, default=3600,
                        help="seconds one child process may take before its row fails")
    parser.add_argument("--pipelines", nargs="*", choices=PIPELINES, metavar="NAME",
                        help=f"also measure the input pipelines ({', '.join(PIPELINES)}; "
                             f"all when no name is given)")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"),
                        help="folder holding camvid/ and sr/ for the pipelines (default: "
                             "../shared/data, where the recipes look too)")
    parser.add_argument("--work-dir", type=Path,
                        help="folder where the interferogram pipeline's synthetic 3072x3072 "
                             "frames are written and kept for later runs (default: a "
                             "temporary folder, removed at the end)")
    parser.add_argument("--frames", type=_positive, default=20,
                        help="interferogram frames of the pipeline measurement")
    parser.add_argument("--limit", type=_positive, default=96,
                        help="CamVid / SR images per pipeline pass")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the results here")
    parser.add_argument("--markdown", type=Path, metavar="OUT", help="write the table here")
    parser.add_argument("--compare", type=Path, metavar="OLD.json",
                        help="print new / old ratios against an earlier --json file")
    args = parser.parse_args(argv)
    args.old = read_results(args.compare) if args.compare else None
    args.pipelines = PIPELINES if args.pipelines == [] else args.pipelines or ()
    if args.train:
        return _train_args(args)
    if args.pytorch:
        raise TfsegError("--pytorch compares training steps: give it with --train")
    args.batch = args.batch or 1
    if args.models and not rows_of(args):
        raise TfsegError("no rows to measure: bfloat16, float16 and XLA apply to the keras "
                         "runtime only")
    if not args.models and not args.pipelines:
        raise TfsegError("nothing to measure: give --models NAME... or --pipelines")
    return args


def _train_args(args):
    """`--train`'s arguments, checked: no runtimes other than Keras, no pipelines."""
    if args.pipelines:
        raise TfsegError("--train times training steps: measure --pipelines in another run")
    if args.runtimes != RUNTIMES:
        raise TfsegError("--train runs the Keras training step: --runtimes does not apply")
    if not args.models:
        raise TfsegError("nothing to measure: give --train --models NAME...")
    if args.pytorch and not args.pytorch.is_file():
        raise TfsegError(f"--pytorch {args.pytorch}: no such interpreter")
    return args


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def main(argv=None):
    """Measures, prints the table, writes the requested files; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    benchmark(args, command="python -m tfseg.bench " + shlex.join(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
