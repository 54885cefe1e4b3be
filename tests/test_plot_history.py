"""tools/plot_history.py: curves from a finished run, from a run in progress, clear errors."""

import json
import subprocess
import sys
from pathlib import Path

import cv2

TOOL = Path(__file__).parents[1] / "tools" / "plot_history.py"


def history(epochs, score="mean_iou", bicubic=False):
    entries = []
    for epoch in range(1, epochs + 1):
        entry = {"epoch": epoch, "step": 10 * epoch, "train_loss": 1.0 / epoch,
                 "validation_loss": 1.2 / epoch, f"validation_{score}": 0.1 * epoch}
        if score == "mean_iou":
            entry["train_mean_iou"] = 0.12 * epoch
        if bicubic:
            entry[f"validation_bicubic_{score}"] = 28.4
        entries.append(entry)
    return entries


def run_tool(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_finished_run_gives_a_two_panel_png(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"history": history(4)}))
    process = run_tool(tmp_path, "--out", tmp_path / "plots" / "curves.png")
    assert process.returncode == 0, process.stderr
    image = cv2.imread(str(tmp_path / "plots" / "curves.png"))
    assert image.shape[1] > 1.5 * image.shape[0]    # two panels side by side
    assert process.stdout.strip() == str(tmp_path / "plots" / "curves.png")


def test_run_in_progress_reads_the_latest_checkpoint_state(tmp_path):
    states = tmp_path / "checkpoints"
    states.mkdir()
    (states / "state-9.json").write_text(json.dumps({"history": []}))   # older: step 9 < 20
    (states / "state-20.json").write_text(json.dumps(
        {"history": history(2, "psnr_y", bicubic=True)}))
    process = run_tool(tmp_path)
    assert process.returncode == 0, process.stderr
    assert cv2.imread(str(tmp_path / "curves.png")) is not None


def test_a_folder_without_a_run_is_refused_in_one_line(tmp_path):
    process = run_tool(tmp_path)
    assert process.returncode != 0
    assert process.stderr.strip() == (f"error: {tmp_path}: no metrics.json and no "
                                      f"checkpoints/state-*.json; expected a tfseg run directory")
    assert not (tmp_path / "curves.png").exists()
