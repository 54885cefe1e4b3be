"""A run directory's rules: one run per folder, its sub-folders made before training writes."""

from pathlib import Path

from tfseg.utils.errors import TfsegError


def refuse_existing_run(run_dir):
    """Raises TfsegError if `run_dir` already holds a run, or is not a folder."""
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise TfsegError(f"{run_dir}: is a file, not a run directory; choose another --run-dir")
    if (Path(run_dir) / "config.yaml").exists():
        raise TfsegError(f"{run_dir}: already holds a run (config.yaml exists); choose "
                         f"another --run-dir, or continue it with --resume {run_dir}")


def prepare_run_dir(run_dir):
    """Creates the run directory and its sub-folders; refuses one that holds a run."""
    refuse_existing_run(run_dir)
    run_dir = Path(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "export").mkdir(exist_ok=True)
    return run_dir
