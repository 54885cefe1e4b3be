"""A run directory's rules: one run per folder, its sub-folders made before training writes,
and a failed start marked (`FAILED`, naming the error) so the folder can be used again."""

import shutil
from pathlib import Path

from tfseg.utils.errors import TfsegError
from tfseg.utils.files import write_text_atomic

FAILED_NAME = "FAILED"


def refuse_file(run_dir):
    """Raises TfsegError if `run_dir` exists but is not a folder."""
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise TfsegError(f"{run_dir}: is a file, not a run directory; choose another --run-dir")


def refuse_existing_run(run_dir):
    """Raises TfsegError if `run_dir` already holds a run, or is not a folder."""
    refuse_file(run_dir)
    if (Path(run_dir) / "config.yaml").exists():
        failed = Path(run_dir) / FAILED_NAME
        why = (f" and failed ({failed.read_text().strip()[:200]})" if failed.is_file()
               else "")
        raise TfsegError(f"{run_dir}: already holds a run (config.yaml exists){why}; choose "
                         f"another --run-dir, or continue it with --resume {run_dir}")


def prepare_run_dir(run_dir):
    """Creates the run directory and its sub-folders; refuses one that holds a run."""
    refuse_existing_run(run_dir)
    run_dir = Path(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "export").mkdir(exist_ok=True)
    return run_dir


def mark_failed(run_dir, message):
    """Writes `run_dir/FAILED` holding `message`, if training had written the run's
    config.yaml (before that, nothing of the run is in the folder). On a disk too full even
    for that, says so and leaves the error that stopped the run to be reported."""
    if (Path(run_dir) / "config.yaml").is_file():
        try:
            write_text_atomic(Path(run_dir) / FAILED_NAME, message.strip() + "\n")
        except TfsegError as error:
            print(f"tfseg: could not mark the run failed: {error}")


def folder_contents(run_dir):
    """{path: (size, modification time)} of every file under `run_dir`: compared before and
    after an attempt at the run, whether it wrote to the folder."""
    contents = {}
    for path in Path(run_dir).rglob("*"):
        if path.is_file():
            stat = path.stat()
            contents[path] = (stat.st_size, stat.st_mtime_ns)
    return contents


def clear_failed_start(run_dir):
    """Empties `run_dir` if it holds only a failed start (a `FAILED` marker and no
    checkpoint), so a new run can use it; a folder with a checkpoint is left to --resume."""
    run_dir = Path(run_dir)
    failed = run_dir / FAILED_NAME
    if not failed.is_file() or any((run_dir / "checkpoints").glob("ckpt-*")):
        return
    print(f"tfseg: {run_dir} held a failed start ({failed.read_text().strip()[:200]}); "
          f"starting over in it")
    for name in ("config.yaml", "metrics.json", "checkpoints", "logs", "export", FAILED_NAME):
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
