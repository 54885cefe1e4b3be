"""`python -m tfseg.train`: train a model from a YAML recipe, log to TensorBoard, checkpoint,
export and check the exports (the loop itself is `tfseg.training`)."""

import argparse
import datetime
from pathlib import Path

from tfseg.config import load_config
from tfseg.errors import ConfigError, run_cli

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


def parse_args(argv):
    """Command-line arguments of `python -m tfseg.train`."""
    parser = argparse.ArgumentParser(
        prog="python -m tfseg.train",
        description="Train a segmentation model, then export it and check the exports.")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML recipe (default: the embedded configs/default.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override one config value "
                        "(repeatable), e.g. --set train.epochs=3")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="output folder (default: runs/<config-name>-<timestamp>)")
    return parser.parse_args(argv)


def main(argv=None):
    """Loads the recipe and overrides, then trains; returns the exit status."""
    args = parse_args(argv)
    path = args.config or DEFAULT_CONFIG
    if not path.exists() and args.config is None:
        raise ConfigError(f"{path}: the default recipe is missing; install tfseg from a "
                          f"checkout with `pip install -e .` or pass --config FILE")
    config = load_config(path, args.overrides)
    run_dir = args.run_dir or Path("runs") / (
        f"{path.stem}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    # Imported here so `--help` and config errors answer without loading TensorFlow.
    from tfseg.training import train

    try:
        train(config, run_dir)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
