"""Pieces of the training loop that need no data: optimizer choice and learning-rate schedule."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfseg.config import AugmentConfig, Config, DataConfig, ModelConfig, TrainConfig
from tfseg.training import build_training, make_optimizer


def test_cosine_schedule_with_warmup_rises_then_decays_to_zero():
    config = TrainConfig(epochs=2, steps_per_epoch=50, learning_rate=2e-3, warmup_steps=10)
    optimizer = make_optimizer(config)
    rates = []
    for step in (0, 5, 10, 55, 100):
        optimizer.iterations.assign(step)
        rates.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
    assert rates[0] == 0.0 and rates[1] == pytest.approx(1e-3)
    assert rates[2] == pytest.approx(2e-3) and 0 < rates[3] < 2e-3 and rates[4] == 0.0


@pytest.mark.parametrize("name,expected", [("adam", keras.optimizers.Adam),
                                           ("rmsprop", keras.optimizers.RMSprop),
                                           ("sgd", keras.optimizers.SGD)])
def test_optimizer_choice(name, expected):
    assert isinstance(make_optimizer(TrainConfig(optimizer=name)), expected)


def test_float16_wraps_the_optimizer_in_loss_scaling():
    optimizer = make_optimizer(TrainConfig(mixed_precision="mixed_float16"))
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)


def test_random_crops_train_a_network_of_the_crop_size():
    config = Config(model=ModelConfig(name="fcn_resnet18"),
                    data=DataConfig(height=40, width=56,
                                    augment=AugmentConfig(crop=[24, 32], flip="none")),
                    train=TrainConfig(batch_size=2))
    model, _, train_step = build_training(config, tf.distribute.get_strategy())
    assert model.input_shape == (None, 24, 32, 1)
    batch = (np.zeros((2, 40, 56, 1), np.float32), np.ones((2, 40, 56), np.uint8))
    loss, matrix = train_step(iter([batch]))
    assert int(np.sum(matrix)) == 2 * 24 * 32 and np.isfinite(float(loss))
