"""`python -m tfseg.presets [NAME]`: the trained models that ship with tfseg, by name, each with
its one-line description; with NAME, its model card (recipe, data, training time and CPU,
scores and the commands that reproduce them).

A preset is used by its name wherever a model is named:

    python -m tfseg.predict --model preset:NAME --input frames/ --output predictions/
    python -m tfseg.evaluate --model preset:NAME --output DIR [--set data.path=FOLDER]
    python -m tfseg.export --model preset:NAME --output DIR
    python -m tfseg.train --config RECIPE --set train.init_from=preset:NAME

The folders named in the TFSEG_PRESETS variable are searched before the packaged presets
(`tfseg.runs.presets`); `tools/make_preset.py` makes a preset from a finished run.
"""

import argparse
import sys

from tfseg.cli import run_cli
from tfseg.runs.presets import PREFIX, find_preset, known_line, presets


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m tfseg.presets", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="print this preset's model card")
    return parser.parse_args(argv)


def format_list(found):
    """One line per preset: `preset:NAME`, task and model, description."""
    if not found:
        return known_line(found)
    width = max(len(PREFIX + name) for name in found)
    lines = []
    for name, preset in sorted(found.items()):
        kind = f"{preset.info.get('task', '?')}, {preset.info.get('model', '?')}"
        lines.append(f"{PREFIX + name:<{width}}  {preset.description} ({kind}; "
                     f"{preset.folder})")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.name:
        preset = find_preset(args.name)
        print(preset.card_path.read_text(), end="")
    else:
        print(format_list(presets()))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
