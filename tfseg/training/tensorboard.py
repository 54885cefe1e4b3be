"""TensorBoard output of a run: per-epoch scalars for training and validation, validation
panels and notes."""

from pathlib import Path

import tensorflow as tf


class TensorBoardLog:
    """Per-epoch TensorBoard output: every score of `train` and `validation` (same tags, so
    TensorBoard overlays them; per-class IoU and iIoU under iou/<class> and iiou/<class>),
    the learning rate, training images per second, and validation prediction panels."""

    def __init__(self, log_dir):
        self.writers = {split: tf.summary.create_file_writer(str(Path(log_dir) / split))
                        for split in ("train", "validation")}

    def write_epoch(self, step, *, scores, learning_rate, images_per_second, panels):
        """Writes one epoch.

        Args:
            step: int. Global optimizer step (x axis).
            scores: dict split -> dict of scores (numbers, `per_class_iou`,
                `per_class_iiou`; other values are left out).
            learning_rate: float. Current learning rate.
            images_per_second: float. Training throughput over the epoch.
            panels: (tag, uint8 (N, H, W, 3) images) of the validation predictions.
        """
        for split, split_scores in scores.items():
            with self.writers[split].as_default(step=step):
                for key, value in split_scores.items():
                    if isinstance(value, float):
                        tf.summary.scalar(key, value)
                for group, prefix in (("per_class_iou", "iou"), ("per_class_iiou", "iiou")):
                    for name, value in split_scores.get(group, {}).items():
                        tf.summary.scalar(f"{prefix}/{name}", value)
        with self.writers["train"].as_default(step=step):
            tf.summary.scalar("learning_rate", learning_rate)
            tf.summary.scalar("images_per_second", images_per_second)
        tag, images = panels
        with self.writers["validation"].as_default(step=step):
            tf.summary.image(tag, images, max_outputs=len(images))
        self.flush()

    def write_text(self, tag, text, step=0):
        """A note in the Text tab (e.g. a warning the user must see)."""
        with self.writers["train"].as_default(step=step):
            tf.summary.text(tag, text)
        self.flush()

    def flush(self):
        for writer in self.writers.values():
            writer.flush()
