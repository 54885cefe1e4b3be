"""Make a preset (a trained model shipped with tfseg, `preset:NAME`) from a finished run.

    python tools/make_preset.py --run-dir runs/RUN --name NAME --description "one line" \\
        [--checkpoint latest|best] [--dtype float32|float16] [--cpu "..."] [--root DIR]

Writes ROOT/NAME/ (ROOT defaults to the package's tfseg/pretrained/): the run's config.yaml,
`model.weights.h5` (the checkpoint's weights; float32 keeps them exact, float16 halves the
size and the card says how far the outputs move), `preset.json` (the registry entry: the
description `python -m tfseg.presets` lists, the weights' dtype, size and sha256, the scores)
and `MODEL_CARD.md`, filled from the run's metrics.json (scores of those weights, epochs,
steps, training time, precision, CPU; `--cpu` where the run did not record it) with the
commands that reproduce each figure; `<!-- ... -->` marks what to write by hand. Weights over
15 MB are refused in one line and nothing is written. The work is
`tfseg.runs.preset_maker.make_preset`.
"""

import argparse
import sys
from pathlib import Path

from tfseg.cli import run_cli
from tfseg.runs.presets import DTYPES, check_request

ROOT = Path(__file__).resolve().parents[1] / "tfseg" / "pretrained"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python tools/make_preset.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="a finished tfseg run")
    parser.add_argument("--name", required=True, help="the preset's name (preset:NAME)")
    parser.add_argument("--description", required=True,
                        help="one line for python -m tfseg.presets")
    parser.add_argument("--checkpoint", choices=["latest", "best"], default="latest",
                        help="latest: the weights of metrics.json's final scores (default); "
                        "best: checkpoints/best, scored by its epoch's history row")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--cpu", help="the training machine, where metrics.json lacks it")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help=f"the presets folder (default: {ROOT})")
    parser.add_argument("--replace", action="store_true", help="remake an existing preset")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    check_request(args.run_dir, args.name, args.root, args.replace)
    # Imported after the checks, so refusals answer without loading TensorFlow.
    from tfseg.runs.preset_maker import make_preset

    folder = make_preset(args.run_dir, args.name, args.description, root=args.root,
                         checkpoint=args.checkpoint, dtype=args.dtype, cpu=args.cpu,
                         replace=args.replace)
    print(f"preset:{args.name} -> {folder}")
    print(f"fill in the <!-- ... --> parts of {folder / 'MODEL_CARD.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
