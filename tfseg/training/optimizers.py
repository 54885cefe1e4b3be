"""The optimizer of a `TrainConfig`: Adam, RMSprop or SGD with its learning-rate schedule,
per-variable learning-rate multipliers and mixed_float16's loss scaling."""

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
