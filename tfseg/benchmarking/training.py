"""One training step of a recipe, timed on a fixed batch (data excluded): the model, optimizer
and distributed step built as `python -m tfseg.train` builds them. `benchmarks/train_step.py`
and `python -m tfseg.bench --train` both time it here."""

import dataclasses
import math
import resource

from tfseg.benchmarking.flops import count_flops
from tfseg.benchmarking.machine import peak_rss_mib, time_calls

# The recipes `--train` measures (configs/), at their own batch and training size.
TRAIN_RECIPES = ("default", "linknet_camvid", "fcn_resnet18_interferogram",
                 "fcn32_vgg16_interferogram", "icnet_interferogram",
                 "icnet_temporal_interferogram", "sr_johnson_x4")
# mixed_precision setting of each `--dtypes` choice ("auto": as training resolves it here).
PRECISION_SETTINGS = {"auto": "auto", "float32": "none", "bfloat16": "mixed_bfloat16",
                      "float16": "mixed_float16"}
# A training step's FLOPs as the usual estimate: the forward pass, and twice it backward
# (the gradients with respect to activations and to weights).
STEP_OVER_FORWARD = 3


def recipe_config(recipe, *, dtype="auto", jit_compile=False, size=None, batch=None,
                  overrides=()):
    """The recipe's `Config` at `dtype` ("auto", "float32", "bfloat16", "float16") and XLA
    setting, with `mixed_precision: auto` resolved as a run resolves it; `size` (H, W) trains
    a segmentation model on whole HxW frames (no crop) and feeds a super-resolution model HxW
    low-resolution patches; `batch` replaces train.batch_size."""
    from tfseg.config import apply_overrides, load_config
    from tfseg.config.recipes import recipe_path
    from tfseg.training.distribution import precision_of

    settings = [f"train.mixed_precision={PRECISION_SETTINGS[dtype]}",
                f"train.jit_compile={str(jit_compile).lower()}", *overrides]
    if batch:
        settings.append(f"train.batch_size={batch}")
    config = load_config(recipe_path(recipe), settings)
    if size and config.model.task == "segmentation":
        config = apply_overrides(config, [f"data.height={size[0]}", f"data.width={size[1]}",
                                          "data.augment.crop=[]"])
    return dataclasses.replace(config, train=dataclasses.replace(
        config.train, mixed_precision=precision_of(config.train).setting))


def random_batch(config, size=None):
    """One training batch of random pixels and labels, shaped as the recipe's pipeline
    yields it (segmentation: frames before the in-step crop, uint8 masks; a recurrent
    model: clips of `data.clips.length` such frames; super-resolution: LR and HR patches, LR
    of `size` when given). No data is read."""
    import tensorflow as tf

    data, batch = config.data, config.train.batch_size
    random = tf.random.Generator.from_seed(0)
    channels = config.model.input_channels
    if config.model.task == "super_resolution":
        scale = config.model.scale
        low = size or (data.super_resolution.patch_size // scale,) * 2
        return (random.uniform((batch, *low, channels), 0, 255),
                random.uniform((batch, low[0] * scale, low[1] * scale, channels), 0, 255))
    shape = (batch, *clip_frames(config), data.height, data.width)
    masks = random.uniform(shape, 0, config.model.num_classes, dtype=tf.int32)
    return random.uniform((*shape, channels), 0, 255), tf.cast(masks, tf.uint8)


def clip_frames(config):
    """(T,) frames of each clip a recurrent recipe's batch holds, () for single frames."""
    from tfseg.models.from_config import is_recurrent

    return (config.data.clips.length,) if is_recurrent(config) else ()


def build_step(config):
    """(model, train_step) of `config` on the default strategy, as `tfseg.train` builds them."""
    import tensorflow as tf

    from tfseg.tasks.factory import make_task
    from tfseg.training.steps import build_training

    model, _, train_step = build_training(config, tf.distribute.get_strategy(),
                                          make_task(config))
    return model, train_step


def time_train_step(config, batch, *, warmup, repeats):
    """Median, p90, min and max seconds of one training step (the loss read back each time)
    on `batch` fed again and again, after `warmup` steps; returns (model, timing)."""
    import tensorflow as tf

    model, train_step = build_step(config)
    batches = iter(tf.data.Dataset.from_tensors(batch).repeat())
    timing = time_calls(lambda: float(train_step(batches)[0]), warmup=warmup,
                        repeats=repeats)
    return model, timing


def measure_train_row(recipe, dtype, jit_compile, size, batch, warmup, repeats):
    """The `--train` row of one recipe at one precision and XLA setting (a child job): step
    time, images per second, GFLOPs per step (forward x 3), parameters and peak memory.

    A recurrent recipe's batch is `batch` clips: its images per second count every frame
    of a clip, the warm-up frames too (as `tfseg.training.loop` counts them), and its
    forward pass is the clip model's over every frame."""
    import keras

    from tfseg.models.from_config import training_input_shape
    from tfseg.training.distribution import precision_of

    size = tuple(size) if size else None
    config = recipe_config(recipe, dtype=dtype, jit_compile=jit_compile, size=size,
                           batch=batch)
    keras.utils.set_random_seed(0)
    fixed = random_batch(config, size)
    model, timing = time_train_step(config, fixed, warmup=warmup, repeats=repeats)
    batch_size = config.train.batch_size
    trained = training_input_shape(config)
    height, width = trained if trained and trained[0] else fixed[0].shape[-3:-1]
    channels, clip = config.model.input_channels, clip_frames(config)
    forward = count_flops(model, (batch_size, *clip, height, width, channels))
    frames = batch_size * math.prod(clip)
    return {"model": config.model.name, "options": dict(config.model.options),
            "num_classes": config.model.num_classes, "batch": batch_size,
            "input": "x".join(map(str, (*clip, height, width, channels))),
            "policy": precision_of(config.train).policy,
            "median_ms": 1e3 * timing["median_s"], "p90_ms": 1e3 * timing["p90_s"],
            "min_ms": 1e3 * timing["min_s"], "max_ms": 1e3 * timing["max_s"],
            "images_per_s": frames / timing["median_s"],
            "gflops_per_step": STEP_OVER_FORWARD * forward / 1e9,
            "parameters": sum(math.prod(w.shape) for w in model.trainable_weights),
            "peak_rss_mib": max(peak_rss_mib(), peak_rss_mib(resource.RUSAGE_CHILDREN))}


def pytorch_arguments(row):
    """`benchmarks/pytorch_reference.py --train` arguments for the same network, batch, size,
    channels and classes as a tfseg `--train` row, or None when it has no such network."""
    if row["model"] not in ("linknet", "fcn_resnet18"):
        return None
    height, width, channels = row["input"].split("x")
    return ["--train", "--model", row["model"], "--size", f"{height}x{width}",
            "--channels", channels, "--classes", str(row["num_classes"]),
            "--width", str(row["options"].get("width", 1.0)), "--batch", str(row["batch"])]
