"""Data-set-level scores from one confusion matrix."""

import keras
import numpy as np
import pytest

from tfseg.metrics import confusion_matrix, scores_from_confusion


def test_confusion_matrix_skips_ignored_pixels_and_counts_rows_as_truth():
    labels = np.array([[0, 1, 255], [1, 1, 0]])
    predictions = np.array([[0, 0, 1], [1, 1, 1]])
    matrix = confusion_matrix(labels, predictions, num_classes=2, ignore_label=255).numpy()
    np.testing.assert_array_equal(matrix, [[1, 1], [1, 2]])


def test_scores_by_hand():
    scores = scores_from_confusion([[1, 1], [1, 2]], ["background", "sample"])
    assert scores["per_class_iou"] == {"background": pytest.approx(1 / 3),
                                       "sample": pytest.approx(2 / 4)}
    assert scores["foreground_iou"] == pytest.approx(0.5)
    assert scores["mean_iou"] == pytest.approx((1 / 3 + 0.5) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(3 / 5)


def test_absent_classes_are_left_out_of_the_mean():
    scores = scores_from_confusion([[4, 0, 0], [0, 0, 0], [0, 0, 2]], ["a", "b", "c"])
    assert np.isnan(scores["per_class_iou"]["b"]) and scores["mean_iou"] == 1.0
    assert "foreground_iou" not in scores


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
