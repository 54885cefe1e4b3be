"""A run folder is never corrupted, shared or left half-done (issue 19): a damaged checkpoint
is named and skipped for the newest one that verifies (or resume is refused), a second writer
is refused by the folder's lock, a stale lock is taken over, what can be checked is checked
before the folder is written, and a failed start is marked and does not block the folder."""

import copy
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import tensorflow as tf
import yaml
from conftest import REPO, TINY_CONFIG, assert_same_run
from test_bad_input import camvid_recipe, files_under, write_segnet

from tfseg.cli import run_cli
from tfseg.config import Config, from_dict
from tfseg.runs.checkpoints import RunCheckpoints
from tfseg.runs.lock import RunLock
from tfseg.runs.preflight import check_free_disk
from tfseg.train import main, train_or_mark_failed
from tfseg.training.loop import Interrupted
from tfseg.utils.errors import TfsegError

# 2 epochs of 2 steps, a checkpoint every step (ckpt-1..ckpt-4, the last 3 kept); no export.
TINY = copy.deepcopy(TINY_CONFIG)
TINY["train"].update(checkpoint_every=1, checkpoints_to_keep=3)
TINY["export"] = {"saved_model": False, "onnx": False}


def train_cli(capsys, *args):
    """`python -m tfseg.train args` in-process: (exit status, stdout, stderr)."""
    status = run_cli(main, [str(arg) for arg in args])
    out = capsys.readouterr()
    return status, out.out, out.err


def one_line(stderr):
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run (its checkpoints 2, 3 and 4 on disk)."""
    tmp = tmp_path_factory.mktemp("finished")
    (tmp / "config.yaml").write_text(yaml.safe_dump(TINY))
    assert run_cli(main, ["--config", str(tmp / "config.yaml"), "--run-dir",
                          str(tmp / "run")]) == 0
    return tmp / "run"


@pytest.fixture
def run_copy(finished_run, tmp_path):
    shutil.copytree(finished_run, tmp_path / "run")
    return tmp_path / "run"


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def data_file(run_dir, step):
    return next((run_dir / "checkpoints").glob(f"ckpt-{step}.data-*"))


# === Damaged checkpoints: (damage, the message, the checkpoint resumed from or None) ===

DAMAGES = {
    "junk_index": (lambda run: (run / "checkpoints" / "checkpoint").write_text("junk\n"),
                   "restored ckpt-4", 4),
    "truncated_data": (lambda run: truncate(data_file(run, 4)),
                       "ckpt-4.data-00000-of-00001: unreadable", 3),
    "truncated_index_file": (lambda run: truncate(run / "checkpoints" / "ckpt-4.index"),
                             "ckpt-4.data-00000-of-00001: unreadable", 3),
    "truncated_state": (lambda run: truncate(run / "checkpoints" / "state-4.json"),
                        "state-4.json: unreadable or truncated JSON", 3),
    "state_of_another_step": (
        lambda run: shutil.copy(run / "checkpoints" / "state-3.json",
                                run / "checkpoints" / "state-4.json"),
        "state-4.json: does not hold the state of step 4", 3),
}


def small_checkpoints(directory, steps=(2, 3, 4)):
    """RunCheckpoints of a one-variable model, saved at `steps`; and the variable."""
    model = tf.Module()
    model.weights = tf.Variable(tf.zeros([256]))
    checkpoints = RunCheckpoints(directory, {"model": model}, max_to_keep=3)
    for step in steps:
        model.weights.assign(tf.fill([256], float(step)))
        checkpoints.save(step, {"step": step})
    return model


@pytest.mark.parametrize("damage", DAMAGES, ids=str)
def test_the_newest_checkpoint_that_verifies_is_restored(damage, tmp_path, capsys):
    corrupt, message, resumed_from = DAMAGES[damage]
    small_checkpoints(tmp_path / "checkpoints")
    corrupt(tmp_path)
    model = small_checkpoints(tmp_path / "again", steps=())   # a fresh variable
    checkpoints = RunCheckpoints(tmp_path / "checkpoints", {"model": model}, max_to_keep=3)
    assert checkpoints.restore_latest() == {"step": resumed_from}
    assert float(model.weights[0]) == resumed_from
    out = capsys.readouterr().out
    assert message in out
    # The list names the verified ones again, and saving on prunes beyond max_to_keep.
    assert checkpoints.manager.checkpoints[-1].endswith(f"ckpt-{resumed_from}")
    checkpoints.save(5, {"step": 5})
    checkpoints.save(6, {"step": 6})
    kept = [*range(2, resumed_from + 1), 5, 6][-3:]
    assert [path.rsplit("-", 1)[1] for path in checkpoints.manager.checkpoints] == [
        str(step) for step in kept]
    assert sorted(path.name for path in (tmp_path / "checkpoints").glob("state-*")) == [
        f"state-{step}.json" for step in kept]


def test_no_checkpoint_verifies(tmp_path):
    small_checkpoints(tmp_path / "checkpoints")
    for step in (2, 3, 4):
        truncate(data_file(tmp_path, step))
    checkpoints = RunCheckpoints(tmp_path / "checkpoints", {"model": tf.Module()},
                                 max_to_keep=3)
    with pytest.raises(TfsegError, match="no checkpoint verifies .*ckpt-2.data-00000-of-00001: "
                                         "unreadable"):
        checkpoints.restore_latest()


@pytest.mark.slow
@pytest.mark.parametrize("damage", DAMAGES, ids=str)
def test_resume_skips_damaged_checkpoints_for_the_newest_that_verifies(damage, run_copy,
                                                                        capsys):
    corrupt, message, resumed_from = DAMAGES[damage]
    corrupt(run_copy)
    older = {name: data for name, data in files_under(run_copy / "checkpoints").items()
             if name.startswith(("ckpt-2.", "ckpt-3.", "state-2", "state-3"))}
    status, out, err = train_cli(capsys, "--resume", run_copy)
    assert status == 0, err
    assert message in out
    assert f"restored ckpt-{resumed_from}, the newest checkpoint that verifies" in out
    after = files_under(run_copy / "checkpoints")
    assert {name: after.get(name) for name in older} == older   # good files untouched
    metrics = json.loads((run_copy / "metrics.json").read_text())
    assert metrics["steps"] == 4
    assert not (run_copy / "lock").exists() and not (run_copy / "FAILED").exists()


@pytest.mark.slow
def test_resume_is_refused_when_no_checkpoint_verifies(run_copy, capsys):
    for step in (2, 3, 4):
        truncate(data_file(run_copy, step))
    before = files_under(run_copy)
    status, _, err = train_cli(capsys, "--resume", run_copy)
    assert status == 2
    line = one_line(err)
    assert "no checkpoint verifies" in line and "ckpt-2.data-00000-of-00001: unreadable" in line
    assert files_under(run_copy) == before


# === The lock: one writer per folder ===

def lock_of(pid, host=None):
    return json.dumps({"pid": pid, "host": host or socket.gethostname(),
                       "started": "2030-01-01 00:00:00"}) + "\n"


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("command", ["resume", "run_dir"])
@pytest.mark.parametrize("holder,message", [
    (lambda: lock_of(os.getpid()), "another process (pid {pid}, since 2030-01-01 00:00:00) "
                                   "is training this run"),
    (lambda: lock_of(1, "elsewhere.example"), "locked by pid 1 on host elsewhere.example"),
    (lambda: "garbage", "lock: unreadable lock file"),
], ids=["live_pid", "other_host", "unreadable"])
def test_a_second_writer_is_refused(command, holder, message, tmp_path, capsys):
    run_copy = tmp_path / "run"   # a run being trained: its config.yaml and the lock
    run_copy.mkdir()
    (run_copy / "config.yaml").write_text(yaml.safe_dump(TINY))
    (run_copy / "lock").write_text(holder())
    before = files_under(run_copy)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY))
    args = (["--resume", run_copy] if command == "resume" else
            ["--config", tmp_path / "config.yaml", "--run-dir", run_copy])
    status, _, err = train_cli(capsys, *args)
    assert status == 2
    assert message.format(pid=os.getpid()) in one_line(err)
    assert files_under(run_copy) == before


def test_a_stale_lock_is_taken_over_with_a_note(tmp_path, capsys):
    pid = dead_pid()
    (tmp_path / "lock").write_text(lock_of(pid))
    with RunLock(tmp_path):
        assert json.loads((tmp_path / "lock").read_text())["pid"] == os.getpid()
        assert f"taking over the stale lock of pid {pid}" in capsys.readouterr().out
    assert not (tmp_path / "lock").exists() and tmp_path.is_dir()


def take_at_once(run_dir, count):
    """`count` threads enter RunLock(run_dir) at the same moment; a winner holds the lock until
    every thread has tried. Returns each thread's outcome: "won" or its error."""
    start, tried = threading.Barrier(count, timeout=30), threading.Barrier(count, timeout=30)
    outcomes = []

    def attempt():
        start.wait()
        try:
            with RunLock(run_dir):
                outcomes.append("won")
                tried.wait()
        except TfsegError as error:
            outcomes.append(str(error))
            tried.wait()

    threads = [threading.Thread(target=attempt) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_of_many_takers_of_a_stale_lock_exactly_one_wins(tmp_path, capsys, monkeypatch):
    # A slow liveness check widens the window between judging the lock stale and replacing
    # it, in which a pid check followed by delete-and-recreate lets several takers win.
    from tfseg.runs import lock

    def slow_alive(pid, alive=lock.process_alive):
        time.sleep(0.05)
        return alive(pid)

    monkeypatch.setattr(lock, "process_alive", slow_alive)
    pid = dead_pid()
    (tmp_path / "lock").write_text(lock_of(pid))
    outcomes = take_at_once(tmp_path, 8)
    assert outcomes.count("won") == 1, outcomes
    assert all(f"{tmp_path}: another process" in outcome and "is training this run" in outcome
               for outcome in outcomes if outcome != "won"), outcomes
    assert capsys.readouterr().out.count(f"taking over the stale lock of pid {pid}") == 1
    assert not (tmp_path / "lock").exists()


def test_a_lock_released_while_others_try_is_never_held_twice(tmp_path, monkeypatch):
    # A pause between opening the lock file and flocking it: a taker may flock the file of
    # a holder that has just released (and removed) it, while another creates a new one.
    from tfseg.runs import lock

    def slow_flock(descriptor, operation, flock=fcntl.flock):
        time.sleep(0.002)
        return flock(descriptor, operation)

    monkeypatch.setattr(lock.fcntl, "flock", slow_flock)
    holders, most, guard = [0], [0], threading.Lock()

    def churn():
        for _ in range(25):
            try:
                with RunLock(tmp_path):
                    with guard:
                        holders[0] += 1
                        most[0] = max(most[0], holders[0])
                    time.sleep(0.002)
                    with guard:
                        holders[0] -= 1
            except TfsegError:
                pass

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1
    assert not (tmp_path / "lock").exists()


def test_a_lock_is_released_on_an_error_and_an_empty_new_folder_removed(tmp_path):
    with pytest.raises(ValueError), RunLock(tmp_path / "new" / "run"):
        assert (tmp_path / "new" / "run" / "lock").is_file()
        raise ValueError
    assert not (tmp_path / "new" / "run").exists()


# === Checked before the folder is written; a failure after it is marked, not blocking ===

@pytest.mark.parametrize("override,message", [
    ("data.cache=/nonexistent/p", "data.cache=/nonexistent/p: folder /nonexistent does not "
                                  "exist"),
    ("data.height=40000", "data.height x data.width 40000x40000 at train.batch_size 2: "
                          "training needs about"),
], ids=["cache_folder_missing", "frame_too_large"])
def test_checked_before_the_run_folder_is_written(override, message, tmp_path, capsys):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY))
    status, _, err = train_cli(capsys, "--config", tmp_path / "config.yaml", "--run-dir",
                               tmp_path / "run", "--set", override, "--set",
                               "data.width=40000")
    assert status == 2
    assert message in one_line(err)
    assert not (tmp_path / "run").exists()



def free_disk(monkeypatch, free):
    """shutil.disk_usage reports `free` bytes free; returns the paths it was asked about."""
    asked = []

    def disk_usage(path):
        asked.append(Path(path))
        return SimpleNamespace(total=2**40, used=2**40 - free, free=free)

    monkeypatch.setattr("shutil.disk_usage", disk_usage)
    return asked


def test_the_disk_a_run_needs_is_checked(tmp_path, monkeypatch):
    run_dir, mb = tmp_path / "new" / "run", 2**20
    config = from_dict(Config, TINY, source="test")   # 3 checkpoints kept, no export
    # 4 checkpoints of 10 MB (3 kept, 1 being written) and the best model twice, 10 % and
    # 4 MB more.
    needed = int((4 * 10 + 2 * 3) * mb * 1.1) + 4 * mb
    asked = free_disk(monkeypatch, needed)
    check_free_disk(run_dir, config, checkpoint_bytes=10 * mb, model_bytes=3 * mb)
    assert asked == [tmp_path] and not (tmp_path / "new").exists()
    free_disk(monkeypatch, needed - 1)
    with pytest.raises(TfsegError) as refused:
        check_free_disk(run_dir, config, checkpoint_bytes=10 * mb, model_bytes=3 * mb)
    assert str(refused.value) == (
        f"{run_dir}: the run needs about 54.6 MB of disk ({needed} bytes: 4 checkpoints of "
        f"10.0 MB, the best model and the exports), 54.6 MB ({needed - 1} bytes) is free "
        f"there; free space or choose another --run-dir")
    # The exports: the SavedModel, the ONNX file and the model copy it is converted from.
    exporting = from_dict(Config, {**TINY, "export": {}}, source="test")
    free_disk(monkeypatch, needed + int(3 * 3 * mb * 1.1) - 1)
    with pytest.raises(TfsegError, match="the run needs about 64.5 MB"):
        check_free_disk(run_dir, exporting, checkpoint_bytes=10 * mb, model_bytes=3 * mb)
    # A resumed run's checkpoints hold part of the room already (at least one more is due).
    (run_dir / "checkpoints" / "best").mkdir(parents=True)
    with open(run_dir / "checkpoints" / "ckpt-3.data-00000-of-00001", "wb") as file:
        file.truncate(30 * mb)
    with open(run_dir / "checkpoints" / "best" / "ckpt-3.data-00000-of-00001", "wb") as file:
        file.truncate(3 * mb)
    free_disk(monkeypatch, int(13 * mb * 1.1) + 4 * mb)
    check_free_disk(run_dir, config, checkpoint_bytes=10 * mb, model_bytes=3 * mb)
    with open(run_dir / "checkpoints" / "ckpt-4.data-00000-of-00001", "wb") as file:
        file.truncate(100 * mb)
    free_disk(monkeypatch, int(10 * mb * 1.1) + 4 * mb - 1)
    with pytest.raises(TfsegError, match="the run needs about 15.0 MB"):
        check_free_disk(run_dir, config, checkpoint_bytes=10 * mb, model_bytes=3 * mb)


@pytest.mark.slow
def test_a_disk_too_small_for_the_run_is_refused_before_the_folder_is_written(
        finished_run, tmp_path, capsys, monkeypatch):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY))
    free_disk(monkeypatch, 2**20)
    status, _, err = train_cli(capsys, "--config", tmp_path / "config.yaml", "--run-dir",
                               tmp_path / "run")
    assert status == 2
    refusal = re.fullmatch(rf"error: {tmp_path / 'run'}: the run needs about [\d.]+ MB of "
                           rf"disk \((\d+) bytes: .*\), 1.0 MB \(1048576 bytes\) is free "
                           rf"there; free space or choose another --run-dir", one_line(err))
    assert refusal, one_line(err)
    assert not (tmp_path / "run").exists()
    # Not an estimate from below: the same run, finished, holds less.
    written = sum(path.stat().st_size for path in finished_run.rglob("*") if path.is_file())
    assert written <= int(refusal.group(1))

@pytest.mark.slow
def test_a_failed_start_is_marked_and_its_folder_can_be_used_again(tmp_path, capsys,
                                                                   monkeypatch):
    # A failure after config.yaml is written: the disk fills as the TensorBoard log starts.
    def disk_full(_):
        raise OSError(28, "No space left on device")

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY))
    with monkeypatch.context() as patch:
        patch.setattr("tfseg.training.loop.TensorBoardLog", disk_full)
        with pytest.raises(OSError):
            main(["--config", str(tmp_path / "config.yaml"), "--run-dir",
                  str(tmp_path / "run")])
    assert (tmp_path / "run" / "config.yaml").is_file()
    failed = (tmp_path / "run" / "FAILED").read_text()
    assert failed.startswith("OSError: ") and "No space left on device" in failed
    assert not (tmp_path / "run" / "lock").exists()

    status, out, err = train_cli(capsys, "--config", tmp_path / "config.yaml", "--run-dir",
                                 tmp_path / "run")
    assert status == 0, err
    assert "held a failed start (OSError" in out
    assert not (tmp_path / "run" / "FAILED").exists()
    assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.mark.slow
def test_a_run_with_checkpoints_that_failed_is_resumable_not_reused(run_copy, tmp_path,
                                                                     capsys):
    (run_copy / "FAILED").write_text("the disk was full\n")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY))
    status, _, err = train_cli(capsys, "--config", tmp_path / "config.yaml", "--run-dir",
                               run_copy)
    assert status == 2
    assert "already holds a run (config.yaml exists) and failed (the disk was full); " \
           f"choose another --run-dir, or continue it with --resume {run_copy}" in one_line(err)
    status, _, err = train_cli(capsys, "--resume", run_copy)
    assert status == 0, err
    assert not (run_copy / "FAILED").exists()



def failing_attempt(run_dir, error, write=True):
    """An attempt at the run in `run_dir` that writes a log file (if `write`), then raises."""
    def attempt():
        if write:
            (run_dir / "logs").mkdir(exist_ok=True)
            (run_dir / "logs" / "events").write_text("written by this attempt\n")
        raise error
    return attempt


def test_an_attempt_is_marked_failed_only_if_it_wrote_to_the_folder(tmp_path, capsys,
                                                                   monkeypatch):
    run_dir = tmp_path / "run"   # a run with a checkpoint, as a resume finds it
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(TINY))
    (run_dir / "checkpoints" / "ckpt-2.index").write_text("")
    error = TfsegError("metrics.json: cannot write (No space left on device)")
    with pytest.raises(TfsegError):
        train_or_mark_failed(run_dir, failing_attempt(run_dir, error))
    assert (run_dir / "FAILED").read_text() == f"{error}\n"
    # A refusal before writing (no checkpoint verifies, a missing data folder) changes
    # nothing, the marker of the earlier failure included; so does a SIGTERM stop.
    before = files_under(run_dir)
    with pytest.raises(TfsegError):
        train_or_mark_failed(run_dir, failing_attempt(run_dir, TfsegError("refused"),
                                                      write=False))
    assert files_under(run_dir) == before
    (run_dir / "FAILED").unlink()
    with pytest.raises(Interrupted):
        train_or_mark_failed(run_dir, failing_attempt(run_dir, Interrupted("SIGTERM", 15)))
    assert not (run_dir / "FAILED").exists()
    # A disk too full even for the marker: the error that stopped the run is the one raised.
    def disk_full(path, text):
        raise TfsegError(f"{path}: cannot write (No space left on device)")

    monkeypatch.setattr("tfseg.runs.folder.write_text_atomic", disk_full)
    with pytest.raises(TfsegError, match="^metrics.json: cannot write"):
        train_or_mark_failed(run_dir, failing_attempt(run_dir, error))
    assert f"could not mark the run failed: {run_dir / 'FAILED'}: cannot write" in (
        capsys.readouterr().out)


@pytest.mark.slow
def test_a_failed_resume_is_marked_until_a_resume_succeeds(run_copy, tmp_path, capsys,
                                                           monkeypatch):
    def export_fails(*args):
        raise TfsegError("export: cannot write the export (No space left on device)")

    with monkeypatch.context() as patch:
        patch.setattr("tfseg.training.loop.export_run", export_fails)
        status, _, err = train_cli(capsys, "--resume", run_copy, "--set", "train.epochs=3")
    assert status == 2
    assert one_line(err) == "error: export: cannot write the export (No space left on device)"
    assert (run_copy / "FAILED").read_text() == (
        "export: cannot write the export (No space left on device)\n")
    assert not (run_copy / "lock").exists()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY))
    status, _, err = train_cli(capsys, "--config", tmp_path / "config.yaml", "--run-dir",
                               run_copy)
    assert status == 2 and "already holds a run (config.yaml exists) and failed (export: " \
                           "cannot write the export" in one_line(err)
    status, out, err = train_cli(capsys, "--resume", run_copy)
    assert status == 0, err
    assert f"{run_copy} failed before (export: cannot write the export" in out
    assert "restored ckpt-6" in out
    assert not (run_copy / "FAILED").exists()
    assert json.loads((run_copy / "metrics.json").read_text())["steps"] == 6

# === Crash consistency: SIGKILL, then resume, ends where an uninterrupted run ends ===

def wait_for(condition, process, timeout=300):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("kill_when", ["checkpoint_write_started", "between_epochs"])
def test_sigkill_then_resume_reaches_the_uninterrupted_result(kill_when, finished_run,
                                                               tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY))
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "tfseg.train", "--config", str(tmp_path / "config.yaml"),
         "--run-dir", str(run_dir)], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    checkpoints = run_dir / "checkpoints"
    if kill_when == "checkpoint_write_started":   # state-3.json is written first
        wait_for(lambda: (checkpoints / "state-3.json").exists(), process)
    else:                                         # epoch 1 closed: its history is saved
        wait_for(lambda: (checkpoints / "best" / "state-2.json").exists(), process)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert (run_dir / "lock").exists() and not (run_dir / "metrics.json").exists()

    result = subprocess.run([sys.executable, "-m", "tfseg.train", "--resume", str(run_dir)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "taking over the stale lock" in result.stdout
    assert_same_run(json.loads((run_dir / "metrics.json").read_text()),
                    json.loads((finished_run / "metrics.json").read_text()))
