"""Segmentation scores computed once per data set from one streaming confusion matrix.

The confusion matrix is summed over batches (and replicas), so every score is the data-set-level
figure, not a mean of per-image scores.
"""

import numpy as np
import tensorflow as tf


def confusion_matrix(labels, predictions, num_classes, ignore_label):
    """(num_classes, num_classes) int64 counts, rows = ground truth, columns = prediction.

    Pixels whose label is `ignore_label` are left out.
    """
    labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
    predictions = tf.reshape(tf.cast(predictions, tf.int64), [-1])
    valid = tf.not_equal(labels, ignore_label)
    return tf.math.confusion_matrix(tf.boolean_mask(labels, valid),
                                    tf.boolean_mask(predictions, valid),
                                    num_classes=num_classes, dtype=tf.int64)


def scores_from_confusion(matrix, class_names):
    """Mean IoU over classes present in labels or predictions, per-class IoU, pixel accuracy,
    and (for two classes) the IoU of class 1 as `foreground_iou`."""
    matrix = np.asarray(matrix, np.float64)
    true_positive = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - true_positive
    present = union > 0
    iou = np.divide(true_positive, union, out=np.full_like(true_positive, np.nan), where=present)
    total = matrix.sum()
    scores = {
        "mean_iou": float(np.nanmean(iou)) if present.any() else float("nan"),
        "pixel_accuracy": float(true_positive.sum() / total) if total else float("nan"),
        "per_class_iou": {name: float(v) for name, v in zip(class_names, iou)},
    }
    if len(class_names) == 2:
        scores["foreground_iou"] = float(iou[1])
    return scores
