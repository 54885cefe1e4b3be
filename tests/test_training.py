"""Pieces of the training loop: optimizer, schedules, loss choice, class weighting."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfseg.config import AugmentConfig, Config, DataConfig, ModelConfig, TrainConfig
from tfseg.losses import per_image_asymmetric_loss, per_image_cross_entropy
from tfseg.training import (
    build_model,
    build_training,
    copy_weights,
    make_optimizer,
    per_image_loss,
    with_computed_class_weights,
)


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


def test_poly_schedule_decays_with_power_to_zero():
    optimizer = make_optimizer(TrainConfig(epochs=1, steps_per_epoch=100, learning_rate=1e-2,
                                           lr_schedule="poly", poly_power=0.9))
    for step, expected in ((0, 1e-2), (50, 1e-2 * 0.5**0.9), (100, 0.0)):
        optimizer.iterations.assign(step)
        assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(
            expected, abs=1e-9)


def test_sgd_momentum_and_weight_decay_reach_the_optimizer():
    optimizer = make_optimizer(TrainConfig(optimizer="sgd", momentum=0.8, weight_decay=1e-4))
    assert optimizer.momentum == 0.8 and optimizer.weight_decay == pytest.approx(1e-4)


def test_loss_choice_selects_the_asymmetric_loss():
    rng = np.random.default_rng(0)
    masks = tf.constant(rng.integers(0, 2, (2, 8, 8)), tf.uint8)
    logits = tf.constant(rng.normal(size=(2, 8, 8, 2)), tf.float32)
    asymmetric = Config(train=TrainConfig(loss="asymmetric"))
    np.testing.assert_allclose(per_image_loss(masks, logits, asymmetric),
                               per_image_asymmetric_loss(masks, logits, 255))
    np.testing.assert_allclose(per_image_loss(masks, logits, Config()),
                               per_image_cross_entropy(masks, logits, 255))


def test_linknet_class_weighting_is_computed_from_training_masks():
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[:, :1] = 1                                  # class 1: a quarter of the pixels
    batches = tf.data.Dataset.from_tensors((np.zeros((2, 4, 4, 1), np.float32), masks))
    config = Config(train=TrainConfig(class_weighting="linknet_ln", steps_per_epoch=1))
    weights = with_computed_class_weights(config, batches.repeat()).train
    assert weights.class_weighting == "none"
    np.testing.assert_allclose(weights.class_weights,
                               [1 / np.log(1.02 + 0.75), 1 / np.log(1.02 + 0.25)], rtol=1e-5)


def test_icnet_trains_on_its_cascade_and_hands_weights_to_the_inference_model():
    config = Config(model=ModelConfig(name="icnet", options={"width": 0.5}),
                    data=DataConfig(height=64, width=64, augment=AugmentConfig(flip="none")),
                    train=TrainConfig(batch_size=2))
    model, _, train_step = build_training(config, tf.distribute.get_strategy())
    assert set(model.output) == {"logits", "logits_4", "logits_8", "logits_16"}
    rng = np.random.default_rng(0)
    batch = (rng.uniform(0, 255, (2, 64, 64, 1)).astype(np.float32),
             rng.integers(0, 2, (2, 64, 64)).astype(np.uint8))
    loss, matrix = train_step(iter([batch]))
    assert np.isfinite(float(loss)) and int(np.sum(matrix)) == 2 * 64 * 64
    inference = build_model(config)
    copy_weights(model, inference)
    np.testing.assert_allclose(inference(batch[0], training=False),
                               model(batch[0], training=False)["logits"], atol=1e-5)
