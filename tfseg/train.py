"""`python -m tfseg.train`: train a model from a YAML recipe, log to TensorBoard, checkpoint,
export and check the exports (the loop itself is `tfseg.training.loop`)."""

import argparse
import datetime
from pathlib import Path

from tfseg.cli import run_cli
from tfseg.config import load_config, save_config
from tfseg.config.recipes import recipe_path
from tfseg.utils.errors import ConfigError


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
    # Imported here so `--help` and config errors answer without loading TensorFlow.
    from tfseg.training.loop import train

    try:
        train(config, run_dir, profile=args.profile)
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
    config = load_config(path, args.overrides)
    if changed:
        planned = load_config(path).train.epochs
        if config.train.epochs < planned:
            raise ConfigError(f"--set train.epochs={config.train.epochs}: {path} plans "
                              f"{planned} epochs; a resumed run can only be extended")
        save_config(config, path)
    from tfseg.training.loop import train  # deferred, as in main

    train(config, args.resume, resume=True, profile=args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
