#!/usr/bin/env python
"""Writes a synthetic interferogram data set in the on-disk format of real ones.

One folder per sequence: frames (`frame_0000.bmp`, or `.png` for 16-bit), `rois.json` (the ROI
list the labelling tool writes) and a YOLO text file beside each frame. Deterministic under
--seed. Example:

    python tools/make_interferograms.py --out data/interferograms --sequences 8 \\
        --frames 50 --size 3072x3072 --fringes 80
"""

import argparse
import shutil
import sys
from pathlib import Path

import cv2

from tfseg.cli import parse_size
from tfseg.config import SyntheticSpec
from tfseg.data.interferograms import sequence_seed
from tfseg.data.labels import write_roi_json, write_yolo
from tfseg.data.synthetic import generate_sequence


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
    if args.out.exists():
        parser.error(f"{args.out} already exists; choose a new folder")
    if args.sequences < 1:
        parser.error("--sequences must be >= 1")
    try:
        spec = SyntheticSpec(height=args.size[0], width=args.size[1],
                             frames_per_sequence=args.frames, max_samples=args.max_samples,
                             fringes=args.fringes, bit_depth=args.bit_depth)
    except ValueError as error:
        parser.error(str(error))
    suffix = ".bmp" if args.bit_depth == 8 else ".png"   # BMP has no 16-bit grey format
    partial = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)   # left by an interrupted run
    for sequence in range(args.sequences):
        folder = partial / f"sequence_{sequence:03d}"
        folder.mkdir(parents=True)
        frames, boxes = generate_sequence(spec, sequence_seed(args.seed, "train", sequence))
        entries = []
        for index, (frame, frame_boxes) in enumerate(zip(frames, boxes)):
            name = f"frame_{index:04d}{suffix}"
            cv2.imwrite(str(folder / name), frame)
            write_yolo(folder / f"frame_{index:04d}.txt", frame_boxes, *frame.shape)
            entries.append((name, frame_boxes))
        write_roi_json(folder / "rois.json", entries)
    partial.rename(args.out)
    print(f"wrote {args.sequences} sequences of {args.frames} frames to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
