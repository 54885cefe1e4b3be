"""`python -m tfseg.evaluate` scores a run's checkpoint or its exports alike and writes the
per-class table, JSON, CSV and confusion-matrix picture."""

import csv
import json

import cv2
import numpy as np
import pytest
import yaml
from conftest import run_module
from test_export import trained_run_dir

from tfseg import evaluate
from tfseg.cli import run_cli
from tfseg.deploy import runtimes
from tfseg.deploy.evaluation import predict
from tfseg.tasks.panels import IGNORE_COLOUR


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return trained_run_dir(tmp_path_factory)


def test_exported_onnx_scores_like_keras(run_dir, tmp_path):
    result = run_module("tfseg.evaluate", "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr
    assert "background" in result.stdout and "mean_iou" in result.stdout
    keras_report = json.loads((run_dir / "evaluation.json").read_text())
    assert run_cli(evaluate.main, ["--run-dir", str(run_dir), "--runtime", "onnxruntime",
                                   "--output", str(tmp_path), "--samples", "2",
                                   "--set", "data.class_colours=[[0,0,255],[0,255,0]]"]) == 0
    onnx_report = json.loads((tmp_path / "evaluation.json").read_text())
    assert keras_report["runtime"] == "keras" and onnx_report["runtime"] == "onnxruntime"
    assert onnx_report["frames"] == keras_report["frames"] > 0
    assert abs(onnx_report["mean_iou"] - keras_report["mean_iou"]) <= 0.001
    with open(tmp_path / "evaluation.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["class"] for row in rows] == ["background", "sample"]
    assert sum(int(row["pixels"]) for row in rows) == np.sum(onnx_report["confusion_matrix"])
    picture = cv2.imread(str(tmp_path / "confusion_matrix.png"))
    assert picture is not None and picture.shape[0] > 100
    # Two frames as input | ground truth | prediction, both label columns in the configured
    # class colours.
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    height, width = config["data"]["height"], config["data"]["width"]
    samples = cv2.cvtColor(cv2.imread(str(tmp_path / "samples.png")), cv2.COLOR_BGR2RGB)
    assert samples.shape == (2 * height, 3 * width, 3)
    allowed = {(0, 0, 255), (0, 255, 0), IGNORE_COLOUR}
    labels = samples[:, width:].reshape(-1, 3)
    assert {tuple(colour) for colour in np.unique(labels, axis=0)} <= allowed


def test_model_file_with_config_scores_on_the_training_split(run_dir, tmp_path, capsys):
    assert run_cli(evaluate.main, [
        "--model", str(run_dir / "export" / "saved_model"),
        "--config", str(run_dir / "config.yaml"), "--split", "train",
        "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["split"] == "train" and report["runtime"] == "savedmodel"
    assert report["frames"] == 4  # one epoch: 2 steps of batch 2
    assert "4 train frames, savedmodel" in capsys.readouterr().out


def test_set_scores_the_run_on_other_data(run_dir, tmp_path, capsys):
    # The run validates on one synthetic sequence of 4 frames; score it on two.
    assert run_cli(evaluate.main, ["--run-dir", str(run_dir), "--set", "data.val_sequences=2",
                                   "--output", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "evaluation.json").read_text())["frames"] == 8
    assert run_cli(evaluate.main, ["--run-dir", str(run_dir), "--set",
                                   "data.val_sequence=2"]) == 2
    assert "data.val_sequences" in capsys.readouterr().err   # the closest valid key


def test_logits_of_a_model_of_another_size_are_resized_to_the_labels_with_a_note():
    runtime = runtimes.Runtime("keras", lambda pixels: np.concatenate([pixels, -pixels], -1),
                               version="test", metadata={}, input_size=(32, 32), channels=1)
    images = np.random.default_rng(0).uniform(0, 24, (2, 32, 32, 1)).astype(np.float32)
    notes = set()
    logits = predict(runtime, images, (48, 40), notes)
    assert logits.shape == (2, 48, 40, 2)
    np.testing.assert_allclose(logits[..., 0], -logits[..., 1])   # resized, not recomputed
    assert logits[..., 0].min() >= images.min() and logits[..., 0].max() <= images.max()
    assert notes == {("the model takes 32x32 frames: frames preprocessed at that size (as "
                      "tfseg.predict does) and logits resized to the 48x40 labels")}
    same_size = predict(runtime, images, (32, 32), notes)
    np.testing.assert_array_equal(same_size, runtime(images))
    assert len(notes) == 1


def test_user_mistakes_are_one_line_errors(tmp_path, capsys):
    assert run_cli(evaluate.main, ["--run-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: not a tfseg run (no config.yaml)\n"
    (tmp_path / "config.yaml").write_text("model: {name: linknet}\n")
    assert run_cli(evaluate.main, ["--run-dir", str(tmp_path), "--runtime",
                                   "onnxruntime"]) == 2
    assert "model.onnx: no such file or directory" in capsys.readouterr().err
