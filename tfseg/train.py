"""`python -m tfseg.train`: train a model from a YAML recipe, log to TensorBoard, checkpoint,
export and check the exports (the loop itself is `tfseg.training.loop`)."""

import argparse
import datetime
from pathlib import Path

from tfseg.cli import run_cli
from tfseg.config import apply_overrides, load_config, save_config
from tfseg.config.recipes import recipe_path
from tfseg.runs.folder import (
    FAILED_NAME,
    clear_failed_start,
    folder_contents,
    mark_failed,
    refuse_existing_run,
)
from tfseg.runs.lock import RunLock
from tfseg.runs.preflight import check_before_writing
from tfseg.utils.errors import ConfigError, TfsegError


def parse_args(argv):
    """Command-line arguments of `python -m tfseg.train`."""
    parser = argparse.ArgumentParser(
        prog="python -m tfseg.train",
        description="Train a segmentation model, then export it and check the exports.")
    parser.add_argument("--config", default=None, metavar="NAME|FILE",
                        help="a recipe's name (configs/NAME.yaml, packaged with tfseg, e.g. "
                        "linknet_camvid) or a YAML file (default: default)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override one config value "
                        "(repeatable), e.g. --set train.epochs=3")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="output folder (default: runs/<config-name>-<timestamp>)")
    parser.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                        help="continue a stopped run from its latest checkpoint, with the "
                        "run's own config.yaml; --set train.epochs=N extends it to N epochs")
    parser.add_argument("--profile", action="store_true",
                        help="record a trace of 5 training steps for TensorBoard's Profile tab")
    return parser.parse_args(argv)


def main(argv=None):
    """Loads the recipe and overrides, then trains; returns the exit status."""
    args = parse_args(argv)
    if args.resume:
        return resume(args)
    path = recipe_path(args.config or "default")
    config = load_config(path, args.overrides)
    run_dir = args.run_dir or Path("runs") / (
        f"{path.stem}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    try:
        check_before_writing(config)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    with RunLock(run_dir):
        clear_failed_start(run_dir)
        refuse_existing_run(run_dir)   # so FAILED below can only mark this run
        # Imported here so `--help` and config errors answer without loading TensorFlow.
        from tfseg.training.loop import train

        try:
            train_or_mark_failed(run_dir, lambda: train(config, run_dir, profile=args.profile))
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
    return 0


def resume(args):
    """Continues the run in `args.resume` with its own saved config; `--set train.epochs=N`
    (the one override a resumed run accepts) extends it, and is saved in its config.yaml."""
    changed = [override.split("=", 1)[0].strip() for override in args.overrides]
    if args.config or args.run_dir or any(key != "train.epochs" for key in changed):
        raise ConfigError("--resume continues a run with its own config.yaml: leave out "
                          "--config and --run-dir, and --set anything but train.epochs")
    path = args.resume / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{args.resume}: not a tfseg run (no config.yaml) to resume")
    saved = load_config(path)
    config = apply_overrides(saved, args.overrides)
    with RunLock(args.resume):   # before config.yaml is rewritten
        if changed:
            planned = saved.train.epochs
            if config.train.epochs < planned:
                raise ConfigError(f"--set train.epochs={config.train.epochs}: {path} plans "
                                  f"{planned} epochs; a resumed run can only be extended")
            save_config(config, path)
        failed = args.resume / FAILED_NAME
        if failed.is_file():
            print(f"tfseg: {args.resume} failed before ({failed.read_text().strip()[:200]}); "
                  f"resuming it from its newest checkpoint that verifies")
        from tfseg.training.loop import train  # deferred, as in main

        train_or_mark_failed(args.resume, lambda: train(config, args.resume, resume=True,
                                                        profile=args.profile))
        failed.unlink(missing_ok=True)   # it failed before, not any more
    return 0


def train_or_mark_failed(run_dir, run):
    """Calls `run()`, a new or resumed run in `run_dir`; if it fails after writing to the
    folder, `run_dir/FAILED` names the error (removed when a resume of the folder succeeds):
    the folder is resumable from its verified checkpoints or clearly failed, and reusable
    while it holds no checkpoint. A failure before it wrote (a refused resume) leaves the
    folder as it was, and a SIGINT/SIGTERM stop (after a checkpoint) is not a failure."""
    from tfseg.training.loop import Interrupted

    before = folder_contents(run_dir)
    try:
        run()
    except Interrupted:
        raise
    except BaseException as error:
        if folder_contents(run_dir) != before:
            text = str(error).splitlines()[0] if str(error) else ""
            mark_failed(run_dir, text if isinstance(error, TfsegError)
                        else f"{type(error).__name__}: {text}")
        raise


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
