#!/usr/bin/env python
"""Writes a synthetic interferogram data set in the on-disk format of real ones.

One folder per sequence: frames (`frame_0000.bmp`, or `.png` for 16-bit), `rois.json` (the ROI
list the labelling tool writes) and a YOLO text file beside each frame
(`tfseg.data.synthetic_folders`). Deterministic under --seed. Example:

    python tools/make_interferograms.py --out data/interferograms --sequences 8 \\
        --frames 50 --size 3072x3072 --fringes 80
"""

import argparse
import sys
from pathlib import Path

from tfseg.cli import parse_size
from tfseg.config import SyntheticSpec
from tfseg.data.synthetic_folders import write_sequences
from tfseg.utils.errors import TfsegError


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (must not exist)")
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16, help="frames per sequence")
    parser.add_argument("--size", type=parse_size, default=(1024, 1024), help="HxW")
    parser.add_argument("--fringes", type=float, default=24.0)
    parser.add_argument("--max-samples", type=int, default=3)
    parser.add_argument("--bit-depth", type=int, choices=(8, 16), default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        spec = SyntheticSpec(height=args.size[0], width=args.size[1],
                             frames_per_sequence=args.frames, max_samples=args.max_samples,
                             fringes=args.fringes, bit_depth=args.bit_depth)
        write_sequences(args.out, spec, sequences=args.sequences, seed=args.seed)
    except (ValueError, TfsegError) as error:
        parser.error(str(error))
    print(f"wrote {args.sequences} sequences of {args.frames} frames to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
