"""What the command-line tools share: argument types, the checks that refuse arguments
before TensorFlow loads, and user errors reported without a traceback."""

import argparse
import sys
import traceback
from pathlib import Path

import tfseg
from tfseg.runs.presets import find_preset, is_preset
from tfseg.utils.errors import TfsegError
from tfseg.utils.startup import filter_tensorflow_start_up


def parse_size(text, minimum=1):
    """argparse type: "HxW" -> (H, W), both integers >= `minimum`."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 360x480, got {text!r}") from None
    if height < minimum or width < minimum:
        raise argparse.ArgumentTypeError(f"{text}: sizes must be at least "
                                         f"{minimum}x{minimum}")
    return height, width


def check_run_dir(run_dir):
    """TfsegError unless `run_dir` is a tfseg run folder (holds config.yaml)."""
    if not (Path(run_dir) / "config.yaml").is_file():
        raise TfsegError(f"{run_dir}: not a tfseg run (no config.yaml)")


def check_exists(path, what):
    """TfsegError unless `path` exists."""
    if not Path(path).exists():
        raise TfsegError(f"{path}: no such {what}")


def check_model_exists(path, what):
    """TfsegError unless `path` exists, or names a preset that does (`preset:NAME`: the
    message lists the presets)."""
    if is_preset(path):
        find_preset(path)
    else:
        check_exists(path, what)


def check_in_range(option, value, low, high=None, why=""):
    """TfsegError naming `option` unless low <= `value` (<= high); NaN is refused too."""
    if not (value >= low and (high is None or value <= high)):
        expected = f"{low}..{high}" if high is not None else f"at least {low}"
        raise TfsegError(f"{option} {value}: expected {expected}{why}")


def run_cli(main, argv=None):
    """Runs `main(argv)`; a `TfsegError` becomes `error: ...` on stderr and exit status 2 (or
    the error's own `exit_status`, e.g. 130 after SIGINT). Any other exception is a bug: its
    traceback is printed, then a line saying so, and the exit status is 1. TensorFlow's
    start-up notices on a CPU-only machine are left out (`tfseg.utils.startup`)."""
    filter_tensorflow_start_up()
    try:
        return main(argv)
    except TfsegError as error:
        print(f"error: {error}", file=sys.stderr)
        return getattr(error, "exit_status", 2)
    except Exception:   # noqa: BLE001  (reported as a bug, never swallowed)
        traceback.print_exc()
        print(f"error: this is a bug in tfseg {tfseg.__version__}, not in your input; please "
              f"report it with the command and the traceback above as an issue of the tfseg "
              f"repository", file=sys.stderr)
        return 1
