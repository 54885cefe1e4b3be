"""A full disk (issue 19): ENOSPC while a checkpoint or an export is being written is one line
and a non-zero exit, and leaves the previous checkpoints and export intact. The disk is real:
a small tmpfs, filled up while the write is under way (root only; skipped where tmpfs cannot be
mounted)."""

import errno
import subprocess

import pytest
import yaml
from test_fuzz_deploy import snapshot
from test_run_folder import TINY, one_line, train_cli

from tfseg import export
from tfseg.cli import run_cli
from tfseg.runs.checkpoints import RunCheckpoints, verified_checkpoints

pytestmark = pytest.mark.slow

NO_SPACE = "No space left on device"


@pytest.fixture
def small_disk(tmp_path):
    """A 256 MB tmpfs (a tiny run needs 174 MB), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def fill(disk):
    """Fills what is left of `disk` with a file; returns it (delete it to free the disk)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as file:
        with pytest.raises(OSError) as full:
            while True:
                file.write(bytes(2**16))
    assert full.value.errno == errno.ENOSPC
    return filler


def test_a_full_disk_during_a_checkpoint_save(small_disk, tmp_path, capsys, monkeypatch):
    """The disk fills after state-3.json is written, as TensorFlow writes ckpt-3: one line,
    exit 2, checkpoints 1 and 2 intact, nothing of ckpt-3 left, the run marked failed; with
    space freed, it resumes from ckpt-2 and ends."""
    run_dir, checkpoints = small_disk / "run", small_disk / "run" / "checkpoints"
    write_state, filled = RunCheckpoints._write_state, []

    def write_state_then_fill(directory, step, state):
        write_state(directory, step, state)
        if step == 3 and directory == checkpoints:
            filled.append(fill(small_disk))

    monkeypatch.setattr(RunCheckpoints, "_write_state", staticmethod(write_state_then_fill))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY))
    status, _, err = train_cli(capsys, "--config", tmp_path / "config.yaml", "--run-dir",
                                 run_dir)
    assert filled and status == 2, err[-3000:]
    assert one_line(err) == (f"error: {checkpoints}: cannot write checkpoint ckpt-3 "
                             f"({NO_SPACE}); the earlier checkpoints are intact: free space, "
                             f"then continue with --resume {run_dir}")
    verified, skipped = verified_checkpoints(checkpoints)
    assert [path.name for path, _ in verified] == ["ckpt-1", "ckpt-2"] and not skipped
    assert not [path for path in checkpoints.iterdir() if "-3" in path.name]
    # What TensorFlow had written of ckpt-3 is gone, which leaves room for the marker.
    assert (run_dir / "FAILED").read_text().startswith(f"{checkpoints}: cannot write "
                                                       f"checkpoint ckpt-3 ({NO_SPACE})")
    monkeypatch.undo()

    filled[0].unlink()
    status, out, err = train_cli(capsys, "--resume", run_dir)
    assert status == 0, err
    assert "restored ckpt-2, the newest checkpoint that verifies" in out
    assert (run_dir / "metrics.json").is_file() and not (run_dir / "FAILED").exists()


def test_a_full_disk_during_an_export(small_disk, tmp_path_factory, capsys):
    """`python -m tfseg.export` on a full disk: one line, exit 2, the previous export as it
    was and no temporary left."""
    from test_export import copy_of_run, trained_run_dir

    run_dir = copy_of_run(trained_run_dir(tmp_path_factory), small_disk / "run")
    before = snapshot(run_dir / "export")
    fill(small_disk)
    assert run_cli(export.main, ["--run-dir", str(run_dir)]) == 2
    assert one_line(capsys.readouterr().err) == (
        f"error: {run_dir / 'export'}: cannot write the export ({NO_SPACE}); the previous "
        f"export is unchanged")
    assert snapshot(run_dir / "export") == before
    assert sorted(path.name for path in run_dir.iterdir()) == [
        "checkpoints", "config.yaml", "export"]
