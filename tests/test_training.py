"""Pieces of the training loop: optimizer, schedules, loss choice, class weighting."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfseg.config import (
    AugmentConfig,
    Config,
    DataConfig,
    ModelConfig,
    SuperResolutionDataConfig,
    TrainConfig,
)
from tfseg.models.from_config import build_model, copy_weights
from tfseg.tasks.factory import make_task
from tfseg.tasks.losses import per_image_asymmetric_loss, per_image_cross_entropy
from tfseg.training.loop import with_computed_class_weights
from tfseg.training.optimizers import FusedAdam, make_optimizer
from tfseg.training.steps import build_training


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


def adam_trajectory(optimizer_class, steps=5, **options):
    """Variables after `steps` updates of a fixed pseudo-random gradient sequence."""
    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.normal(size=shape).astype(np.float32))
                 for shape in ((3, 3, 4, 8), (8,))]
    optimizer = optimizer_class(**options)
    gradients = [[rng.normal(size=v.shape).astype(np.float32) for v in variables]
                 for _ in range(steps)]
    apply = tf.function(lambda g: optimizer.apply_gradients(zip(g, variables)))
    for step_gradients in gradients:
        apply(step_gradients)
    graph = apply.get_concrete_function(gradients[0]).graph
    return [v.numpy() for v in variables], {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("options", [
    {"learning_rate": 1e-2},
    {"learning_rate": keras.optimizers.schedules.CosineDecay(0.0, 10, warmup_target=1e-2,
                                                             warmup_steps=2),
     "weight_decay": 1e-2, "epsilon": 1e-3},
])
def test_fused_adam_takes_keras_adams_steps(options):
    fused, fused_ops = adam_trajectory(FusedAdam, **options)
    reference, reference_ops = adam_trajectory(keras.optimizers.Adam, **options)
    for ours, theirs in zip(fused, reference):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert "ResourceApplyAdam" in fused_ops and "ResourceApplyAdam" not in reference_ops


def test_fused_adam_keeps_amsgrad_as_keras_computes_it():
    fused, _ = adam_trajectory(FusedAdam, learning_rate=1e-2, amsgrad=True)
    reference, _ = adam_trajectory(keras.optimizers.Adam, learning_rate=1e-2, amsgrad=True)
    for ours, theirs in zip(fused, reference):
        np.testing.assert_array_equal(ours, theirs)


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
    loss, matrix, finite = train_step(iter([batch]))
    assert int(np.sum(matrix)) == 2 * 24 * 32 and np.isfinite(float(loss)) and bool(finite)


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
    np.testing.assert_allclose(make_task(asymmetric).per_image_loss(masks, logits),
                               per_image_asymmetric_loss(masks, logits, 255))
    np.testing.assert_allclose(make_task(Config()).per_image_loss(masks, logits),
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


@pytest.mark.slow  # over 10 s: the fast tier stays under 3 minutes
def test_icnet_trains_on_its_cascade_and_hands_weights_to_the_inference_model():
    config = Config(model=ModelConfig(name="icnet", options={"width": 0.5}),
                    data=DataConfig(height=64, width=64, augment=AugmentConfig(flip="none")),
                    train=TrainConfig(batch_size=2))
    model, _, train_step = build_training(config, tf.distribute.get_strategy())
    assert set(model.output) == {"logits", "logits_4", "logits_8", "logits_16"}
    rng = np.random.default_rng(0)
    batch = (rng.uniform(0, 255, (2, 64, 64, 1)).astype(np.float32),
             rng.integers(0, 2, (2, 64, 64)).astype(np.uint8))
    loss, matrix, _ = train_step(iter([batch]))
    assert np.isfinite(float(loss)) and int(np.sum(matrix)) == 2 * 64 * 64
    inference = build_model(config)
    copy_weights(model, inference)
    np.testing.assert_allclose(inference(batch[0], training=False),
                               model(batch[0], training=False)["logits"], atol=1e-5)


def small_config(**train):
    return Config(model=ModelConfig(name="fcn_resnet18"),
                  data=DataConfig(height=32, width=32, augment=AugmentConfig(flip="none")),
                  train=TrainConfig(batch_size=2, lr_schedule="constant", **train))


def one_step_updates(config, images=None):
    """{variable path: update} of one training step of `config` on a fixed batch."""
    keras.utils.set_random_seed(0)
    model, _, train_step = build_training(config, tf.distribute.get_strategy())
    rng = np.random.default_rng(0)
    if images is None:
        images = rng.uniform(0, 255, (2, 32, 32, 1)).astype(np.float32)
    batch = (images, rng.integers(0, 2, (2, 32, 32)).astype(np.uint8))
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    loss, _, finite = train_step(iter([batch]))
    updates = {v.path: v.numpy() - before[v.path] for v in model.trainable_variables}
    return updates, float(loss), bool(finite)


@pytest.mark.slow  # over 5 s: the fast tier keeps its 3-minute budget
def test_lr_multipliers_scale_the_adam_step_of_matching_variables_only():
    plain, _, _ = one_step_updates(small_config(learning_rate=1e-3))
    scaled, _, _ = one_step_updates(small_config(learning_rate=1e-3,
                                                 lr_multipliers={"^fcn_resnet18_(?!backbone)": 10.0}))
    matched = [path for path in plain if "backbone" not in path]
    assert matched and len(matched) < len(plain)
    for path, update in plain.items():
        factor = 10.0 if path in matched else 1.0
        np.testing.assert_allclose(scaled[path], factor * update, rtol=1e-4, atol=1e-9,
                                   err_msg=path)


@pytest.mark.slow  # over 5 s: the fast tier keeps its 3-minute budget
def test_jit_compiled_step_matches_the_plain_step():
    # Plain SGD: the update is the gradient (Adam's first step is its sign, which flips for
    # gradients that round differently near zero). XLA fuses and orders sums differently, so
    # each variable's update must agree to 5 % in norm, not bit for bit.
    sgd = {"optimizer": "sgd", "momentum": 0.0, "learning_rate": 1.0}
    plain, plain_loss, _ = one_step_updates(small_config(**sgd))
    compiled, compiled_loss, _ = one_step_updates(small_config(jit_compile=True, **sgd))
    assert compiled_loss == pytest.approx(plain_loss, rel=1e-4)
    for path, update in plain.items():
        error = np.linalg.norm(compiled[path] - update)
        assert error <= 0.05 * np.linalg.norm(update) + 1e-9, path


@pytest.mark.slow  # over 10 s: the fast tier stays under 3 minutes
def test_float16_step_scales_the_loss_and_updates_like_float32():
    # Plain SGD: the update is the (unscaled) gradient. Half precision through 18 layers of
    # batch norm over 2 frames moves it by about 13 % in norm here (bfloat16: 35 %); a loss
    # scale left in, or gradients lost, would be far off.
    sgd = {"optimizer": "sgd", "momentum": 0.0, "learning_rate": 1.0}
    plain, plain_loss, _ = one_step_updates(small_config(**sgd))
    half, half_loss, finite = one_step_updates(small_config(mixed_precision="mixed_float16",
                                                            **sgd))
    assert finite and half_loss == pytest.approx(plain_loss, rel=1e-2)
    plain_all, half_all = (np.concatenate([updates[path].ravel() for path in plain])
                           for updates in (plain, half))
    assert np.linalg.norm(half_all - plain_all) <= 0.2 * np.linalg.norm(plain_all)


def test_a_non_finite_step_is_flagged_and_skipped():
    # NaN frames: depending on the kernels (a fused ReLU may turn NaN into 0) the loss or only
    # the gradients are non-finite; either way the step is flagged, and skip_batch leaves the
    # weights untouched (test_loop.py: the loop stops, or skips and counts, on the flag).
    images = np.full((2, 32, 32, 1), np.nan, np.float32)
    updates, _, finite = one_step_updates(small_config(nan_policy="skip_batch"), images)
    assert not finite
    assert all(not np.any(update) for update in updates.values())


def test_super_resolution_step_trains_on_patches_and_counts_psnr():
    config = Config(model=ModelConfig(name="sr_johnson", scale=4, input_channels=3),
                    data=DataConfig(source="super_resolution", height=8, width=8,
                                    mean=[127.5] * 3, std=[127.5] * 3,
                                    super_resolution=SuperResolutionDataConfig(
                                        train=["x"], validation=["y"])),
                    train=TrainConfig(batch_size=2, loss="pixel"))
    model, _, train_step = build_training(config, tf.distribute.get_strategy())
    assert model.input_shape == (None, None, None, 3)
    rng = np.random.default_rng(0)
    batch = (rng.uniform(0, 255, (2, 8, 8, 3)).astype(np.float32),
             rng.uniform(0, 255, (2, 32, 32, 3)).astype(np.float32))
    loss, statistics, finite = train_step(iter([batch]))
    assert bool(finite) and float(loss) > 0
    psnr_sum, count = statistics.numpy()
    assert count == 2 and 0 < psnr_sum / count < 30
