"""Cross-entropy with an ignore label, averaged over each image's valid pixels."""

import numpy as np
import pytest
import tensorflow as tf

from tfseg.losses import per_image_cross_entropy, per_image_dice_loss


def reference_cross_entropy(labels, logits):
    log_probabilities = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -np.take_along_axis(log_probabilities, labels[..., None], -1)[..., 0]


def test_ignored_pixels_do_not_count():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (2, 4, 5))
    ignored = labels.copy()
    ignored[0, :2] = 255
    loss = per_image_cross_entropy(ignored, logits, 255).numpy()
    pixel = reference_cross_entropy(labels, logits)
    assert loss[0] == pytest.approx(pixel[0, 2:].mean(), rel=1e-5)
    assert loss[1] == pytest.approx(pixel[1].mean(), rel=1e-5)


def test_fully_ignored_image_contributes_zero():
    logits = tf.zeros((1, 3, 3, 2))
    assert per_image_cross_entropy(np.full((1, 3, 3), 255), logits, 255).numpy()[0] == 0.0


def test_half_precision_logits_are_reduced_in_float32():
    logits = tf.cast(tf.random.normal((1, 8, 8, 2)), tf.bfloat16)
    loss = per_image_cross_entropy(np.zeros((1, 8, 8), np.int32), logits, 255)
    assert loss.dtype == tf.float32


def test_class_weights_weight_each_pixel_by_its_true_class():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(1, 6, 6, 2)).astype(np.float32)
    labels = rng.integers(0, 2, (1, 6, 6))
    labels[0, 0, 0] = 255
    pixel = reference_cross_entropy(np.where(labels == 255, 0, labels), logits)[0]
    weights = np.where(labels[0] == 1, 4.0, 1.0) * (labels[0] != 255)
    expected = (pixel * weights).sum() / weights.sum()
    loss = per_image_cross_entropy(labels, logits, 255, class_weights=[1.0, 4.0]).numpy()
    assert loss[0] == pytest.approx(expected, rel=1e-5)


def test_dice_loss_is_zero_for_a_perfect_prediction_and_one_for_a_disjoint_one():
    labels = np.zeros((2, 8, 8), np.int32)
    labels[:, 2:5, 2:5] = 1
    confident = np.where(labels[..., None] == np.arange(2), 50.0, -50.0).astype(np.float32)
    wrong = confident[..., ::-1].copy()
    assert per_image_dice_loss(labels, confident, 255).numpy() == pytest.approx([0, 0], abs=1e-3)
    # No overlap: Dice = (0 + 1) / (55 + 9 + 1) with 55 wrongly predicted and 9 true pixels.
    assert per_image_dice_loss(labels, wrong, 255).numpy() == pytest.approx([1 - 1 / 65] * 2,
                                                                            abs=1e-4)


def test_dice_loss_leaves_out_ignored_pixels_and_handles_empty_images():
    labels = np.zeros((1, 8, 8), np.int32)
    logits = np.zeros((1, 8, 8, 2), np.float32)
    logits[..., 0] = 50.0                       # confidently background everywhere
    assert per_image_dice_loss(labels, logits, 255).numpy()[0] == pytest.approx(0, abs=1e-3)
    labels[0, :4] = 255
    logits[0, :4, :, 1] = 100.0                 # foreground only where labels are ignored
    assert per_image_dice_loss(labels, logits, 255).numpy()[0] == pytest.approx(0, abs=1e-3)
