#!/usr/bin/env python
"""Where a recipe's training step goes: median times of its parts on one fixed random batch,
and with `--profile DIR` TensorFlow's profile of whole steps summed by op type.

The parts, each its own tf.function on the recipe's model as `python -m tfseg.train` builds
it (`tfseg.benchmarking.training`): inference (`training=False`), the forward pass in training
mode, forward + backward (the configured loss and its gradients), and the whole distributed
step (augmentation, loss, gradients, the finite check, the step's confusion matrix and the
optimizer update). The full step minus forward + backward is what the optimizer and the
step's bookkeeping cost. docs/benchmarks.md's step tables come from it:

    python benchmarks/step_profile.py --config default --dtype float32
    python benchmarks/step_profile.py --set model.options.width=1.0 --profile runs/profile

Run it against another checkout of tfseg with `PYTHONPATH=THAT_CHECKOUT` to compare commits
in one sitting. The profile (also viewable in TensorBoard's profile tab) is summed here per op
type: self time per step and share of the busy time.
"""

import argparse
import collections
import glob
import json
import statistics
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="default", help="recipe name or YAML file")
    parser.add_argument("--dtype", default="float32",
                        choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--profile", metavar="DIR",
                        help="also profile --repeats whole steps into DIR and print the op "
                             "types taking the most time")
    args = parser.parse_args()
    # TensorFlow loads from here on.
    import keras
    import tensorflow as tf

    from tfseg.benchmarking.training import build_step, random_batch, recipe_config
    from tfseg.tasks.factory import make_task
    from tfseg.utils import hardware

    config = recipe_config(args.config, dtype=args.dtype, overrides=args.overrides)
    keras.utils.set_random_seed(0)
    batch = random_batch(config)
    model, train_step = build_step(config)
    task = make_task(config)
    images, masks = task.augment(*batch)
    batches = iter(tf.data.Dataset.from_tensors(batch).repeat())

    def forward_backward():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(task.per_image_loss(masks, model(images, training=True)))
        return tape.gradient(loss, model.trainable_variables)   # all: none pruned

    parts = {"inference": tf.function(lambda: model(images, training=False)),
             "forward (training)": tf.function(lambda: model(images, training=True)),
             "forward + backward": tf.function(forward_backward),
             "whole step": lambda: train_step(batches)[0]}
    print(f"machine: {hardware.cpu_info().describe()}")
    print(f"{args.config} {' '.join(args.overrides)}: {model.name} at "
          f"{config.train.batch_size}x{config.data.height}x{config.data.width}, {args.dtype}; "
          f"median of {args.repeats} calls after {args.warmup}")
    for name, part in parts.items():
        print(f"  {name:20s} {1e3 * median_seconds(part, args):8.1f} ms")
    if args.profile:
        tf.profiler.experimental.start(args.profile)
        for _ in range(args.repeats):
            train_step(batches)[0].numpy()
        tf.profiler.experimental.stop()
        print_op_types(args.profile, args.repeats)


def median_seconds(call, args):
    """Median wall time of `call` (its first output read back) after warm-up calls."""
    import tensorflow as tf

    def run():
        started = time.perf_counter()
        tf.nest.flatten(call())[0].numpy()
        return time.perf_counter() - started

    for _ in range(args.warmup):
        run()
    return statistics.median(run() for _ in range(args.repeats))


def print_op_types(directory, steps, top=20):
    """Self time per step of the op types of the profile in `directory`, largest first."""
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    planes = glob.glob(f"{directory}/**/*.xplane.pb", recursive=True)
    data, _ = plugin.xspace_to_tools_data(planes, "framework_op_stats", {})
    table = json.loads(data)[0]
    columns = [column["id"] for column in table["cols"]]
    totals = collections.Counter()
    for row in table["rows"]:
        cells = {key: (cell or {}).get("v") for key, cell in zip(columns, row["c"])}
        if cells["type"] != "IDLE":
            totals[cells["type"]] += cells["total_self_time"] or 0
    busy = sum(totals.values())
    print(f"profile of {steps} steps in {directory}: busy {busy / steps / 1e3:.1f} ms of "
          f"thread time per step (both cores count)")
    for op_type, microseconds in totals.most_common(top):
        print(f"  {op_type:40s} {microseconds / steps / 1e3:8.2f} ms  "
              f"{100 * microseconds / busy:5.1f} %")


if __name__ == "__main__":
    main()
