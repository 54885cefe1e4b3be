"""Pieces of the training loop that need no data: optimizer choice and learning-rate schedule."""

import keras
import pytest

from tfseg.config import TrainConfig
from tfseg.training import make_optimizer


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
