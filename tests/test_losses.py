"""Cross-entropy with an ignore label, averaged over each image's valid pixels."""

import numpy as np
import pytest
import tensorflow as tf

from tfseg.losses import per_image_cross_entropy


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
