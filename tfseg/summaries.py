"""TensorBoard output: per-epoch scalars for training and validation, and prediction panels
(input | ground truth | prediction, side by side)."""

from pathlib import Path

import numpy as np

IGNORE_COLOUR = (255, 255, 255)


def palette(num_classes):
    """A fixed RGB colour per class id (class 0 black), distinct for small class counts."""
    rng = np.random.default_rng(0)
    colours = rng.integers(64, 256, size=(max(num_classes, 1), 3), dtype=np.uint8)
    colours[0] = 0
    if num_classes == 2:
        colours[1] = (255, 64, 64)
    return colours


def colourize(labels, num_classes, ignore_label):
    """uint8 (..., 3) image of class ids; ignored pixels white."""
    labels = np.asarray(labels)
    colours = palette(num_classes)
    rgb = colours[np.clip(labels, 0, num_classes - 1)]
    rgb[labels == ignore_label] = IGNORE_COLOUR
    return rgb


def segmentation_panels(images, masks, predictions, *, num_classes, ignore_label):
    """uint8 (N, H, 3W, 3) panels: input (min-max scaled per image) | ground truth | prediction.

    Args:
        images: (N, H, W, C) input pixels, C = 1 or 3.
        masks: (N, H, W) ground-truth ids.
        predictions: (N, H, W) predicted ids.
    """
    images = np.asarray(images, np.float32)
    low = images.min(axis=(1, 2, 3), keepdims=True)
    high = images.max(axis=(1, 2, 3), keepdims=True)
    scaled = (255 * (images - low) / np.maximum(high - low, 1e-6)).astype(np.uint8)
    if scaled.shape[-1] == 1:
        scaled = np.repeat(scaled, 3, axis=-1)
    return np.concatenate([scaled, colourize(masks, num_classes, ignore_label),
                           colourize(predictions, num_classes, ignore_label)], axis=2)


class TensorBoardLog:
    """Per-epoch TensorBoard output: scalars for `train` and `validation` (same tags, so
    TensorBoard overlays them), the learning rate, and validation prediction panels."""

    SCALARS = ("loss", "mean_iou", "foreground_iou", "pixel_accuracy")

    def __init__(self, log_dir, *, num_classes, ignore_label):
        import tensorflow as tf

        self.writers = {split: tf.summary.create_file_writer(str(Path(log_dir) / split))
                        for split in ("train", "validation")}
        self.num_classes, self.ignore_label = num_classes, ignore_label

    def write_epoch(self, step, *, scores, learning_rate, panel_data):
        """Writes one epoch.

        Args:
            step: int. Global optimizer step (x axis).
            scores: dict split -> scores from `tfseg.metrics.scores_from_confusion` + loss.
            learning_rate: float. Current learning rate.
            panel_data: (images, masks, predictions) arrays for the validation panels.
        """
        import tensorflow as tf

        for split, split_scores in scores.items():
            with self.writers[split].as_default(step=step):
                for key in self.SCALARS:
                    if key in split_scores:
                        tf.summary.scalar(key, split_scores[key])
                for name, value in split_scores["per_class_iou"].items():
                    tf.summary.scalar(f"iou/{name}", value)
        panels = segmentation_panels(*panel_data, num_classes=self.num_classes,
                                     ignore_label=self.ignore_label)
        with self.writers["train"].as_default(step=step):
            tf.summary.scalar("learning_rate", learning_rate)
        with self.writers["validation"].as_default(step=step):
            tf.summary.image("input | ground truth | prediction", panels,
                             max_outputs=len(panels))
        for writer in self.writers.values():
            writer.flush()
