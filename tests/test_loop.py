"""The training loop in-process, through its typed state: resume, the NaN policy, extending
and starting from other runs, and the one validation that `tfseg.evaluate` shares (tiny
models, a few steps). Signals and child processes are tested end to end in test_resume.py."""

import copy
import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import CPUINFO, TINY_CONFIG, assert_same_run

from tfseg import train as train_command
from tfseg.cli import run_cli
from tfseg.config import Config, from_dict, load_config
from tfseg.deploy.evaluation import evaluate_to_folder
from tfseg.runs.restore import load_run
from tfseg.tasks.factory import make_task
from tfseg.training.loop import NonFiniteLoss, train
from tfseg.training.optimizers import make_optimizer
from tfseg.training.state import Best, LoopState
from tfseg.training.steps import make_train_step
from tfseg.utils.errors import TfsegError

# 2 epochs of 2 steps, a checkpoint after every step, all kept; no export (test_train.py).
LOOP_CONFIG = copy.deepcopy(TINY_CONFIG)
LOOP_CONFIG["train"].update(checkpoint_every=1, checkpoints_to_keep=4)
LOOP_CONFIG["export"] = {"saved_model": False, "onnx": False}

# Pixels normalised to about 1e36 overflow float32 in the first convolutions: NaN loss.
NAN_CONFIG = copy.deepcopy(LOOP_CONFIG)
NAN_CONFIG["data"].update(mean=[-1e30], std=[1e-6])
NAN_CONFIG["train"].update(epochs=1, steps_per_epoch=3)

# A state-<step>.json as every run since resume existed writes it: step 3, the middle of
# epoch 2, whose third step was skipped.
SAVED_STATE = {
    "step": 3, "loss_sum": 0.7124, "statistics": [[7900, 310], [95, 3]],
    "history": [{"epoch": 1, "step": 2, "precision": "float32", "images_per_second": 9.3,
                 "train_loss": 0.734, "train_mean_iou": 0.2664, "validation_loss": 0.6873,
                 "validation_mean_iou": 0.3081}],
    "best": {"metric": "foreground_iou", "epoch": 1, "step": 2, "value": 0.0264},
    "skipped_batches": [3]}


def run(config, run_dir, **options):
    """`train` on a config given as a dict."""
    return train(from_dict(Config, config, source="test"), run_dir, **options)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished LOOP_CONFIG run; tests copy it before changing it."""
    run_dir = tmp_path_factory.mktemp("loop") / "run"
    run(LOOP_CONFIG, run_dir)
    return run_dir


def copy_run(source, tmp_path):
    shutil.copytree(source, tmp_path / "run")
    return tmp_path / "run"


def test_state_files_of_existing_runs_read_back_typed_and_write_back_unchanged(finished):
    state = LoopState.from_json(json.loads(json.dumps(SAVED_STATE)))
    assert state.best == Best(metric="foreground_iou", epoch=1, step=2, value=0.0264)
    assert state.statistics.dtype == np.int64 and state.statistics.shape == (2, 2)
    assert json.loads(json.dumps(state.to_json())) == SAVED_STATE
    assert state.train_seconds is None   # written before training time was kept
    # What the loop writes today has the same keys and the training time so far.
    written = json.loads((finished / "checkpoints" / "state-3.json").read_text())
    assert list(written) == [*SAVED_STATE, "train_seconds"] and written["step"] == 3
    assert 0 < written["train_seconds"] < 300


def test_a_step_counts_its_loss_if_finite_and_is_skipped_otherwise():
    state = LoopState(statistics=np.zeros(2))
    state.add_step(1.0, [10.0, 2.0], True)
    state.add_step(float("nan"), [np.nan, 2.0], False)
    state.add_step(3.0, [20.0, 2.0], True)
    assert state.step == 3 and state.skipped_batches == [2]
    assert state.statistics.tolist() == [30.0, 4.0]
    assert state.mean_loss(0) == 2.0   # over the two finite steps


def test_an_epoch_continued_from_its_saved_state_sums_as_if_never_stopped():
    steps = [(0.5, [[3, 1], [0, 2]], True), (np.inf, [[0, 0], [0, 0]], False),
             (0.25, [[1, 1], [1, 3]], True)]
    uninterrupted, stopped = (LoopState(statistics=np.zeros((2, 2), np.int64))
                              for _ in range(2))
    for loss, statistics, finite in steps:
        uninterrupted.add_step(loss, np.array(statistics), finite)
    stopped.add_step(steps[0][0], np.array(steps[0][1]), steps[0][2])
    resumed = LoopState.from_json(json.loads(json.dumps(stopped.to_json())))
    for loss, statistics, finite in steps[1:]:
        resumed.add_step(loss, np.array(statistics), finite)
    assert resumed.to_json() == uninterrupted.to_json()
    assert resumed.mean_loss(0) == 0.375 and resumed.statistics.tolist() == [[4, 2], [1, 5]]


def test_an_epoch_end_keeps_the_best_score_and_starts_new_sums():
    state = LoopState(statistics=np.zeros((2, 2), np.int64))
    scores = iter([0.4, 0.3, 0.5])
    improved = []
    for epoch in (1, 2, 3):
        state.add_step(0.5, np.ones((2, 2), np.int64), True)
        improved.append(state.end_epoch({"epoch": epoch}, "mean_iou", next(scores)))
        assert state.loss_sum == 0.0 and not state.statistics.any()
        assert state.statistics.dtype == np.int64
    assert improved == [True, False, True]
    assert state.best == Best(metric="mean_iou", epoch=3, step=3, value=0.5)
    assert [row["epoch"] for row in state.history] == [1, 2, 3]


def test_final_validation_and_evaluate_agree_on_every_score(finished, tmp_path):
    """Training's last validation and `tfseg.evaluate` (Keras, latest checkpoint) are one
    code path: every score is there in both, equal."""
    metrics = json.loads((finished / "metrics.json").read_text())
    evaluate_to_folder(run_dir=finished, output=tmp_path)
    report = json.loads((tmp_path / "evaluation.json").read_text())
    scores = set(metrics) - {"split", "epochs", "steps", "best", "precision", "history",
                             "train_seconds", "total_seconds", "skipped_frames",
                             "skipped_batches", "machine"}
    assert scores == set(report) - {"model", "runtime", "runtime_version", "split", "notes",
                                    "per_class", "min_sample_area"}
    assert {"loss", "frames", "mean_iou", "mean_iiou", "per_class_iiou",
            "seed_per_image_foreground_iou", "confusion_matrix"} <= scores
    for key in scores:
        assert report[key] == metrics[key], key
    # Each epoch's history has the scores that are numbers.
    assert {"validation_mean_iiou", "validation_seed_per_image_foreground_iou"} <= set(
        metrics["history"][-1])


def test_a_run_resumed_mid_epoch_ends_as_if_never_stopped(finished, tmp_path, capsys):
    run_dir = copy_run(finished, tmp_path)
    # As if killed while writing checkpoint 4: checkpoint 3, mid-epoch 2, is the latest
    # complete one.
    (run_dir / "checkpoints" / "state-4.json").unlink()
    (run_dir / "metrics.json").unlink()
    train(load_config(run_dir / "config.yaml"), run_dir, resume=True)
    assert f"resuming {run_dir} at step 3" in capsys.readouterr().out
    assert_same_run(json.loads((run_dir / "metrics.json").read_text()),
                    json.loads((finished / "metrics.json").read_text()))


def test_resume_refuses_other_arguments_non_runs_and_fewer_epochs(finished, tmp_path, capsys):
    assert run_cli(train_command.main, ["--resume", str(tmp_path)]) == 2
    assert "not a tfseg run" in capsys.readouterr().err
    assert run_cli(train_command.main, ["--resume", str(tmp_path), "--set",
                                        "train.batch_size=2"]) == 2
    assert "anything but train.epochs" in capsys.readouterr().err
    run_dir = copy_run(finished, tmp_path)
    assert run_cli(train_command.main, ["--resume", str(run_dir), "--set",
                                        "train.epochs=1"]) == 2
    assert "can only be extended" in capsys.readouterr().err
    assert load_config(run_dir / "config.yaml").train.epochs == 2


def test_a_resumed_run_refuses_a_config_that_does_not_fit_its_checkpoint(finished, tmp_path):
    run_dir = copy_run(finished, tmp_path)
    config = load_config(run_dir / "config.yaml", ["model.name=fcn_resnet18",
                                                   "model.options={}"])
    with pytest.raises(TfsegError, match="does not fit the model of the run's config.yaml"):
        train(config, run_dir, resume=True)


@pytest.mark.slow
def test_a_non_finite_loss_stops_the_run_at_its_step(tmp_path):
    with pytest.raises(NonFiniteLoss, match="at step 1 .*no checkpoint was written.*"
                                            "nan_policy: skip_batch"):
        run(NAN_CONFIG, tmp_path / "run")
    assert tf.train.latest_checkpoint(tmp_path / "run" / "checkpoints") is None


@pytest.mark.slow
def test_skip_batch_skips_non_finite_steps_without_touching_the_weights(finished, tmp_path,
                                                                       capsys):
    """Started from `finished`'s weights (`train.init_from`), every step non-finite: each is
    skipped and counted, and the trained weights stay those of `finished`."""
    config = copy.deepcopy(NAN_CONFIG)
    config["train"].update(nan_policy="skip_batch", init_from=str(finished))
    metrics = run(config, tmp_path / "run")
    assert f"starting from the weights of {finished / 'checkpoints'}" in capsys.readouterr().out
    assert metrics["skipped_batches"] == [1, 2, 3]
    started, ended = (load_run(path)[1].trainable_weights for path in (finished,
                                                                        tmp_path / "run"))
    assert len(started) == len(ended) > 0
    for before, after in zip(started, ended):
        np.testing.assert_array_equal(after.numpy(), before.numpy(), err_msg=before.path)


@pytest.mark.slow
def test_a_skipped_step_leaves_every_model_variable_unchanged():
    """A batch with NaN pixels under `nan_policy: skip_batch`: no weight moves, nor batch
    norm's moving statistics, which the forward pass alone would otherwise change; the next
    finite batch trains (both kinds change)."""
    config = copy.deepcopy(LOOP_CONFIG)
    config["train"]["nan_policy"] = "skip_batch"
    config = from_dict(Config, config, source="test")
    strategy = tf.distribute.get_strategy()
    task = make_task(config)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, padding="same"),
                              keras.layers.BatchNormalization(), keras.layers.Conv2D(2, 1)])
    optimizer = make_optimizer(config.train)
    optimizer.build(model.trainable_variables)
    train_step = make_train_step(strategy, model, optimizer, task, config)
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[:, 2:5, 3:6] = 1
    images = np.random.default_rng(0).uniform(0, 60, (2, 8, 8, 1)).astype(np.float32)
    bad = images.copy()
    bad[0, 4, 4, 0] = np.nan
    batches = iter(tf.data.Dataset.from_tensor_slices(([bad, images], [masks, masks])))
    assert {"moving_mean", "moving_variance"} <= {v.name for v in model.non_trainable_variables}
    before = [variable.numpy().copy() for variable in model.variables]
    _, _, finite = train_step(batches)
    assert not bool(finite)
    for variable, old in zip(model.variables, before):
        np.testing.assert_array_equal(variable.numpy(), old, err_msg=variable.path)
    _, _, finite = train_step(batches)
    assert bool(finite)
    changed = {variable.name for variable, old in zip(model.variables, before)
               if not np.array_equal(variable.numpy(), old)}
    assert {"moving_mean", "moving_variance", "kernel", "gamma"} <= changed


@pytest.mark.slow
def test_init_from_a_run_of_another_architecture_is_refused_before_anything_is_written(
        finished, tmp_path):
    config = copy.deepcopy(NAN_CONFIG)
    config["model"].update(name="fcn_resnet18", options={})
    config["train"]["init_from"] = str(finished)
    with pytest.raises(TfsegError, match="does not fit the model of this config"):
        run(config, tmp_path / "other")
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_a_finished_run_is_extended_with_more_epochs(finished, tmp_path, capsys):
    run_dir = copy_run(finished, tmp_path)
    assert run_cli(train_command.main, ["--resume", str(run_dir), "--set",
                                        "train.epochs=3"]) == 0
    assert f"resuming {run_dir} at step 4" in capsys.readouterr().out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [row["step"] for row in metrics["history"]] == [2, 4, 6]
    assert load_config(run_dir / "config.yaml").train.epochs == 3


@pytest.mark.slow
def test_a_resumed_run_picks_its_precision_afresh_on_its_new_machine(finished, tmp_path,
                                                                    monkeypatch, capsys):
    """config.yaml keeps `auto`; each start decides for its machine and records it. The
    checkpoints fit every precision, mixed_float16's loss-scaled optimizer included."""
    run_dir = copy_run(finished, tmp_path)   # trained in float32 on conftest's Zen 3
    monkeypatch.setenv("TFSEG_CPUINFO", str(CPUINFO / "sapphire_rapids.txt"))
    assert run_cli(train_command.main, ["--resume", str(run_dir), "--set",
                                        "train.epochs=3"]) == 0
    assert capsys.readouterr().out.startswith(
        "tfseg: precision mixed_bfloat16 (auto: this CPU, Intel")
    assert load_config(run_dir / "config.yaml").train.mixed_precision == "auto"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["precision"]["policy"] == "mixed_bfloat16"
    assert [row["precision"] for row in metrics["history"]] == [
        "float32", "float32", "mixed_bfloat16"]
    # As if auto had picked float16 (an older GPU): the optimizer gets its loss scaling.
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("mixed_precision: auto",
                                                 "mixed_precision: mixed_float16"))
    assert run_cli(train_command.main, ["--resume", str(run_dir), "--set",
                                        "train.epochs=4"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [row["precision"] for row in metrics["history"]] == [
        "float32", "float32", "mixed_bfloat16", "mixed_float16"]
