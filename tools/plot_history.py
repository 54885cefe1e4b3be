"""Training curves of a tfseg run as a PNG: loss and the run's main score per epoch.

    python tools/plot_history.py RUN_DIR [--out curves.png] [--title TEXT]

Reads the per-epoch history of `RUN_DIR/metrics.json` (a finished run) or, while a run is
still training, of its latest checkpoint state (`checkpoints/state-<step>.json`). Draws two
panels: training and validation loss, and the validation score the run ranks checkpoints by
(mean IoU for segmentation, PSNR on Y for super-resolution, next to bicubic's when recorded)
with the training score where there is one; a null (NaN) value is a gap in its curve. The
figure's format follows the --out suffix (.png, .svg, .pdf...); it is written complete or not
at all. Needs matplotlib (`pip install matplotlib`).
"""

import argparse
import io
import json
import math
import re
import sys
from pathlib import Path

from tfseg.cli import run_cli
from tfseg.utils.errors import TfsegError
from tfseg.utils.files import check_regular_file, check_writable_folder, write_bytes_atomic

SCORES = (("mean_iou", "mean IoU"), ("psnr_y", "PSNR on Y (dB)"))


def read_history(run_dir):
    """(history list, the file it came from, whether the run is finished) of `run_dir`."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.json"
    check_regular_file(metrics, "a tfseg metrics.json")
    if metrics.exists():
        return history_in(metrics), metrics, True
    states = {int(match[1]): path for path in run_dir.glob("checkpoints/state-*.json")
              if (match := re.fullmatch(r"state-(\d+)", path.stem))}
    if not states:
        raise TfsegError(f"{run_dir}: no metrics.json and no checkpoints/state-*.json; "
                         f"expected a tfseg run directory")
    latest = states[max(states)]
    check_regular_file(latest, "a tfseg checkpoint state")
    return history_in(latest), latest, False


def history_in(path):
    """The 'history' list of the JSON file `path`; TfsegError naming it if there is none."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise TfsegError(f"{path}: not a readable JSON file ({error})") from None
    history = data.get("history") if isinstance(data, dict) else None
    if not (isinstance(history, list) and all(isinstance(entry, dict) for entry in history)):
        raise TfsegError(f"{path}: expected a JSON object whose 'history' is a list of epoch "
                         f"entries")
    return history


def curves(history, path):
    """(score key, its label, {column: values per epoch}) of the columns to plot, each a
    number in every epoch (null or NaN in a loss or score: a gap); TfsegError naming `path`
    and the entry otherwise."""
    if not history:
        raise TfsegError(f"{path}: the run has no finished epoch yet")
    key, label = next(((k, name) for k, name in SCORES if f"validation_{k}" in history[0]),
                      (None, None))
    if key is None:
        raise TfsegError(f"{path}: no score to plot; expected one of "
                         f"{', '.join('validation_' + k for k, _ in SCORES)} in the history")
    columns = {}
    for column in ("epoch", "train_loss", "validation_loss", f"train_{key}",
                   f"validation_{key}", f"validation_bicubic_{key}"):
        if column != "epoch" and column not in history[0]:
            continue
        for index, entry in enumerate(history):
            if column not in entry:
                raise TfsegError(f"{path}: history[{index}] has no {column}")
            value = entry[column]
            gap = value is None or isinstance(value, float) and math.isnan(value)
            if not (is_number(value) or gap and column != "epoch"):
                raise TfsegError(f"{path}: history[{index}] {column}={value!r}; expected a "
                                 f"number{'' if column == 'epoch' else ' (or null)'}")
        columns[column] = [math.nan if e[column] is None else e[column] for e in history]
    return key, label, columns


def is_number(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def import_pyplot():
    """matplotlib's pyplot, drawing off-screen; TfsegError if matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        raise TfsegError("matplotlib is not installed; pip install matplotlib") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot
    return pyplot


def figure_bytes(pyplot, key, label, columns, title, suffix):
    """The two-panel figure of `columns` encoded as `suffix` (png, svg, pdf...)."""
    epochs = columns["epoch"]
    figure, (losses, scores) = pyplot.subplots(1, 2, figsize=(10, 3.8))
    for split in ("train", "validation"):
        if f"{split}_loss" in columns:
            losses.plot(epochs, columns[f"{split}_loss"], label=split)
        if f"{split}_{key}" in columns:
            scores.plot(epochs, columns[f"{split}_{key}"], label=split)
    if f"validation_bicubic_{key}" in columns:
        scores.plot(epochs, columns[f"validation_bicubic_{key}"], "--", label="bicubic")
    for axes, name in ((losses, "loss"), (scores, label)):
        axes.set_xlabel("epoch")
        axes.set_ylabel(name)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(title)
    figure.tight_layout()
    encoded = io.BytesIO()
    figure.savefig(encoded, format=suffix, dpi=100)
    pyplot.close(figure)
    return encoded.getvalue()


def check_output(out):
    """TfsegError naming `out` unless it can be written as a figure; its suffix."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = out.suffix[1:].lower()
    if suffix not in formats:
        raise TfsegError(f"{out}: cannot draw a {out.suffix or 'suffix-less'} file; expected "
                         f"one of .{', .'.join(sorted(formats))}")
    check_regular_file(out, "a figure file to write")
    check_writable_folder(out.parent, "figure")
    return suffix


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, help="PNG path (default: RUN_DIR/curves.png)")
    parser.add_argument("--title", help="figure title (default: the run directory's name)")
    args = parser.parse_args(argv)
    history, source, finished = read_history(args.run_dir)
    key, label, columns = curves(history, source)
    out = args.out or args.run_dir / "curves.png"
    pyplot = import_pyplot()
    suffix = check_output(out)
    title = args.title or args.run_dir.name
    if not finished:
        title += f" (in progress, epoch {history[-1]['epoch']})"
    data = figure_bytes(pyplot, key, label, columns, title, suffix)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, data)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
