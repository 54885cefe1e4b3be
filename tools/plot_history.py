"""Training curves of a tfseg run as a PNG: loss and the run's main score per epoch.

    python tools/plot_history.py RUN_DIR [--out curves.png] [--title TEXT]

Reads the per-epoch history of `RUN_DIR/metrics.json` (a finished run) or, while a run is
still training, of its latest checkpoint state (`checkpoints/state-<step>.json`). Draws two
panels: training and validation loss, and the validation score the run ranks checkpoints by
(mean IoU for segmentation, PSNR on Y for super-resolution, next to bicubic's when recorded)
with the training score where there is one. Needs matplotlib (`pip install matplotlib`).
"""

import argparse
import json
import re
import sys
from pathlib import Path

SCORES = (("mean_iou", "mean IoU"), ("psnr_y", "PSNR on Y (dB)"))


def read_history(run_dir):
    """(history list, whether the run is finished) of `run_dir`; SystemExit if there is none."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        return json.loads(metrics.read_text())["history"], True
    states = sorted(run_dir.glob("checkpoints/state-*.json"),
                    key=lambda path: int(re.findall(r"\d+", path.stem)[-1]))
    if not states:
        raise SystemExit(f"error: {run_dir}: no metrics.json and no checkpoints/state-*.json; "
                         f"expected a tfseg run directory")
    return json.loads(states[-1].read_text())["history"], False


def plot(history, out, title):
    """Writes the two-panel figure of `history` to `out`."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    if not history:
        raise SystemExit("error: the run has no finished epoch yet")
    key, label = next(((k, name) for k, name in SCORES if f"validation_{k}" in history[0]),
                      (None, None))
    if key is None:
        raise SystemExit(f"error: no score to plot; expected one of "
                         f"{', '.join('validation_' + k for k, _ in SCORES)} in the history")
    epochs = [entry["epoch"] for entry in history]
    figure, (losses, scores) = pyplot.subplots(1, 2, figsize=(10, 3.8))
    for split in ("train", "validation"):
        if f"{split}_loss" in history[0]:
            losses.plot(epochs, [e[f"{split}_loss"] for e in history], label=split)
        if f"{split}_{key}" in history[0]:
            scores.plot(epochs, [e[f"{split}_{key}"] for e in history], label=split)
    if f"validation_bicubic_{key}" in history[0]:
        scores.plot(epochs, [e[f"validation_bicubic_{key}"] for e in history], "--",
                    label="bicubic")
    for axes, name in ((losses, "loss"), (scores, label)):
        axes.set_xlabel("epoch")
        axes.set_ylabel(name)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(title)
    figure.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    pyplot.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, help="PNG path (default: RUN_DIR/curves.png)")
    parser.add_argument("--title", help="figure title (default: the run directory's name)")
    args = parser.parse_args(argv)
    history, finished = read_history(args.run_dir)
    title = args.title or args.run_dir.name
    if not finished:
        title += f" (in progress, epoch {history[-1]['epoch'] if history else 0})"
    out = args.out or args.run_dir / "curves.png"
    plot(history, out, title)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
