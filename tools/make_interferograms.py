#!/usr/bin/env python
"""Writes a synthetic interferogram data set in the on-disk format of real ones.

One folder per sequence: frames (`frame_0000.bmp`, or `.png` for 16-bit), `rois.json` (the ROI
list the labelling tool writes) and a YOLO text file beside each frame
(`tfseg.data.synthetic_folders`). Deterministic under --seed. Example:

    python tools/make_interferograms.py --out data/interferograms --sequences 8 \\
        --frames 50 --size 3072x3072 --fringes 80
"""

import argparse
import functools
import shutil
import sys
from pathlib import Path

from tfseg.cli import check_in_range, parse_size, run_cli
from tfseg.config import SyntheticSpec
from tfseg.data.synthetic_folders import write_sequences
from tfseg.runs.preflight import available_memory
from tfseg.utils.errors import TfsegError
from tfseg.utils.files import check_writable_folder, existing_ancestor

# Bytes per pixel the renderer holds beside a sequence's frames (its float32 maps; measured
# about 35-40, so a size refused by this bound cannot render).
RENDER_BYTES_PER_PIXEL = 32


def check_resources(args):
    """TfsegError naming the options if one sequence cannot be held in memory or the data set
    cannot fit on the disk, before anything is rendered."""
    height, width = args.size
    frame_bytes = height * width * args.bit_depth // 8
    memory = args.frames * frame_bytes + height * width * RENDER_BYTES_PER_PIXEL
    available = available_memory()
    if available is not None and memory > available:
        raise TfsegError(f"--size {height}x{width} --frames {args.frames}: a sequence needs "
                         f"about {memory / 2**30:.1f} GB of memory, {available / 2**30:.1f} GB "
                         f"is available")
    existing = existing_ancestor(args.out)
    disk, free = args.sequences * args.frames * frame_bytes, shutil.disk_usage(existing).free
    if disk > free:
        raise TfsegError(f"--sequences {args.sequences} --frames {args.frames} --size "
                         f"{height}x{width}: the data set needs about {disk / 2**20:.1f} MB, "
                         f"{existing} has {free / 2**20:.1f} MB free")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (must not exist)")
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16, help="frames per sequence")
    parser.add_argument("--size", type=functools.partial(parse_size, minimum=16),
                        default=(1024, 1024), help="HxW, at least 16x16")
    parser.add_argument("--fringes", type=float, default=24.0,
                        help="carrier fringes across the frame, at most min(H, W) / 4")
    parser.add_argument("--max-samples", type=int, default=3)
    parser.add_argument("--bit-depth", type=int, choices=(8, 16), default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for option, low in (("--sequences", 1), ("--frames", 1), ("--max-samples", 0),
                        ("--seed", 0)):
        check_in_range(option, getattr(args, option[2:].replace("-", "_")), low)
    check_in_range("--fringes", args.fringes, 0, min(args.size) / 4,
                   f" for --size {args.size[0]}x{args.size[1]} (a fringe spans at least 4 "
                   f"pixels)")
    if args.out.exists():
        raise TfsegError(f"{args.out}: already exists; choose a new folder")
    check_writable_folder(args.out, "data set")
    check_resources(args)
    spec = SyntheticSpec(height=args.size[0], width=args.size[1],
                         frames_per_sequence=args.frames, max_samples=args.max_samples,
                         fringes=args.fringes, bit_depth=args.bit_depth)
    write_sequences(args.out, spec, sequences=args.sequences, seed=args.seed)
    print(f"wrote {args.sequences} sequences of {args.frames} frames to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
