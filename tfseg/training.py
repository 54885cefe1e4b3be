"""The training loop behind `python -m tfseg.train`: train, validate, log to TensorBoard,
checkpoint, resume, export and verify the exports.

One custom training loop serves one device, several devices and several hosts alike: the model
and optimizer are built inside a `tf.distribute` strategy scope and the data are fed through
`strategy.experimental_distribute_dataset`, so scaling out changes the config, not this code.
What differs between segmentation and super-resolution lives in `tfseg.tasks`.
"""

import contextlib
import dataclasses
import re
import signal
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfseg import export, models
from tfseg.checkpoints import RunCheckpoints
from tfseg.config import save_config
from tfseg.data.interferograms import data_error
from tfseg.data.pipeline import make_datasets
from tfseg.errors import ConfigError, TfsegError
from tfseg.hardware import resolve_precision
from tfseg.losses import class_pixel_counts, linknet_class_weights
from tfseg.metrics import confusion_matrix, scores_from_confusion
from tfseg.runs import restore_weights
from tfseg.summaries import TensorBoardLog
from tfseg.tasks import full_size, make_task


class NonFiniteLoss(TfsegError):
    """The loss or its gradients became NaN or Inf (with `train.nan_policy: stop`)."""


class Interrupted(TfsegError):
    """SIGINT or SIGTERM stopped the run after writing a checkpoint."""

    def __init__(self, message, signal_number):
        super().__init__(message)
        self.exit_status = 128 + signal_number


def refuse_existing_run(run_dir):
    """Raises TfsegError if `run_dir` already holds a run, or is not a folder."""
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise TfsegError(f"{run_dir}: is a file, not a run directory; choose another --run-dir")
    if (Path(run_dir) / "config.yaml").exists():
        raise TfsegError(f"{run_dir}: already holds a run (config.yaml exists); choose "
                         f"another --run-dir, or continue it with --resume {run_dir}")


def prepare_run_dir(run_dir):
    """Creates the run directory and its sub-folders; refuses one that holds a run."""
    refuse_existing_run(run_dir)
    run_dir = Path(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "export").mkdir(exist_ok=True)
    return run_dir


def make_strategy(name):
    """The tf.distribute strategy for `train.strategy` ("multi_worker" reads TF_CONFIG)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy):
    """Whether this process writes the run's logs, metrics and exports: the only process,
    or the chief of a TF_CONFIG cluster (worker 0 when the cluster names no chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if "chief" in resolver.cluster_spec().jobs:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def precision_of(train_config):
    """The `tfseg.hardware.Precision` of `train_config.mixed_precision` on this machine: the
    Keras dtype policy ("auto" decided from the hardware) and why; mixed_float16's loss
    scaling needs the default strategy."""
    return resolve_precision(train_config.mixed_precision,
                             float16=train_config.strategy == "default")


@contextlib.contextmanager
def dtype_policy(name):
    """Builds layers under Keras dtype policy `name` (e.g. "float32"), then restores it."""
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def make_optimizer(train_config):
    """Optimizer with the configured learning-rate schedule over the whole run, learning-rate
    multipliers, and dynamic loss scaling under mixed_float16."""
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
    optimizer_class = optimizers[train_config.optimizer]
    if train_config.lr_multipliers:
        optimizer_class = with_lr_multipliers(optimizer_class, train_config.lr_multipliers)
    optimizer = optimizer_class(**options)
    if precision_of(train_config).policy == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def with_lr_multipliers(optimizer_class, multipliers):
    """A subclass of the Keras `optimizer_class` whose learning rate is multiplied, per
    variable, by the factor of the first regex of `multipliers` found in the variable's path
    (1 if none). Scaling gradients instead would do nothing under Adam or RMSprop."""
    patterns = [(re.compile(pattern), float(factor)) for pattern, factor in multipliers.items()]

    def factor_of(path):
        return next((factor for pattern, factor in patterns if pattern.search(path)), 1.0)

    class Multiplied(optimizer_class):
        def build(self, variables):
            super().build(variables)
            self.lr_factors = [factor_of(variable.path) for variable in variables]

        def update_step(self, gradient, variable, learning_rate):
            factor = self.lr_factors[self._get_variable_index(variable)]
            if factor != 1.0:
                learning_rate = tf.cast(learning_rate, variable.dtype) * factor
            return super().update_step(gradient, variable, learning_rate)

    Multiplied.__name__ = f"{optimizer_class.__name__}WithLrMultipliers"
    return Multiplied


def uses_cascade(config):
    """Whether training uses ICNet's cascade outputs and label guidance."""
    return config.model.name == "icnet" and config.train.cascade != "off"


def build_model(config, input_shape=None, *, for_training=False):
    """The configured model, taking raw pixels (normalisation inside), for frames of
    `input_shape` (H, W); defaults to the data's size (super-resolution: the LR size the
    export uses). `for_training` adds the outputs the training loss needs (ICNet's cascade
    levels); inference and export models have only the full-size output.

    Raises:
        ConfigError: `model.options` names an option the model lacks or a bad value.
    """
    options = dict(config.model.options)
    if uses_cascade(config):
        options["cascade_outputs"] = for_training
    if config.model.task == "super_resolution":
        options["scale"] = config.model.scale
    else:
        options["num_classes"] = config.model.num_classes
    try:
        return models.build(config.model.name,
                            input_shape=input_shape or (config.data.height, config.data.width),
                            input_channels=config.model.input_channels,
                            mean=config.data.mean, std=config.data.std, **options)
    except ValueError as error:
        raise ConfigError(f"model.options: {error}") from None


def train(config, run_dir, *, resume=False, profile=False):
    """Runs training, validation, logging, checkpointing and export for `config`.

    Args:
        config: `tfseg.config.Config`. The run's recipe.
        run_dir: str or Path. Output folder; must not hold another run unless `resume`.
        resume: bool. Continue the run in `run_dir` from its latest checkpoint (`config` must
            be the run's own config.yaml).
        profile: bool. Record a trace of a few training steps for TensorBoard's Profile tab.

    Returns:
        dict of final validation metrics (also written to `run_dir/metrics.json`).

    Raises:
        TfsegError: bad configuration or data (a bad frame is named with its problem), a
            non-finite loss, or an interruption by SIGINT/SIGTERM (after a checkpoint).
    """
    try:
        return _train(config, Path(run_dir), resume=resume, profile=profile)
    except tf.errors.OpError as error:
        reported = data_error(error)
        if reported is None:
            raise
        raise reported from None


def _train(config, run_dir, *, resume, profile):
    started = time.perf_counter()
    # First: a multi-worker strategy configures collectives before any other TensorFlow op.
    strategy = make_strategy(config.train.strategy)
    precision = precision_of(config.train)
    print(f"tfseg: precision {precision}")
    if not resume:
        refuse_existing_run(run_dir)
    keras.utils.set_random_seed(config.train.seed)
    chief = is_chief(strategy)
    # The data folders are checked and the model built before anything is written.
    data = make_datasets(config)
    saved = with_computed_class_weights(config, data.train)
    # config.yaml keeps the setting ("auto" stays "auto"), so a run resumed on another
    # machine computes in that machine's precision; metrics.json records each epoch's.
    config = dataclasses.replace(saved, train=dataclasses.replace(
        saved.train, mixed_precision=precision.setting))
    with strategy.scope():
        task = make_task(config)
    model, optimizer, train_step = build_training(config, strategy, task)
    evaluation_model, validate = build_validation(config, strategy, task, model,
                                                  data.validation)
    # Restored before anything is written, so a bad train.init_from leaves no run behind (a
    # resumed run's own checkpoint then replaces these weights).
    initial_weights = restore_weights(
        config.train.init_from, model,
        "the model of this config (train.init_from)") if config.train.init_from else None
    if not resume:
        prepare_run_dir(run_dir)
        save_config(saved, run_dir / "config.yaml")
    # The optimizer without mixed_float16's loss-scale wrapper, whose scale adapts again in a
    # few steps: checkpoints then fit every precision a resumed run may pick.
    checkpoints = RunCheckpoints(run_dir / "checkpoints",
                                 {"model": model,
                                  "optimizer": getattr(optimizer, "inner_optimizer", optimizer),
                                  "random": random_states(task)},
                                 max_to_keep=config.train.checkpoints_to_keep)
    state = checkpoints.restore_latest() if resume else None
    if state is None and initial_weights:
        print(f"tfseg: starting from the weights of {initial_weights}")
    state = state or {
        "step": 0, "loss_sum": 0.0, "statistics": task.zero_statistics().tolist(),
        "history": [], "best": None, "skipped_batches": []}
    log = TensorBoardLog(run_dir / "logs") if chief else None
    if resume and state["step"]:
        print(f"tfseg: resuming {run_dir} at step {state['step']}")
    elif chief and getattr(task, "perceptual", None) and task.perceptual.random_weights:
        log.write_text("warnings", "The perceptual loss uses a RANDOM VGG16 "
                       "(train.perceptual.weights: random): its features are not perceptual.")
    panel_inputs = None
    print(f"tfseg: training {model.name} ({model.count_params():,} parameters) on "
          f"{strategy.num_replicas_in_sync} replica(s); run directory {run_dir}")

    steps, total = config.train.steps_per_epoch, config.train.epochs * config.train.steps_per_epoch
    step = state["step"]
    batches = iter(strategy.experimental_distribute_dataset(data.train.skip(step)))
    # The first step traces the graph: the profile starts after it.
    profiler = StepProfiler(run_dir / "logs", first_step=step + 1 if profile else None,
                            steps=min(5, total - step - 1))
    with stop_requests() as stop:
        while step < total:
            epoch = step // steps
            print(f"Epoch {epoch + 1}/{config.train.epochs}")
            # A live bar on a terminal; one line per epoch in log files.
            progress = keras.utils.Progbar(steps, verbose=1 if sys.stdout.isatty() else 2,
                                           stateful_metrics=["loss", *task.progress_keys])
            epoch_started, epoch_first = time.perf_counter(), step
            while True:
                profiler.before(step)
                loss, statistics, finite = train_step(batches)
                step += 1
                state["step"] = step
                profiler.after(step)
                if not bool(finite):
                    if config.train.nan_policy == "stop":
                        raise NonFiniteLoss(_non_finite_message(float(loss), step, checkpoints))
                    state["skipped_batches"].append(step)
                else:
                    state["loss_sum"] += float(loss)
                    state["statistics"] = (np.asarray(state["statistics"])
                                           + statistics.numpy()).tolist()
                done = step - epoch * steps
                kept = max(done - _skipped_in(state, epoch * steps), 1)
                running = task.scores(state["statistics"])
                progress.update(done, [("loss", state["loss_sum"] / kept)] + [
                    (key, running[key]) for key in task.progress_keys if key in running])
                if done == steps:
                    break
                if stop.signal_number:
                    checkpoints.save(step, state)
                    raise Interrupted(_interrupted_message(stop.signal_number, step, run_dir),
                                      stop.signal_number)
                if config.train.checkpoint_every and step % config.train.checkpoint_every == 0:
                    checkpoints.save(step, state)
            seconds = time.perf_counter() - epoch_started
            kept = max(steps - _skipped_in(state, epoch * steps), 1)
            scores = {"train": {"loss": state["loss_sum"] / kept,
                                **task.scores(state["statistics"])},
                      "validation": validate()}
            history_row = {"epoch": epoch + 1, "step": step, "precision": precision.policy,
                           "images_per_second": round(
                               (step - epoch_first) * config.train.batch_size / seconds, 2),
                           **{f"{split}_{key}": value for split in ("train", "validation")
                              for key, value in scores[split].items()
                              if isinstance(value, float)}}
            state.update(loss_sum=0.0,
                         statistics=task.zero_statistics().tolist(),
                         history=state["history"] + [history_row])
            best_metric = task.best_metric   # the config allows only scores of the task
            improved = state["best"] is None or (
                scores["validation"][best_metric] > state["best"]["value"])
            if improved:
                state["best"] = {"metric": best_metric, "epoch": epoch + 1, "step": step,
                                 "value": scores["validation"][best_metric]}
                checkpoints.save_best(step, state)
            checkpoints.save(step, state)
            if chief:
                # Read after validate(): a first, partial read of a cached data set discards
                # the cache (with a tf.data warning) and renders those frames twice.
                if panel_inputs is None:
                    panel_inputs = task.panel_inputs(data.validation, config.train.log_images)
                log.write_epoch(step, scores=scores,
                                learning_rate=float(keras.ops.convert_to_numpy(
                                    optimizer.learning_rate)),
                                images_per_second=history_row["images_per_second"],
                                panels=task.panels(evaluation_model, *panel_inputs))
            print("  validation: " + _format_scores(scores["validation"]))
            if stop.signal_number:
                raise Interrupted(_interrupted_message(stop.signal_number, step, run_dir),
                                  stop.signal_number)

    model = evaluation_model
    if precision.policy != "float32":
        # Export and score the float32 copy that users will deploy.
        with strategy.scope():
            model = float32_copy(model, config)
        _, validate = build_validation(config, strategy, task, model, data.validation)
    validation_scores = validate()
    if not chief:
        return validation_scores
    final = {"split": "validation", **validation_scores, "epochs": config.train.epochs,
             "steps": step, "best": state["best"],
             "precision": {"policy": precision.policy, "reason": precision.reason},
             "train_seconds": round(time.perf_counter() - started, 1),
             "history": state["history"], "skipped_frames": data.skipped,
             "skipped_batches": state["skipped_batches"]}
    export.write_json(final, run_dir / "metrics.json")
    exports = export_run(model, config, run_dir, data.validation)
    final["total_seconds"] = round(time.perf_counter() - started, 1)
    export.write_json(final, run_dir / "metrics.json")
    _print_summary(run_dir, validation_scores, exports, final["total_seconds"])
    if data.skipped:
        print(f"  skipped        {len(data.skipped)} frame(s) unreadable or smaller than a "
              f"training patch, listed in {run_dir / 'metrics.json'}")
    return final


def _skipped_in(state, first_step):
    return sum(1 for step in state["skipped_batches"] if step > first_step)


def _non_finite_message(loss, step, checkpoints):
    latest = checkpoints.manager.latest_checkpoint
    kept = f"the last good checkpoint is {latest}" if latest else "no checkpoint was written"
    return (f"the loss or its gradients became NaN or Inf at step {step} (loss {loss}); the "
            f"run stopped and {kept}. Lower "
            f"train.learning_rate, or set train.nan_policy: skip_batch to skip such batches")


def _interrupted_message(signal_number, step, run_dir):
    return (f"{signal.Signals(signal_number).name} at step {step}: checkpoint written; "
            f"continue with python -m tfseg.train --resume {run_dir}")


class _StopRequests:
    signal_number = 0


@contextlib.contextmanager
def stop_requests():
    """Turns SIGINT and SIGTERM into a request the loop answers after the current step (it
    writes a checkpoint, then stops); the previous handlers come back afterwards."""
    requests = _StopRequests()

    def request(signal_number, frame):
        requests.signal_number = signal_number

    previous = {number: signal.signal(number, request)
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requests
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class StepProfiler:
    """Records a TensorBoard profiler trace of `steps` training steps after step
    `first_step` (None or steps < 1: no trace), into the run's logs for the Profile tab."""

    def __init__(self, log_dir, first_step, steps):
        self.log_dir, self.steps = str(log_dir), steps
        self.first_step = first_step if steps >= 1 else None

    def before(self, step):
        if step == self.first_step:
            tf.profiler.experimental.start(self.log_dir)

    def after(self, step):
        if self.first_step is not None and step == self.first_step + self.steps:
            tf.profiler.experimental.stop()
            print(f"  profiler trace of steps {self.first_step + 1}-{step} written to "
                  f"{self.log_dir} (TensorBoard's Profile tab)")


def random_states(task):
    """The augmentation's random-generator states (checkpointed, so a resumed run draws the
    augmentations the uninterrupted run would have drawn)."""
    augment = task.augment
    return list(augment.seed_states()) if hasattr(augment, "seed_states") else []


def build_training(config, strategy, task=None):
    """Model, optimizer and distributed train step for `config`, built in `strategy`'s scope.

    With several replicas, batch norm uses the global batch's statistics: Keras keeps one
    unsynchronised copy of the moving statistics per replica otherwise, and they drift apart.
    """
    with strategy.scope():
        task = task or make_task(config)
        with dtype_policy(precision_of(config.train).policy):
            model = build_model(config, training_input_shape(config), for_training=True)
        if strategy.num_replicas_in_sync > 1:
            for layer in models.all_layers(model):
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True
        optimizer = make_optimizer(config.train)
        # Slot variables created lazily inside a replica's tf.function fail under
        # MirroredStrategy: create them now.
        optimizer.build(model.trainable_variables)
    return model, optimizer, make_train_step(strategy, model, optimizer, task, config)


def training_input_shape(config):
    """(H, W) of the model as trained: the crop size, or the frame size (None); (None, None)
    for super-resolution."""
    if config.model.task == "super_resolution":
        return (None, None)   # fully convolutional: trained on patches, validated on images
    return config.data.augment.crop or None


def build_validation(config, strategy, task, model, validation):
    """The model validated and exported (whole frames, full-size output only) and a
    `validate() -> scores` over every validation batch."""
    evaluation_model = model
    if config.model.task == "segmentation" and (config.data.augment.crop
                                                 or uses_cascade(config)):
        with strategy.scope(), dtype_policy(precision_of(config.train).policy):
            evaluation_model = build_model(config)

    def sync():
        if evaluation_model is not model:
            copy_weights(model, evaluation_model)

    if config.model.task == "super_resolution":
        def validate():
            return task.evaluate(evaluation_model, validation)
    else:
        eval_step = make_eval_step(strategy, evaluation_model, task, config)
        batches = strategy.experimental_distribute_dataset(validation)

        def validate():
            sync()
            return evaluate(eval_step, batches, config.data.class_names)
    return evaluation_model, validate


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


def make_train_step(strategy, model, optimizer, task, config):
    """Distributed `train_step(iterator) -> (loss, statistics, finite)` tf.function.

    Each replica scales its loss by the global batch size, so the summed gradient is the
    global-batch mean; loss and statistics are summed across replicas. `finite` is False when
    the loss or a gradient is NaN or Inf on any replica (gradients too, because fused kernels
    may turn a NaN input into a finite loss): the loop then stops, or with `nan_policy:
    skip_batch` the update is skipped on every replica alike and training goes on. With
    `train.jit_compile` the forward and backward pass is compiled by XLA.
    """
    skip_non_finite = config.train.nan_policy == "skip_batch"

    def apply(gradients):
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return tf.constant(True)

    def forward_backward(inputs, targets):
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            loss = tf.nn.compute_average_loss(task.per_image_loss(targets, outputs),
                                              global_batch_size=config.train.batch_size)
            # mixed_float16's loss scaling, on the tape: scaled outside it, every gradient
            # came back None.
            scaled = optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, model.trainable_variables)
        return loss, gradients, task.step_statistics(targets, outputs)

    if config.train.jit_compile:
        forward_backward = tf.function(forward_backward, jit_compile=True)

    def replica_train_step(inputs, targets):
        inputs, targets = task.augment(inputs, targets)
        loss, gradients, statistics = forward_backward(inputs, targets)
        finite = tf.reduce_all([tf.math.is_finite(loss)] + [
            tf.reduce_all(tf.math.is_finite(g)) for g in gradients if g is not None])
        failures = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, 1 - tf.cast(finite, tf.int32))
        finite = tf.equal(failures, 0)
        if skip_non_finite:
            tf.cond(finite, lambda: apply(gradients), tf.no_op)
        else:   # the loop stops at this step, before any checkpoint holds its update
            apply(gradients)
        return loss, statistics, tf.cast(finite, tf.int32)

    @tf.function
    def train_step(iterator):
        loss, statistics, finite = _sum_replicas(
            strategy, strategy.run(replica_train_step, args=next(iterator)))
        return loss, statistics, tf.equal(finite, strategy.num_replicas_in_sync)

    return train_step


def make_eval_step(strategy, model, task, config):
    """Distributed `eval_step(batch) -> (loss sum, frame count, confusion matrix)`."""
    num_classes, ignore = config.model.num_classes, config.data.ignore_label

    def replica_eval_step(images, masks):
        logits = model(images, training=False)
        loss_sum = tf.reduce_sum(task.per_image_loss(masks, logits))
        return (loss_sum, tf.shape(images, out_type=tf.int64)[0],
                confusion_matrix(masks, tf.argmax(full_size(logits), -1), num_classes, ignore))

    @tf.function(jit_compile=config.train.jit_compile or None)
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
    with dtype_policy("float32"):
        copy = build_model(config, (None, None) if config.model.task == "super_resolution"
                           else None)
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
    """Writes the configured exports under `run_dir/export` and checks every runtime against
    Keras: the code of `python -m tfseg.export`, so both give identical exports."""
    exported = export.export_from_config(model, config, run_dir / "export", validation)
    # A training run exports one ONNX file, at its training size.
    onnx_paths = exported.pop("onnx")
    if onnx_paths:
        exported["onnx"] = onnx_paths[0]
    return exported


def _format_scores(scores):
    names = [("loss", "loss"), ("foreground_iou", "foreground IoU"), ("mean_iou", "mean IoU"),
             ("pixel_accuracy", "pixel accuracy"), ("psnr_y", "PSNR (Y)"),
             ("ssim_y", "SSIM (Y)"), ("bicubic_psnr_y", "bicubic PSNR (Y)")]
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
        lines.append(f"  parity         {runtime}: {export.describe(result)}")
    lines.append(f"  TensorBoard    tensorboard --logdir {run_dir / 'logs'}")
    print("\n".join(lines))
