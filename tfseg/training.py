"""The training loop behind `python -m tfseg.train`: train, validate, log to TensorBoard,
checkpoint, export and verify the exports.

One custom training loop serves one device, several devices and several hosts alike: the model
and optimizer are built inside a `tf.distribute` strategy scope and the data are fed through
`strategy.experimental_distribute_dataset`, so scaling out changes the config, not this code.
"""

import contextlib
import dataclasses
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfseg import export, models
from tfseg.config import save_config
from tfseg.data.augment import SegmentationAugmentation
from tfseg.data.interferograms import data_error
from tfseg.data.pipeline import make_datasets
from tfseg.errors import ConfigError, TfsegError
from tfseg.losses import (
    ICNET_PAPER_WEIGHTS,
    ICNET_SEED_WEIGHTS,
    cascade_loss,
    class_pixel_counts,
    linknet_class_weights,
    per_image_asymmetric_loss,
    per_image_cross_entropy,
    per_image_dice_loss,
)
from tfseg.metrics import confusion_matrix, scores_from_confusion
from tfseg.summaries import TensorBoardLog


def refuse_existing_run(run_dir):
    """Raises TfsegError if `run_dir` already holds a run."""
    if (Path(run_dir) / "config.yaml").exists():
        raise TfsegError(f"{run_dir}: already holds a run (config.yaml exists); "
                         f"choose another --run-dir")


def prepare_run_dir(run_dir):
    """Creates the run directory and its sub-folders; refuses one that holds a run."""
    refuse_existing_run(run_dir)
    run_dir = Path(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "export").mkdir(exist_ok=True)
    return run_dir


def make_strategy(name):
    """The tf.distribute strategy for `train.strategy`."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


@contextlib.contextmanager
def dtype_policy(name):
    """Builds layers under Keras dtype policy `name` ("none" = float32), then restores it."""
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("float32" if name == "none" else name)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def make_optimizer(train_config):
    """Optimizer with the configured learning-rate schedule over the whole run (with dynamic
    loss scaling under mixed_float16)."""
    learning_rate = train_config.learning_rate
    total = train_config.epochs * train_config.steps_per_epoch
    if train_config.lr_schedule == "cosine":
        warmup = train_config.warmup_steps
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else learning_rate, decay_steps=total - warmup,
            warmup_target=learning_rate if warmup else None, warmup_steps=warmup)
    elif train_config.lr_schedule == "poly":
        learning_rate = keras.optimizers.schedules.PolynomialDecay(
            learning_rate, decay_steps=total, end_learning_rate=0.0,
            power=train_config.poly_power)
    options = {"learning_rate": learning_rate,
               "weight_decay": train_config.weight_decay or None}
    if train_config.optimizer == "sgd":
        options["momentum"] = train_config.momentum
    optimizers = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop,
                  "sgd": keras.optimizers.SGD}
    optimizer = optimizers[train_config.optimizer](**options)
    if train_config.mixed_precision == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def uses_cascade(config):
    """Whether training uses ICNet's cascade outputs and label guidance."""
    return config.model.name == "icnet" and config.train.cascade != "off"


def build_model(config, input_shape=None, *, for_training=False):
    """The configured model, taking raw pixels (normalisation inside), for frames of
    `input_shape` (H, W); defaults to the data's size. `for_training` adds the outputs the
    training loss needs (ICNet's cascade levels); inference and export models have only the
    full-size logits.

    Raises:
        ConfigError: `model.options` names an option the model lacks or a bad value.
    """
    options = dict(config.model.options)
    if uses_cascade(config):
        options["cascade_outputs"] = for_training
    try:
        return models.build(config.model.name, num_classes=config.model.num_classes,
                            input_shape=input_shape or (config.data.height, config.data.width),
                            input_channels=config.model.input_channels,
                            mean=config.data.mean, std=config.data.std, **options)
    except ValueError as error:
        raise ConfigError(f"model.options: {error}") from None


def train(config, run_dir):
    """Runs training, validation, logging, checkpointing and export for `config`.

    Args:
        config: `tfseg.config.Config`. The run's recipe.
        run_dir: str or Path. Output folder; must not hold another run.

    Returns:
        dict of final validation metrics (also written to `run_dir/metrics.json`).

    Raises:
        TfsegError: bad configuration or data; a bad frame is named with its problem.
    """
    try:
        return _train(config, run_dir)
    except tf.errors.OpError as error:
        reported = data_error(error)
        if reported is None:
            raise
        raise reported from None


def _train(config, run_dir):
    started = time.perf_counter()
    refuse_existing_run(run_dir)
    keras.utils.set_random_seed(config.train.seed)
    class_names = config.data.class_names

    strategy = make_strategy(config.train.strategy)
    # The data folders are checked and the model built before anything is written.
    data = make_datasets(config)
    config = with_computed_class_weights(config, data.train)
    model, optimizer, train_step = build_training(config, strategy)
    with strategy.scope():
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    run_dir = prepare_run_dir(run_dir)
    save_config(config, run_dir / "config.yaml")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch)
    manager = tf.train.CheckpointManager(checkpoint, run_dir / "checkpoints",
                                         max_to_keep=config.train.checkpoints_to_keep)
    evaluation_model = model
    if config.data.augment.crop or uses_cascade(config):
        # Trained on crops or with extra outputs; validated and exported on whole frames with
        # the full-size logits only.
        with strategy.scope(), dtype_policy(config.train.mixed_precision):
            evaluation_model = build_model(config)
    eval_step = make_eval_step(strategy, evaluation_model, config)
    train_batches = iter(strategy.experimental_distribute_dataset(data.train))
    validation = data.validation
    validation_batches = strategy.experimental_distribute_dataset(validation)
    panel_images, panel_masks = next(iter(
        validation.unbatch().batch(config.train.log_images)))
    log = TensorBoardLog(run_dir / "logs", num_classes=config.model.num_classes,
                         ignore_label=config.data.ignore_label)

    print(f"tfseg: training {model.name} ({model.count_params():,} parameters) on "
          f"{strategy.num_replicas_in_sync} replica(s); run directory {run_dir}")
    steps = config.train.steps_per_epoch
    history = []
    for epoch_index in range(config.train.epochs):
        print(f"Epoch {epoch_index + 1}/{config.train.epochs}")
        # A live bar on a terminal; one line per epoch in log files.
        progress = keras.utils.Progbar(steps, verbose=1 if sys.stdout.isatty() else 2,
                                       stateful_metrics=["loss", "mean_iou", "foreground_iou"])
        loss_sum, matrix = 0.0, 0
        for step in range(steps):
            loss, step_matrix = train_step(train_batches)
            loss_sum += float(loss)
            matrix = matrix + step_matrix.numpy()
            running = scores_from_confusion(matrix, class_names)
            progress.update(step + 1, [("loss", loss_sum / (step + 1))] + [
                (key, running[key]) for key in ("mean_iou", "foreground_iou") if key in running])
        if evaluation_model is not model:
            copy_weights(model, evaluation_model)
        scores = {"train": {"loss": loss_sum / steps,
                            **scores_from_confusion(matrix, class_names)},
                  "validation": evaluate(eval_step, validation_batches, class_names)}
        global_step = int(optimizer.iterations.numpy())
        predictions = np.argmax(evaluation_model(panel_images, training=False), -1)
        log.write_epoch(global_step, scores=scores,
                        learning_rate=float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
                        panel_data=(panel_images.numpy(), panel_masks.numpy(), predictions))
        epoch.assign(epoch_index + 1)
        manager.save(checkpoint_number=global_step)
        history.append({"epoch": epoch_index + 1, "step": global_step, **{
            f"{split}_{key}": scores[split][key] for split in ("train", "validation")
            for key in ("loss", "mean_iou", "foreground_iou") if key in scores[split]}})
        print("  validation: " + _format_scores(scores["validation"]))

    model = evaluation_model
    if config.train.mixed_precision != "none":
        # Export and score the float32 copy that users will deploy.
        with strategy.scope():
            model = float32_copy(model, config)
        scores["validation"] = evaluate(make_eval_step(strategy, model, config),
                                        validation_batches, class_names)
    final = {"split": "validation", **scores["validation"], "epochs": config.train.epochs,
             "steps": global_step, "train_seconds": round(time.perf_counter() - started, 1),
             "history": history, "skipped_frames": data.skipped}
    export.write_json(final, run_dir / "metrics.json")
    exports = export_run(model, config, run_dir, validation)
    final["total_seconds"] = round(time.perf_counter() - started, 1)
    export.write_json(final, run_dir / "metrics.json")
    _print_summary(run_dir, scores["validation"], exports, final["total_seconds"])
    if data.skipped:
        print(f"  skipped        {len(data.skipped)} unreadable frame(s), listed in "
              f"{run_dir / 'metrics.json'}")
    return final


def build_training(config, strategy):
    """Model, optimizer and distributed train step for `config`, built in `strategy`'s scope.

    With several replicas, batch norm uses the global batch's statistics: Keras keeps one
    unsynchronised copy of the moving statistics per replica otherwise, and they drift apart.
    """
    with strategy.scope():
        with dtype_policy(config.train.mixed_precision):
            model = build_model(config, config.data.augment.crop or None, for_training=True)
        if strategy.num_replicas_in_sync > 1:
            for layer in models.all_layers(model):
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True
        optimizer = make_optimizer(config.train)
        # Slot variables created lazily inside a replica's tf.function fail under
        # MirroredStrategy: create them now.
        optimizer.build(model.trainable_variables)
        augment = make_augmentation(config)
    return model, optimizer, make_train_step(strategy, model, optimizer, augment, config)


def make_augmentation(config):
    """The configured `SegmentationAugmentation` (build it in the strategy's scope)."""
    options = config.data.augment
    return SegmentationAugmentation(
        flip=options.flip, seed=config.train.seed, crop_size=tuple(options.crop) or None,
        scale=tuple(options.scale) or None, brightness=options.brightness,
        contrast=options.contrast, value_range=tuple(options.value_range),
        ignore_label=config.data.ignore_label)


def with_computed_class_weights(config, train_batches, max_batches=100):
    """`config` with `train.class_weighting` turned into explicit `train.class_weights`,
    computed from the masks of the first epoch's training batches (at most `max_batches`),
    so the resolved config records the weights the run used."""
    weighting = config.train.class_weighting
    if weighting == "none":
        return config
    counts = class_pixel_counts(
        train_batches.take(min(config.train.steps_per_epoch, max_batches)),
        config.model.num_classes)
    weights = linknet_class_weights(counts, log=weighting.removeprefix("linknet_"))
    train = dataclasses.replace(config.train, class_weighting="none",
                                class_weights=[round(float(w), 6) for w in weights])
    return dataclasses.replace(config, train=train)


def per_image_loss(masks, logits, config):
    """The configured training loss of each image: cross-entropy or the asymmetric loss
    (+ weighted Dice); for a dict of ICNet cascade outputs, the cascade label guidance."""
    ignore = config.data.ignore_label
    class_weights = config.train.class_weights or None
    if isinstance(logits, dict):
        weights = ICNET_SEED_WEIGHTS if config.train.cascade == "seed" else ICNET_PAPER_WEIGHTS
        loss = cascade_loss(masks, logits, ignore, weights=weights, class_weights=class_weights)
        logits = logits["logits"]
    elif config.train.loss == "asymmetric":
        options = config.train.asymmetric
        loss = per_image_asymmetric_loss(
            masks, logits, ignore, gamma_pos=options.gamma_pos, gamma_neg=options.gamma_neg,
            clip=options.clip, label_smoothing=options.label_smoothing)
    else:
        loss = per_image_cross_entropy(masks, logits, ignore, class_weights)
    if config.train.dice_weight:
        loss += config.train.dice_weight * per_image_dice_loss(masks, logits, ignore)
    return loss


def make_train_step(strategy, model, optimizer, augment, config):
    """Distributed `train_step(iterator) -> (loss, confusion matrix)` tf.function.

    Each replica scales its loss by the global batch size, so the summed gradient is the
    global-batch mean; loss and confusion matrix are summed across replicas.
    """
    num_classes, ignore = config.model.num_classes, config.data.ignore_label

    def replica_train_step(images, masks):
        images, masks = augment(images, masks)
        with tf.GradientTape() as tape:
            outputs = model(images, training=True)
            loss = tf.nn.compute_average_loss(per_image_loss(masks, outputs, config),
                                              global_batch_size=config.train.batch_size)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs
        gradients = tape.gradient(optimizer.scale_loss(loss), model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss, confusion_matrix(masks, tf.argmax(logits, -1), num_classes, ignore)

    @tf.function
    def train_step(iterator):
        return _sum_replicas(strategy, strategy.run(replica_train_step, args=next(iterator)))

    return train_step


def make_eval_step(strategy, model, config):
    """Distributed `eval_step(batch) -> (loss sum, frame count, confusion matrix)`."""
    num_classes, ignore = config.model.num_classes, config.data.ignore_label

    def replica_eval_step(images, masks):
        logits = model(images, training=False)
        loss_sum = tf.reduce_sum(per_image_loss(masks, logits, config))
        return (loss_sum, tf.shape(images, out_type=tf.int64)[0],
                confusion_matrix(masks, tf.argmax(logits, -1), num_classes, ignore))

    @tf.function
    def eval_step(batch):
        return _sum_replicas(strategy, strategy.run(replica_eval_step, args=batch))

    return eval_step


def _sum_replicas(strategy, values):
    return [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in values]


def copy_weights(source, target):
    """Copies every weight of `target` from the layer of the same name in `source` (models
    whose layers match by name but not by position, e.g. ICNet with and without its cascade
    outputs)."""
    layers = {layer.name: layer for layer in models.all_layers(source)}
    for layer in models.all_layers(target):
        if layer.weights and not isinstance(layer, keras.Model):
            layer.set_weights(layers[layer.name].get_weights())


def float32_copy(model, config):
    """The same network built in float32, holding `model`'s trained weights."""
    with dtype_policy("none"):
        copy = build_model(config)
    copy.set_weights(model.get_weights())
    return copy


def evaluate(eval_step, batches, class_names):
    """Loss (mean per frame), frame count and scores over every validation batch."""
    loss_sum, count, matrix = 0.0, 0, 0
    for batch in batches:
        batch_loss, batch_count, batch_matrix = eval_step(batch)
        loss_sum += float(batch_loss)
        count += int(batch_count)
        matrix = matrix + batch_matrix.numpy()
    return {"loss": loss_sum / max(count, 1), "frames": count,
            **scores_from_confusion(matrix, class_names)}


def export_run(model, config, run_dir, validation):
    """Writes the configured exports under `run_dir/export` and checks ONNX parity."""
    exported = {}
    if config.export.saved_model:
        exported["saved_model"] = export.export_saved_model(
            model, run_dir / "export" / "saved_model")
    if config.export.onnx:
        metadata = {"model": config.model.name,
                    "class_names": ",".join(config.data.class_names),
                    "normalisation": "inside the model: feed raw pixels"}
        exported["onnx"] = export.export_onnx(
            model, run_dir / "export" / "model.onnx", opset=config.export.opset,
            layout=config.export.layout, metadata=metadata)
    if config.export.saved_model and config.export.onnx and config.export.parity_runtimes:
        images, _ = next(iter(validation.unbatch().batch(config.export.parity_samples)))
        exported["parity"] = export.check_parity(
            exported["saved_model"], exported["onnx"], images.numpy(),
            runtimes=config.export.parity_runtimes, layout=config.export.layout,
            max_abs_diff=config.export.max_abs_diff,
            min_argmax_agreement=config.export.min_argmax_agreement,
            report_path=run_dir / "export" / "parity.json")
    return exported


def _format_scores(scores):
    names = [("loss", "loss"), ("foreground_iou", "foreground IoU"), ("mean_iou", "mean IoU"),
             ("pixel_accuracy", "pixel accuracy")]
    return ", ".join(f"{label} {scores[key]:.4f}" for key, label in names if key in scores)


def _print_summary(run_dir, scores, exports, seconds):
    lines = [f"\nDone in {seconds // 60:.0f} min {seconds % 60:.0f} s. Validation: "
             + _format_scores(scores),
             f"  run directory  {run_dir}",
             f"  config         {run_dir / 'config.yaml'}",
             f"  metrics        {run_dir / 'metrics.json'}",
             f"  checkpoints    {run_dir / 'checkpoints'}"]
    if "saved_model" in exports:
        lines.append(f"  SavedModel     {exports['saved_model']}")
    if "onnx" in exports:
        lines.append(f"  ONNX           {exports['onnx']}")
    for runtime, result in exports.get("parity", {}).items():
        lines.append(f"  parity         {runtime}: max abs diff {result['max_abs_diff']:.2g}, "
                     f"argmax agreement {100 * result['argmax_agreement']:.2f} %")
    lines.append(f"  TensorBoard    tensorboard --logdir {run_dir / 'logs'}")
    print("\n".join(lines))
