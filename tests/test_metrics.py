"""Segmentation scores from one confusion matrix, iIoU, the seed's metric and SR scores."""

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfseg.data.super_resolution import evaluation_pairs
from tfseg.tasks.metrics import (
    InstanceIoU,
    bicubic_baseline,
    confusion_matrix,
    psnr_y,
    rgb_to_y,
    scores_from_confusion,
    seed_per_image_foreground_iou,
    ssim_y,
)

SET5 = Path(__file__).parents[1].parent / "shared" / "data" / "sr" / "set5"


def test_confusion_matrix_skips_ignored_pixels_and_counts_rows_as_truth():
    labels = np.array([[0, 1, 255], [1, 1, 0]])
    predictions = np.array([[0, 0, 1], [1, 1, 1]])
    matrix = confusion_matrix(labels, predictions, num_classes=2, ignore_label=255).numpy()
    np.testing.assert_array_equal(matrix, [[1, 1], [1, 2]])


def test_confusion_matrix_counts_as_tensorflows_with_ignored_pixels_left_out():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 12, (2, 30, 40)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.2] = 255
    predictions = rng.integers(0, 12, labels.shape)
    valid = labels != 255
    expected = tf.math.confusion_matrix(labels[valid], predictions[valid], num_classes=12)
    matrix = confusion_matrix(labels, predictions, 12, 255)
    assert matrix.dtype == tf.int64
    np.testing.assert_array_equal(matrix, expected)


def test_a_label_outside_the_classes_is_an_error_not_a_dropped_pixel():
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside 0..1 that is not 255"):
        confusion_matrix(np.array([[0, 2]]), np.array([[0, 1]]), 2, 255)


def test_scores_by_hand():
    scores = scores_from_confusion([[1, 1], [1, 2]], ["background", "sample"])
    assert scores["per_class_iou"] == {"background": pytest.approx(1 / 3),
                                       "sample": pytest.approx(2 / 4)}
    assert scores["foreground_iou"] == pytest.approx(0.5)
    assert scores["mean_iou"] == pytest.approx((1 / 3 + 0.5) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(3 / 5)
    assert scores["mean_class_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert scores["frequency_weighted_iou"] == pytest.approx((2 * 1 / 3 + 3 * 2 / 4) / 5)


def test_absent_classes_are_left_out_of_the_mean():
    scores = scores_from_confusion([[4, 0, 0], [0, 0, 0], [0, 0, 2]], ["a", "b", "c"])
    assert np.isnan(scores["per_class_iou"]["b"]) and scores["mean_iou"] == 1.0
    assert scores["mean_class_accuracy"] == 1.0 and scores["frequency_weighted_iou"] == 1.0
    assert "foreground_iou" not in scores


def test_class_only_predicted_counts_in_mean_iou_but_not_in_class_accuracy():
    scores = scores_from_confusion([[2, 1], [0, 0]], ["a", "b"])
    assert scores["mean_iou"] == pytest.approx((2 / 3 + 0) / 2)
    assert scores["mean_class_accuracy"] == pytest.approx(2 / 3)
    assert scores["frequency_weighted_iou"] == pytest.approx(2 / 3)


def test_empty_matrix_gives_nan():
    scores = scores_from_confusion(np.zeros((2, 2)), ["a", "b"])
    assert all(np.isnan(scores[key]) for key in (
        "mean_iou", "pixel_accuracy", "mean_class_accuracy", "frequency_weighted_iou"))


def test_mean_iou_matches_keras_over_a_streamed_data_set():
    rng = np.random.default_rng(0)
    keras_metric = keras.metrics.MeanIoU(num_classes=4, ignore_class=255)
    matrix = np.zeros((4, 4), np.int64)
    for _ in range(5):
        labels = rng.integers(0, 4, (2, 16, 16))
        labels[rng.random(labels.shape) < 0.1] = 255
        predictions = rng.integers(0, 4, (2, 16, 16))
        keras_metric.update_state(labels, predictions)
        matrix += confusion_matrix(labels, predictions, 4, 255).numpy()
    assert scores_from_confusion(matrix, list("abcd"))["mean_iou"] == pytest.approx(
        float(keras_metric.result()), abs=1e-6)


# One row: a 4-pixel object found, a 1-pixel object missed, one false positive, one ignored
# pixel predicted as the object class (not a false positive). Plain IoU 4 / 6.
ROW_LABELS = np.array([[1, 1, 1, 1, 0, 1, 0, 255]])
ROW_PREDICTIONS = np.array([[1, 1, 1, 1, 0, 0, 1, 1]])


@pytest.mark.parametrize("average_sizes, expected", [
    (None, 2.5 / (2.5 + 1 + 2.5)),  # mean size (4 + 1) / 2: wTP = 2.5 * 4/4, wFN = 2.5 * 1/1
    ({1: 4}, 4 / (4 + 1 + 4)),
])
def test_instance_iou_weights_instances_by_average_over_own_size(average_sizes, expected):
    metric = InstanceIoU(["background", "object"], target_class_ids=[1],
                         average_sizes=average_sizes)
    metric.update(ROW_LABELS, ROW_PREDICTIONS)
    assert metric.result() == {"mean_iiou": pytest.approx(expected),
                               "per_class_iiou": {"object": pytest.approx(expected)}}


def test_instance_iou_uses_instance_maps_over_eight_connected_components():
    labels = np.array([[1, 1, 0], [0, 0, 1]])  # one 8-connected component of 3 pixels
    predictions = np.array([[1, 1, 0], [0, 0, 0]])
    components = InstanceIoU(["background", "object"], target_class_ids=[1])
    components.update(labels, predictions)
    assert components.result()["mean_iiou"] == pytest.approx(2 / 3)
    instances = InstanceIoU(["background", "object"], target_class_ids=[1])
    instances.update(labels, predictions, instances=np.array([[1, 1, 0], [0, 0, 2]]))
    # Sizes 2 and 1, mean 1.5: wTP = 1.5 * 2/2, wFN = 1.5 * 1/1.
    assert instances.result()["mean_iiou"] == pytest.approx(0.5)


def test_instance_iou_streams_and_leaves_classes_without_instances_out():
    batched = InstanceIoU(["background", "object", "other"], target_class_ids=[1, 2])
    batched.update(np.stack([ROW_LABELS, ROW_LABELS[:, ::-1]]),
                   np.stack([ROW_PREDICTIONS, ROW_PREDICTIONS[:, ::-1]]))
    streamed = InstanceIoU(["background", "object", "other"], target_class_ids=[1, 2])
    streamed.update(ROW_LABELS, ROW_PREDICTIONS)
    streamed.update(ROW_LABELS[:, ::-1], ROW_PREDICTIONS[:, ::-1])
    result = streamed.result()
    assert np.isnan(result["per_class_iiou"]["other"])
    # Four instances, mean size 2.5; wTP = 2.5 * 2, FP = 2, wFN = 2.5 * 2.
    assert result["mean_iiou"] == pytest.approx(5 / 12)
    assert batched.result()["mean_iiou"] == pytest.approx(result["mean_iiou"])


def test_instance_iou_matches_plain_iou_when_instances_have_equal_sizes():
    labels = np.array([[1, 1, 0, 2, 2], [0, 0, 0, 0, 0], [2, 2, 0, 1, 1]])
    predictions = np.array([[1, 0, 0, 2, 2], [0, 1, 0, 0, 0], [2, 2, 0, 2, 1]])
    metric = InstanceIoU(["background", "a", "b"])
    metric.update(labels, predictions)
    plain = scores_from_confusion(confusion_matrix(labels, predictions, 3, 255), list("xab"))
    for name in "ab":
        assert metric.result()["per_class_iiou"][name] == pytest.approx(
            plain["per_class_iou"][name])


@pytest.mark.parametrize("kwargs, call, message", [
    ({"target_class_ids": [2]}, None, "target_class_ids"),
    ({"target_class_ids": [1], "average_sizes": {0: 3}}, None, "average_sizes"),
    ({}, (np.zeros((2, 2)), np.zeros((2, 3))), "predictions.shape"),
    ({}, (np.zeros((2, 2)), np.full((2, 2), 2)), "predictions must be class ids"),
    ({}, (np.full((2, 2), 7), np.zeros((2, 2))), "labels must be class ids"),
])
def test_instance_iou_rejects_bad_arguments(kwargs, call, message):
    with pytest.raises(ValueError, match=message):
        InstanceIoU(["background", "object"], **kwargs).update(*call)


def test_seed_metric_ignores_false_positives_and_skips_images_without_foreground():
    labels = np.array([[[1, 1], [0, 0]], [[1, 1], [0, 255]], [[0, 0], [0, 255]]])
    predictions = np.array([[[1, 1], [1, 1]], [[1, 0], [0, 1]], [[1, 0], [0, 0]]])
    np.testing.assert_array_equal(seed_per_image_foreground_iou(labels, predictions),
                                  [1.0, 0.5, np.nan])
    assert seed_per_image_foreground_iou(labels[0], predictions[0]).shape == (1,)
    with pytest.raises(ValueError, match="predictions.shape"):
        seed_per_image_foreground_iou(labels, predictions[0])


def test_rgb_to_y_is_matlab_rgb2ycbcr():
    np.testing.assert_array_equal(rgb_to_y([[0, 0, 0], [255, 255, 255], [255, 0, 0]]),
                                  [16, 235, 81])  # 16 + 65.481 = 81.481


def test_psnr_of_known_error_and_of_identical_images():
    hr = np.zeros((2, 12, 12, 3))
    sr = hr.copy()
    sr[1, 2:10:2, 2:6] = 255  # Y 235 against 16 on 16 of the 8 x 8 pixels left by shave 2
    sr[1, 0] = 255  # in the shaved border
    expected = 10 * np.log10(255 ** 2 / (16 / 64 * 219 ** 2))
    np.testing.assert_allclose(psnr_y(sr, hr, shave=2), [np.inf, expected])
    assert psnr_y(sr[1], hr[1], shave=2).shape == ()


def _reference_ssim(x, y):
    """Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), 'valid', L = 255."""
    taps = np.exp(-0.5 * (np.arange(-5, 6) / 1.5) ** 2)
    window = np.outer(taps, taps) / taps.sum() ** 2

    def filtered(image):
        return np.einsum("ijkl,kl->ij", np.lib.stride_tricks.sliding_window_view(image, (11, 11)),
                         window)

    mean_x, mean_y = filtered(x), filtered(y)
    var_x = filtered(x * x) - mean_x ** 2
    var_y = filtered(y * y) - mean_y ** 2
    covariance = filtered(x * y) - mean_x * mean_y
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return np.mean((2 * mean_x * mean_y + c1) * (2 * covariance + c2)
                   / ((mean_x ** 2 + mean_y ** 2 + c1) * (var_x + var_y + c2)))


def test_ssim_matches_a_numpy_reference_and_is_one_for_identical_images():
    rng = np.random.default_rng(0)
    hr = rng.uniform(0, 255, (24, 20, 3))
    sr = np.clip(hr + rng.normal(0, 60, hr.shape), 0, 255)

    def y(image):
        return np.round(16 + image @ np.array([65.481, 128.553, 24.966]) / 255)

    expected = _reference_ssim(y(sr)[3:-3, 3:-3], y(hr)[3:-3, 3:-3])
    assert 0.1 < expected < 0.9
    assert float(ssim_y(sr, hr, shave=3)) == pytest.approx(expected, abs=1e-5)
    assert float(ssim_y(hr, hr, shave=3)) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least 11 pixels"):
        ssim_y(sr, hr, shave=5)


@pytest.mark.parametrize("function", [psnr_y, ssim_y])
@pytest.mark.parametrize("shave", [-1, 1.5, 10])
def test_sr_scores_reject_bad_shave(function, shave):
    with pytest.raises(ValueError, match="shave"):
        function(np.zeros((20, 20, 3)), np.zeros((20, 20, 3)), shave=shave)


def test_bicubic_baseline_rejects_bad_scale():
    with pytest.raises(ValueError, match="scale"):
        bicubic_baseline(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), 1)


@pytest.mark.skipif(not SET5.is_dir(), reason=f"Set5 not found at {SET5} (shared data absent)")
def test_bicubic_baseline_reproduces_published_set5_x4():
    scores = [bicubic_baseline(lr, hr, 4) for lr, hr in evaluation_pairs(SET5, factor=4)]
    psnr = np.concatenate([s["psnr_y"] for s in scores])
    ssim = np.concatenate([s["ssim_y"] for s in scores])
    # Published figures are rounded to 0.01 dB / 0.0001, and tf's antialiased bicubic downscale
    # differs slightly from MATLAB imresize (8-bit LR rounding): allow 0.02 dB and 0.001.
    assert psnr[0] == pytest.approx(31.78, abs=0.02)  # baby
    assert psnr[2] == pytest.approx(22.10, abs=0.02)  # butterfly
    assert psnr.mean() == pytest.approx(28.42, abs=0.02)
    assert ssim.mean() == pytest.approx(0.8104, abs=0.001)
