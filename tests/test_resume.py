"""Runs survive a crash: SIGKILL mid-epoch then `--resume` finishes the run as if it had never
stopped; SIGTERM writes a checkpoint first; a NaN loss stops with the last good checkpoint or
skips the batch; the same seed gives the same metrics."""

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import yaml
from conftest import CPUINFO, REPO, TINY_CONFIG, run_module

from tfseg.runs.restore import load_run

pytestmark = pytest.mark.slow

# 3 epochs of 4 steps, a checkpoint every 2 steps; no export (tested elsewhere).
RESUMABLE = copy.deepcopy(TINY_CONFIG)
RESUMABLE["train"].update(epochs=3, steps_per_epoch=4, checkpoint_every=2)
RESUMABLE["export"] = {"saved_model": False, "onnx": False}


def write_config(tmp_path, config=RESUMABLE, name="config.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
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


def comparable(metrics):
    """The numbers of metrics.json but its timings (equal runs differ only in those), flat."""
    timings = ("images_per_second", "train_seconds", "total_seconds")

    def flat(value, prefix=""):
        if isinstance(value, dict):
            return {k: v for key, item in value.items() if key not in timings
                    for k, v in flat(item, f"{prefix}{key}.").items()}
        if isinstance(value, list):
            return {k: v for index, item in enumerate(value)
                    for k, v in flat(item, f"{prefix}{index}.").items()}
        return {prefix[:-1]: value}

    return flat(metrics)


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

    result = run_module("tfseg.train", "--resume", run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    # It continues from the latest checkpoint on disk: at most checkpoint_every steps redone.
    assert f"resuming {run_dir} at step {max(on_disk)}" in result.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["history"]] == [1, 2, 3]
    assert [row["step"] for row in metrics["history"]] == [4, 8, 12]
    # Same data position, augmentation draws and optimizer state: the same run.
    resumed, reference = comparable(metrics), comparable(uninterrupted)
    assert resumed.keys() == reference.keys()
    for key, value in reference.items():
        assert resumed[key] == (pytest.approx(value, rel=1e-5, abs=1e-6)
                                if isinstance(value, float) else value), key


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


def test_resume_refuses_other_arguments_and_non_runs(tmp_path):
    result = run_module("tfseg.train", "--resume", tmp_path)
    assert result.returncode == 2 and "not a tfseg run" in result.stderr
    result = run_module("tfseg.train", "--resume", tmp_path, "--set", "train.batch_size=2")
    assert result.returncode == 2 and "anything but train.epochs" in result.stderr


ONE_EPOCH = copy.deepcopy(RESUMABLE)
ONE_EPOCH["train"].update(epochs=1, checkpoint_every=0)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-epoch run (4 steps); tests copy it before changing it."""
    tmp = tmp_path_factory.mktemp("finished")
    result = run_module("tfseg.train", "--config", write_config(tmp, ONE_EPOCH), "--run-dir",
                        tmp / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "run"


def test_a_finished_run_is_extended_with_more_epochs(tmp_path, finished):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    result = run_module("tfseg.train", "--resume", run_dir, "--set", "train.epochs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming {run_dir} at step 4" in result.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [row["step"] for row in metrics["history"]] == [4, 8]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["epochs"] == 2
    # Shortening is refused and leaves the run as it was.
    result = run_module("tfseg.train", "--resume", run_dir, "--set", "train.epochs=1")
    assert result.returncode == 2 and "can only be extended" in result.stderr
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["epochs"] == 2


def test_a_resumed_run_picks_its_precision_afresh_on_its_new_machine(tmp_path, finished):
    """config.yaml keeps `auto`; each start decides for its machine and records it. The
    checkpoints fit every precision, mixed_float16's loss-scaled optimizer included."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)   # trained in float32 on conftest's Zen 3
    result = run_module("tfseg.train", "--resume", run_dir, "--set", "train.epochs=2",
                        env={"TFSEG_CPUINFO": str(CPUINFO / "sapphire_rapids.txt")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("tfseg: precision mixed_bfloat16 (auto: this CPU, Intel")
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"][
        "mixed_precision"] == "auto"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["precision"]["policy"] == "mixed_bfloat16"
    assert [row["precision"] for row in metrics["history"]] == ["float32", "mixed_bfloat16"]
    # As if auto had picked float16 (an older GPU): the optimizer gets its loss scaling.
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("mixed_precision: auto",
                                                 "mixed_precision: mixed_float16"))
    result = run_module("tfseg.train", "--resume", run_dir, "--set", "train.epochs=3")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [row["precision"] for row in metrics["history"]] == [
        "float32", "mixed_bfloat16", "mixed_float16"]


def test_init_from_starts_a_new_run_from_another_runs_weights(tmp_path, finished):
    config, source = ONE_EPOCH, finished
    # A learning rate of 1e-12 leaves the weights where they start.
    result = run_module("tfseg.train", "--config", write_config(tmp_path, config),
                        "--run-dir", tmp_path / "tuned", "--set", f"train.init_from={source}",
                        "--set", "train.learning_rate=1e-12")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"starting from the weights of {source / 'checkpoints'}" in result.stdout

    started = load_run(source)[1].trainable_weights
    tuned = load_run(tmp_path / "tuned")[1].trainable_weights
    assert len(started) == len(tuned) > 0
    for before, after in zip(started, tuned):
        np.testing.assert_allclose(after.numpy(), before.numpy(), atol=1e-6,
                                   err_msg=before.path)
    # Another architecture is refused by name, before anything is written.
    result = run_module("tfseg.train", "--config", write_config(tmp_path, config),
                        "--run-dir", tmp_path / "other", "--set", f"train.init_from={source}",
                        "--set", "model.name=fcn_resnet18", "--set", "model.options={}")
    assert result.returncode == 2 and "does not fit the model of this config" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "other").exists()


def test_resume_with_a_config_that_does_not_fit_the_checkpoint_is_refused(tmp_path):
    config = copy.deepcopy(RESUMABLE)
    config["train"].update(epochs=1, steps_per_epoch=2, checkpoint_every=0)
    run_dir = tmp_path / "run"
    assert run_module("tfseg.train", "--config", write_config(tmp_path, config),
                      "--run-dir", run_dir).returncode == 0
    # The finished run's latest checkpoint is at step 2; pretend it stopped early, then edit
    # the saved config to another network.
    state = run_dir / "checkpoints" / "state-2.json"
    saved = json.loads(state.read_text())
    state.write_text(json.dumps({**saved, "step": 1}))
    text = (run_dir / "config.yaml").read_text().replace("name: linknet", "name: fcn_resnet18")
    text = text.replace("  options:\n    width: 0.5\n", "  options: {}\n")
    (run_dir / "config.yaml").write_text(text)
    result = run_module("tfseg.train", "--resume", run_dir)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "does not fit the model of the run's config.yaml" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("policy", ["stop", "skip_batch"])
def test_non_finite_loss(tmp_path, policy):
    # Pixels normalised to about 1e36 overflow float32 in the first convolutions: NaN loss.
    config = copy.deepcopy(RESUMABLE)
    config["data"].update(mean=[-1e30], std=[1e-6])
    config["train"].update(epochs=1, steps_per_epoch=3, nan_policy=policy)
    run_dir = tmp_path / "run"
    result = run_module("tfseg.train", "--config", write_config(tmp_path, config),
                        "--run-dir", run_dir)
    if policy == "stop":
        assert result.returncode == 2, result.stderr[-2000:]
        assert "at step 1" in result.stderr and "nan_policy: skip_batch" in result.stderr
        assert checkpoint_steps(run_dir) == []
    else:
        assert result.returncode == 0, result.stderr[-2000:]
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["skipped_batches"] == [1, 2, 3]


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
