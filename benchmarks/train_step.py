#!/usr/bin/env python
"""Median time of one training step of a recipe, data excluded, on this machine.

Builds the recipe's model, optimizer and distributed train step exactly as
`python -m tfseg.train` does (`tfseg.benchmarking.training`, which `python -m tfseg.bench
--train` times too, on a random batch), feeds one fixed batch of its training data again and
again, and prints the median wall time of `--steps` steps after `--warmup` steps, with the CPU's model
and features. docs/benchmarks.md's step-time rows come from it:

    python benchmarks/train_step.py                          # the default recipe, as it runs
    python benchmarks/train_step.py --set train.mixed_precision=none --keras-batch-norm
    python benchmarks/train_step.py --avx2-only --set train.mixed_precision=none

`--keras-batch-norm` trains with Keras's own (unfused) batch norm instead of tfseg's fused
one, for comparison; `--avx2-only` caps oneDNN at AVX2 as an AVX2-only CPU would run
(benchmarks/default_run.py explains the estimate).
"""

import argparse
import os


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="default", help="recipe name or YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--keras-batch-norm", action="store_true",
                        help="Keras's unfused batch norm instead of tfseg's fused one")
    parser.add_argument("--avx2-only", action="store_true",
                        help="cap oneDNN at AVX2 (set before TensorFlow loads)")
    args = parser.parse_args()
    if args.avx2_only:
        os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    # TensorFlow loads from here on.
    import keras

    from tfseg.benchmarking.training import recipe_config, time_train_step
    from tfseg.data.pipeline import make_datasets
    from tfseg.models import layers
    from tfseg.training.distribution import precision_of
    from tfseg.utils import hardware

    if args.keras_batch_norm:
        layers.FusedBatchNormalization.call = keras.layers.BatchNormalization.call
    config = recipe_config(args.config, overrides=args.overrides)
    precision = precision_of(config.train)
    batch = next(iter(make_datasets(config).train))
    model, timing = time_train_step(config, batch, warmup=args.warmup, repeats=args.steps)
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "native")
    print(f"machine: {hardware.cpu_info().describe()}; oneDNN ISA {isa}")
    print(f"{args.config} {' '.join(args.overrides)}: {model.name} at "
          f"{config.train.batch_size}x{config.data.height}x{config.data.width}, "
          f"{precision.policy}, {'Keras' if args.keras_batch_norm else 'fused'} batch norm: "
          f"median {1e3 * timing['median_s']:.1f} ms per step "
          f"(min {1e3 * timing['min_s']:.1f}, {args.steps} steps after {args.warmup})")


if __name__ == "__main__":
    main()
