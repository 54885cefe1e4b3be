"""Runs survive a crash, end to end in child processes: SIGKILL mid-epoch then `--resume`
finishes the run as if it had never stopped; SIGTERM writes a checkpoint first; the same seed
gives the same metrics. The loop's resume and NaN logic is tested in-process in test_loop.py."""

import copy
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf
import yaml
from conftest import REPO, TINY_CONFIG, assert_same_run, comparable, run_module

pytestmark = pytest.mark.slow

# 3 epochs of 4 steps, a checkpoint every 2 steps; no export (tested elsewhere).
RESUMABLE = copy.deepcopy(TINY_CONFIG)
RESUMABLE["train"].update(epochs=3, steps_per_epoch=4, checkpoint_every=2)
RESUMABLE["export"] = {"saved_model": False, "onnx": False}


def write_config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(RESUMABLE))
    return path


def start_training(config_path, run_dir):
    return subprocess.Popen(
        [sys.executable, "-m", "tfseg.train", "--config", str(config_path), "--run-dir",
         str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def wait_for_checkpoint(run_dir, step, process, timeout=300):
    """Waits, while `process` runs, until checkpoint `step` of `run_dir` is complete."""
    deadline = time.monotonic() + timeout
    while step not in checkpoint_steps(run_dir):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"checkpoint {step} did not appear"
        time.sleep(0.05)


def checkpoint_steps(run_dir):
    """Steps of the complete checkpoints: listed in the index and with their state file."""
    directory = run_dir / "checkpoints"
    state = tf.train.get_checkpoint_state(str(directory))
    listed = state.all_model_checkpoint_paths if state else []
    steps = [int(path.rsplit("-", 1)[1]) for path in listed]
    return sorted(step for step in steps if (directory / f"state-{step}.json").exists())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: the same config run without a stop."""
    tmp = tmp_path_factory.mktemp("reference")
    result = run_module("tfseg.train", "--config", write_config(tmp), "--run-dir", tmp / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp / "run" / "metrics.json").read_text())


def test_sigkill_mid_epoch_then_resume_continues_without_gap(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    process = start_training(write_config(tmp_path), run_dir)
    # Step 6 is the middle of epoch 2 (steps 5-8).
    wait_for_checkpoint(run_dir, 6, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    on_disk = checkpoint_steps(run_dir)
    assert max(on_disk) < 12, "the run finished before it was killed"
    # As if the killed part had trained for 1000 s: the resumed run adds its own time to it.
    state_file = run_dir / "checkpoints" / f"state-{max(on_disk)}.json"
    state = json.loads(state_file.read_text())
    assert 0 < state["train_seconds"] < 1000
    state_file.write_text(json.dumps({**state, "train_seconds": 1000.0}))

    result = run_module("tfseg.train", "--resume", run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    # It continues from the latest checkpoint on disk: at most checkpoint_every steps redone.
    assert f"resuming {run_dir} at step {max(on_disk)}" in result.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["history"]] == [1, 2, 3]
    assert [row["step"] for row in metrics["history"]] == [4, 8, 12]
    assert 1000 < metrics["train_seconds"] <= 1000 + metrics["total_seconds"]
    # Same data position, augmentation draws and optimizer state: the same run.
    assert_same_run(metrics, uninterrupted)


def test_sigterm_writes_a_checkpoint_and_exits_with_the_signal_status(tmp_path):
    run_dir = tmp_path / "run"
    process = start_training(write_config(tmp_path), run_dir)
    wait_for_checkpoint(run_dir, 2, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Traceback" not in stderr
    assert "SIGTERM at step" in stderr and f"--resume {run_dir}" in stderr
    stopped_at = int(stderr.split("SIGTERM at step ")[1].split(":")[0])
    assert stopped_at in checkpoint_steps(run_dir)
    assert not (run_dir / "metrics.json").exists()


def test_two_runs_of_the_default_config_give_the_same_metrics(tmp_path):
    """The embedded default, shortened: the same seed, the same numbers."""
    shorter = ["--set", "train.epochs=1", "--set", "train.steps_per_epoch=3",
               "--set", "train.warmup_steps=0", "--set", "data.val_sequences=2",
               "--set", "export.saved_model=false", "--set", "export.onnx=false"]
    runs = []
    for name in ("first", "second"):
        result = run_module("tfseg.train", "--run-dir", tmp_path / name, *shorter)
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(comparable(json.loads((tmp_path / name / "metrics.json").read_text())))
    assert runs[0] == runs[1]
