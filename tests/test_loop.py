"""The training loop in-process: the one validation that `tfseg.evaluate` shares (a tiny
model, a few steps)."""

import copy
import json

import pytest
from conftest import TINY_CONFIG

from tfseg.config import Config, from_dict
from tfseg.deploy.evaluation import evaluate_to_folder
from tfseg.training.loop import train

# 2 epochs of 2 steps, a checkpoint after every step, all kept; no export (test_train.py).
LOOP_CONFIG = copy.deepcopy(TINY_CONFIG)
LOOP_CONFIG["train"].update(checkpoint_every=1, checkpoints_to_keep=4)
LOOP_CONFIG["export"] = {"saved_model": False, "onnx": False}


def run(config, run_dir, **options):
    """`train` on a config given as a dict."""
    return train(from_dict(Config, config, source="test"), run_dir, **options)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished LOOP_CONFIG run; tests copy it before changing it."""
    run_dir = tmp_path_factory.mktemp("loop") / "run"
    run(LOOP_CONFIG, run_dir)
    return run_dir


def test_final_validation_and_evaluate_agree_on_every_score(finished, tmp_path):
    """Training's last validation and `tfseg.evaluate` (Keras, latest checkpoint) are one
    code path: every score is there in both, equal."""
    metrics = json.loads((finished / "metrics.json").read_text())
    evaluate_to_folder(run_dir=finished, output=tmp_path)
    report = json.loads((tmp_path / "evaluation.json").read_text())
    scores = set(metrics) - {"split", "epochs", "steps", "best", "precision", "history",
                             "train_seconds", "total_seconds", "skipped_frames",
                             "skipped_batches"}
    assert scores == set(report) - {"model", "runtime", "runtime_version", "split", "notes",
                                    "per_class"}
    assert {"loss", "frames", "mean_iou", "mean_iiou", "per_class_iiou",
            "seed_per_image_foreground_iou", "confusion_matrix"} <= scores
    for key in scores:
        assert report[key] == metrics[key], key
    # Each epoch's history has the scores that are numbers.
    assert {"validation_mean_iiou", "validation_seed_per_image_foreground_iou"} <= set(
        metrics["history"][-1])
