#!/usr/bin/env python
"""Per-channel mean and spread of a synthetic recipe's network inputs: what its `data.mean`
and `data.std` should hold (for the phase slopes of `data.preprocess.phase_gradient` too).

    python benchmarks/input_statistics.py --config default --sequences 60

Renders `--sequences` sequences of the recipe's `data.synthetic` (training seeds), prepares
every `--stride`-th frame exactly as training does (`Preprocessing.from_config`), and prints
each channel's mean and standard deviation over all their pixels.
"""

import argparse

import numpy as np

from tfseg.config import load_config
from tfseg.config.recipes import recipe_path
from tfseg.data.interferograms import sequence_seed
from tfseg.data.preprocess import Preprocessing
from tfseg.data.synthetic import generate_sequence


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="default", help="a synthetic recipe's name or file")
    parser.add_argument("--sequences", type=int, default=60)
    parser.add_argument("--stride", type=int, default=4)
    args = parser.parse_args()
    config = load_config(recipe_path(args.config))
    preprocessing = Preprocessing.from_config(config)
    images = [preprocessing.image(frame)
              for index in range(args.sequences)
              for frame in generate_sequence(config.data.synthetic, sequence_seed(
                  config.train.seed, "train", index))[0][::args.stride]]
    pixels = np.stack(images).reshape(-1, preprocessing.channels).astype(np.float64)
    print(f"{args.config}: {len(images)} frames of {args.sequences} sequences")
    print("mean", np.round(pixels.mean(axis=0), 4).tolist())
    print("std ", np.round(pixels.std(axis=0), 4).tolist())


if __name__ == "__main__":
    main()
