"""Segmentation as the training loop sees it: the configured loss, a step's confusion matrix,
the scores and the validation panels (`tfseg.tasks.factory.make_task` picks the task)."""

import numpy as np
import tensorflow as tf

from tfseg.data.augment import SegmentationAugmentation
from tfseg.tasks.losses import (
    ICNET_PAPER_WEIGHTS,
    ICNET_SEED_WEIGHTS,
    cascade_loss,
    per_image_asymmetric_loss,
    per_image_cross_entropy,
    per_image_dice_loss,
)
from tfseg.tasks.metrics import confusion_matrix, scores_from_confusion
from tfseg.tasks.panels import class_colours, segmentation_panels


def full_size(outputs):
    """The full-size output of a model (ICNet's training model returns a dict of levels)."""
    return outputs["logits"] if isinstance(outputs, dict) else outputs


class SegmentationTask:
    """Pixel classification: configured loss, confusion-matrix statistics and scores."""

    progress_keys = ("mean_iou", "foreground_iou")

    def __init__(self, config):
        self.config = config
        self.num_classes = config.model.num_classes
        self.ignore_label = config.data.ignore_label
        self.class_names = config.data.class_names
        options = config.data.augment
        self.augment = SegmentationAugmentation(
            flip=options.flip, seed=config.train.seed, crop_size=tuple(options.crop) or None,
            scale=tuple(options.scale) or None, brightness=options.brightness,
            contrast=options.contrast, value_range=tuple(options.value_range),
            ignore_label=self.ignore_label)

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

    @staticmethod
    def panel_inputs(validation, count):
        """The first `count` validation (images, masks), batched."""
        return next(iter(validation.unbatch().batch(count)))

    def panels(self, model, images, masks):
        """TensorBoard tag and uint8 panels: input | ground truth | prediction."""
        predictions = np.argmax(model(images, training=False), -1)
        return "input | ground truth | prediction", segmentation_panels(
            np.asarray(images), np.asarray(masks), predictions,
            colours=class_colours(self.config.data, self.num_classes),
            ignore_label=self.ignore_label)
