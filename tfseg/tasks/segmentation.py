"""Segmentation: the configured loss, a step's confusion matrix, and the validation scores and
panels (`tfseg.tasks.factory.make_task` picks the task, `tfseg.tasks.validation` validates)."""

import numpy as np
import tensorflow as tf

from tfseg.data.augment import SegmentationAugmentation
from tfseg.data.preprocess import Preprocessing
from tfseg.tasks.losses import (
    ICNET_PAPER_WEIGHTS,
    ICNET_SEED_WEIGHTS,
    cascade_loss,
    per_image_asymmetric_loss,
    per_image_cross_entropy,
    per_image_dice_loss,
)
from tfseg.tasks.metrics import (
    InstanceIoU,
    confusion_matrix,
    scores_from_confusion,
    seed_per_image_foreground_iou,
)
from tfseg.tasks.panels import class_colours, segmentation_panels
from tfseg.tasks.samples import SampleCounts, background_class, foreground
from tfseg.tasks.test_time import averaging_predictor
from tfseg.utils.errors import TfsegError


def full_size(outputs):
    """The full-size output of a model (ICNet's training model returns a dict of levels)."""
    return outputs["logits"] if isinstance(outputs, dict) else outputs


class SegmentationTask:
    """Pixel classification: configured loss, confusion-matrix statistics and scores."""

    progress_keys = ("mean_iou", "foreground_iou")
    panel_tag = "input | ground truth | prediction"

    def __init__(self, config):
        self.config = config
        self.num_classes = config.model.num_classes
        self.ignore_label = config.data.ignore_label
        self.class_names = config.data.class_names
        # Sample-level scores need a class named background (tfseg.tasks.samples): the
        # interferogram recipes have one; multi-class data such as CamVid gets none.
        self.background_id = background_class(self.class_names)
        options, preprocessing = config.data.augment, Preprocessing.from_config(config)
        self.augment = SegmentationAugmentation(
            flip=options.flip, seed=config.train.seed, transpose=options.transpose,
            crop_size=tuple(options.crop) or None,
            scale=tuple(options.scale) or None, brightness=options.brightness,
            contrast=options.contrast, value_range=tuple(options.value_range),
            ignore_label=self.ignore_label,
            derivative_channels=preprocessing.slope_channels)
        self.test_time_views = options.test_time
        self.slope_channels = preprocessing.slope_channels

    @property
    def best_metric(self):
        """The validation score that picks the best checkpoint."""
        if self.config.train.best_metric != "auto":
            return self.config.train.best_metric
        return "foreground_iou" if self.num_classes == 2 else "mean_iou"

    def per_image_loss(self, masks, outputs):
        """The configured training loss of each image: cross-entropy or the asymmetric loss
        (+ weighted Dice); for a dict of ICNet cascade outputs, the cascade label guidance."""
        train = self.config.train
        class_weights = train.class_weights or None
        if isinstance(outputs, dict):
            weights = ICNET_SEED_WEIGHTS if train.cascade == "seed" else ICNET_PAPER_WEIGHTS
            loss = cascade_loss(masks, outputs, self.ignore_label, weights=weights,
                                class_weights=class_weights)
        elif train.loss == "asymmetric":
            options = train.asymmetric
            loss = per_image_asymmetric_loss(
                masks, outputs, self.ignore_label, gamma_pos=options.gamma_pos,
                gamma_neg=options.gamma_neg, clip=options.clip,
                label_smoothing=options.label_smoothing)
        else:
            loss = per_image_cross_entropy(masks, outputs, self.ignore_label, class_weights)
        if train.dice_weight:
            loss += train.dice_weight * per_image_dice_loss(masks, full_size(outputs),
                                                            self.ignore_label)
        return loss

    def step_statistics(self, masks, outputs):
        """The batch's confusion matrix (int64 K x K)."""
        return confusion_matrix(masks, tf.argmax(full_size(outputs), -1), self.num_classes,
                                self.ignore_label)

    def zero_statistics(self):
        return np.zeros((self.num_classes, self.num_classes), np.int64)

    def scores(self, total):
        """Scores of a summed confusion matrix."""
        return scores_from_confusion(np.asarray(total), self.class_names)

    def predictor(self, predict):
        """`predict` (NHWC frames -> logits) as this task scores it: averaged over the views of
        `data.augment.test_time` (`tfseg.tasks.test_time`), or itself."""
        return averaging_predictor(predict, self.test_time_views, self.slope_channels)

    def validation_scores(self, samples=0):
        """An empty `SegmentationScores` of this task (`tfseg.tasks.validation.validate`)."""
        return SegmentationScores(self, samples)


class SegmentationScores:
    """Every validation score of segmentation, summed batch by batch: the loss, the confusion
    matrix and its scores, iIoU, the seed's per-image figure (two classes), sample-level
    precision, recall and F1 (`tfseg.tasks.samples`; where a class is named background), and
    the panels of the first `samples` frames."""

    def __init__(self, task, samples):
        self.task, self.samples = task, samples
        self.matrix = np.zeros((task.num_classes,) * 2, np.int64)
        self.instances = InstanceIoU(task.class_names, ignore_label=task.ignore_label)
        self.sample_counts = None if task.background_id is None else SampleCounts(
            min_area=task.config.data.min_sample_area)
        self.loss_sum, self.frames, self.seed_figures, self.panels = 0.0, 0, [], []
        # The panels show the frame, not the channels derived from it (phase slopes).
        self.frame_channels = Preprocessing.from_config(task.config).frame_channels

    def update(self, images, masks, logits):
        """Adds a batch: (N, H, W, C) images, (N, H, W) masks, (N, H, W, K) logits (numpy)."""
        task = self.task
        if logits.shape[-1] != task.num_classes:
            raise TfsegError(f"the model outputs {logits.shape[-1]} classes but the config "
                             f"has {task.num_classes} ({', '.join(task.class_names)})")
        self.loss_sum += float(np.sum(task.per_image_loss(masks, logits)))
        predictions = logits.argmax(-1)
        self.matrix += confusion_matrix(masks, predictions, task.num_classes,
                                        task.ignore_label).numpy()
        self.instances.update(masks, predictions)
        if task.num_classes == 2:
            self.seed_figures.extend(seed_per_image_foreground_iou(masks, predictions))
        if self.sample_counts is not None:
            for mask, prediction in zip(masks, predictions):
                self.sample_counts.add_masks(
                    foreground(prediction, task.background_id),
                    foreground(mask, task.background_id, task.ignore_label),
                    ignored=mask == task.ignore_label)
        self.frames += len(images)
        take = self.samples - len(self.panels)
        if take > 0:
            self.panels.extend(segmentation_panels(
                images[:take, ..., :self.frame_channels], masks[:take], predictions[:take],
                colours=class_colours(task.config.data, task.num_classes),
                ignore_label=task.ignore_label))

    def result(self):
        """{"loss" (mean per frame), "frames", the scores of `scores_from_confusion` and
        `InstanceIoU`, "seed_per_image_foreground_iou" (two classes), the sample scores of
        `SampleCounts` (with a background class), "confusion_matrix"}; "panels" too when
        there are some."""
        report = {"loss": self.loss_sum / max(self.frames, 1), "frames": self.frames,
                  **scores_from_confusion(self.matrix, self.task.class_names),
                  **self.instances.result()}
        with_foreground = [value for value in self.seed_figures if not np.isnan(value)]
        if self.seed_figures:
            # The seed's "mean IoU": |prediction & truth| / |truth| per image, averaged over
            # images with foreground (a recall; false positives do not lower it); NaN when
            # no image has any.
            report["seed_per_image_foreground_iou"] = (
                float(np.mean(with_foreground)) if with_foreground else float("nan"))
        if self.sample_counts is not None:
            report.update(self.sample_counts.result())
        report["confusion_matrix"] = self.matrix.tolist()
        if self.panels:
            report["panels"] = np.stack(self.panels)
        return report
