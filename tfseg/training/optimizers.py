"""The optimizer of a `TrainConfig`: Adam, RMSprop or SGD with its learning-rate schedule,
per-variable learning-rate multipliers and mixed_float16's loss scaling; Adam's update runs in
TensorFlow's fused kernel."""

import re

import keras
import tensorflow as tf

from tfseg.training.distribution import precision_of


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
    optimizers = {"adam": FusedAdam, "rmsprop": keras.optimizers.RMSprop,
                  "sgd": keras.optimizers.SGD}
    optimizer_class = optimizers[train_config.optimizer]
    if train_config.lr_multipliers:
        optimizer_class = with_lr_multipliers(optimizer_class, train_config.lr_multipliers)
    optimizer = optimizer_class(**options)
    if precision_of(train_config).policy == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


class FusedAdam(keras.optimizers.Adam):
    """Keras's Adam whose per-variable update is TensorFlow's fused `ResourceApplyAdam`
    kernel: the same arithmetic (Kingma and Ba's bias-corrected step size, epsilon added to
    sqrt(v)) in one pass over a variable and its two moments, where Keras's update makes a
    dozen element-wise passes, each over the whole variable (with the step's two other
    changes, 8-15 % of LinkNet's training step: docs/benchmarks.md). Variables, slots,
    serialisation and everything else (weight decay, schedules, loss scaling) are Keras's.
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad:   # no fused kernel keeps the running maximum of v
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].handle,
            v=self._velocities[index].handle, beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step), lr=tf.cast(learning_rate, dtype), beta1=beta_1,
            beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype))


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
