"""The distributed training step, the validation of each epoch, and the models and optimizer
they run.

Each replica scales its loss by the global batch size and statistics are summed across
replicas, so one device, several devices and several hosts compute the same step.
"""

import keras
import tensorflow as tf

from tfseg.deploy.runtimes import from_keras
from tfseg.models import all_layers
from tfseg.models.from_config import (
    build_model,
    copy_weights,
    dtype_policy,
    is_recurrent,
    training_input_shape,
    uses_cascade,
)
from tfseg.tasks.factory import make_task
from tfseg.tasks.validation import validate
from tfseg.training.distribution import precision_of
from tfseg.training.optimizers import make_optimizer
from tfseg.training.recurrent import sequence_predictor, trained_frames


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
            for layer in all_layers(model):
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True
        optimizer = make_optimizer(config.train)
        # Slot variables created lazily inside a replica's tf.function fail under
        # MirroredStrategy: create them now.
        optimizer.build(model.trainable_variables)
    return model, optimizer, make_train_step(strategy, model, optimizer, task, config)


def build_validation(config, strategy, task, model, validation):
    """The model validated and exported (whole frames, full-size output only) and a
    `validate(samples=0) -> scores` over every validation batch: `tfseg.tasks.validation`'s,
    which `python -m tfseg.evaluate` runs too, on the Keras runtime `tfseg.evaluate` uses.

    A recurrent model is validated and exported as its step model, which holds the trained
    clip model's weights: each held-out sequence runs through it frame by frame, in order,
    the state starting at zeros (`tfseg.training.recurrent.sequence_predictor`), and every
    frame is scored, the first ones too (a user's sequence starts cold as well).

    Validation runs on one device of `strategy` (every worker of a cluster scores the whole
    split alike): whole images of different sizes do not split across replicas.
    """
    evaluation_model = model
    if config.model.task == "segmentation" and (config.data.augment.crop
                                                 or uses_cascade(config)
                                                 or is_recurrent(config)):
        # In `model`'s own policy: the float32 copy made for export is scored in float32.
        with strategy.scope(), dtype_policy(model.dtype_policy.name):
            evaluation_model = build_model(config)
    if is_recurrent(config):
        runtime = sequence_predictor(evaluation_model, jit_compile=config.train.jit_compile)
    else:
        runtime = from_keras(evaluation_model, jit_compile=config.train.jit_compile,
                             frozen=False)   # the weights change from epoch to epoch

    def validate_epoch(samples=0):
        if evaluation_model is not model:
            copy_weights(model, evaluation_model)
        return validate(task, runtime, validation, samples=samples)
    return evaluation_model, validate_epoch


def make_train_step(strategy, model, optimizer, task, config):
    """Distributed `train_step(iterator) -> (loss, statistics, finite)` tf.function.

    Each replica scales its loss by the global batch size, so the summed gradient is the
    global-batch mean; loss and statistics are summed across replicas. `finite` is False when
    the loss or a gradient is NaN or Inf on any replica (gradients too, because fused kernels
    may turn a NaN input into a finite loss): the loop then stops, or with `nan_policy:
    skip_batch` the step is undone on every replica alike and training goes on: no update,
    and the moving statistics the forward pass changed (batch norm's) are put back. With
    `train.jit_compile` the forward and backward pass is compiled by XLA.

    A recurrent model trains on clips: the loss and statistics are those of the batch of
    its trained frames (`tfseg.training.recurrent.trained_frames`), the loss a mean per frame.
    """
    skip_non_finite = config.train.nan_policy == "skip_batch"
    clips = config.data.clips if is_recurrent(config) else None
    global_batch_size = config.train.batch_size * (clips.length - clips.warmup if clips else 1)

    def apply(gradients):
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))

    def put_back(values):
        for variable, value in zip(model.non_trainable_variables, values):
            variable.assign(value)

    def forward_backward(inputs, targets):
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            if clips:
                targets, outputs = trained_frames(targets, outputs, clips.warmup)
            loss = tf.nn.compute_average_loss(task.per_image_loss(targets, outputs),
                                              global_batch_size=global_batch_size)
            # mixed_float16's loss scaling, on the tape: scaled outside it, every gradient
            # came back None.
            scaled = optimizer.scale_loss(loss)
        return loss, tape.gradient(scaled, model.trainable_variables), targets, outputs

    if config.train.jit_compile:
        forward_backward = tf.function(forward_backward, jit_compile=True)

    def replica_forward(inputs, targets):
        inputs, targets = task.augment(inputs, targets)
        # Read before the forward pass updates them (tf.function orders the reads first).
        before = ([tf.identity(variable.value) for variable in model.non_trainable_variables]
                  if skip_non_finite else [])
        loss, gradients, targets, outputs = forward_backward(inputs, targets)
        # Outside XLA (with jit_compile): the confusion matrix's bincount has no XLA kernel.
        statistics = task.step_statistics(targets, outputs)
        finite = tf.reduce_all([tf.math.is_finite(loss)] + [
            tf.reduce_all(tf.math.is_finite(g)) for g in gradients if g is not None])
        return (loss, statistics, tf.cast(finite, tf.int32)), gradients, before

    @tf.function
    def train_step(iterator):
        sums, gradients, before = strategy.run(replica_forward, args=next(iterator))
        loss, statistics, finite = _sum_replicas(strategy, sums)
        finite = tf.equal(finite, strategy.num_replicas_in_sync)
        if skip_non_finite:
            # Decided here, outside the replicas: a condition inside one cannot hold
            # apply_gradients' all-reduce (it fails to trace with several replicas).
            tf.cond(finite, lambda: strategy.run(apply, args=(gradients,)),
                    lambda: strategy.run(put_back, args=(before,)))
        else:   # the loop stops at this step, before any checkpoint holds its update
            strategy.run(apply, args=(gradients,))
        return loss, statistics, finite

    return train_step


def _sum_replicas(strategy, values):
    return [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in values]
