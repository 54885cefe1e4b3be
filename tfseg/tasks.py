"""What differs between training a segmenter and a super-resolution network: the loss, the
running statistics of a training step, the validation scores and the TensorBoard panels.

The training loop (`tfseg.training`) is one loop for both; it asks `make_task(config)` for
these pieces. Step statistics are tensors summed over replicas and steps (a confusion matrix,
or PSNR sums), so one `scores(total)` call turns any span of steps into figures.
"""

import numpy as np
import tensorflow as tf

from tfseg.data.augment import SegmentationAugmentation
from tfseg.data.super_resolution import to_8bit
from tfseg.losses import (
    ICNET_PAPER_WEIGHTS,
    ICNET_SEED_WEIGHTS,
    PerceptualLoss,
    cascade_loss,
    per_image_asymmetric_loss,
    per_image_cross_entropy,
    per_image_dice_loss,
    per_image_mean,
)
from tfseg.metrics import (
    bicubic_baseline,
    confusion_matrix,
    scores_from_confusion,
    y_scores,
)
from tfseg.summaries import class_colours, segmentation_panels, super_resolution_panels


def make_task(config):
    """The `SegmentationTask` or `SuperResolutionTask` of `config` (build it in the
    distribution strategy's scope: the perceptual loss and the augmentation hold variables)."""
    if config.model.task == "super_resolution":
        return SuperResolutionTask(config)
    return SegmentationTask(config)


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


class SuperResolutionTask:
    """Super-resolution: pixel or perceptual loss; PSNR while training, PSNR and SSIM on the
    Y channel (border shaved by the scale, the published protocol) in validation."""

    progress_keys = ("psnr",)

    def __init__(self, config):
        self.config = config
        self.scale = config.model.scale
        options = config.train.perceptual
        self.perceptual = None
        if config.train.loss == "perceptual":
            self.perceptual = PerceptualLoss(
                weights=options.weights, layers=options.layers,
                layer_weights=options.layer_weights or None,
                pixel_weight=options.pixel_weight, tv_weight=options.tv_weight)
        self._bicubic = None

    @property
    def best_metric(self):
        train = self.config.train
        return "psnr_y" if train.best_metric == "auto" else train.best_metric

    @staticmethod
    def augment(low_resolution, high_resolution):
        """Johnson et al. train on random patches without further augmentation."""
        return low_resolution, high_resolution

    def per_image_loss(self, high_resolution, outputs):
        """Perceptual loss, or the pixel MSE, of each image (float32)."""
        if self.perceptual is not None:
            return self.perceptual(high_resolution, outputs)
        return per_image_mean(tf.square(tf.cast(high_resolution, tf.float32)
                                         - tf.cast(outputs, tf.float32)))

    def step_statistics(self, high_resolution, outputs):
        """[sum of RGB PSNR over the batch's 8-bit outputs, image count] (float64)."""
        psnr = tf.image.psnr(to_8bit(tf.cast(outputs, tf.float32)), high_resolution, 255.0)
        return tf.stack([tf.reduce_sum(tf.cast(psnr, tf.float64)),
                         tf.cast(tf.shape(psnr)[0], tf.float64)])

    def zero_statistics(self):
        return np.zeros(2, np.float64)

    def scores(self, total):
        return {"psnr": float(total[0] / max(total[1], 1))}

    def evaluate(self, model, pairs):
        """Loss, PSNR and SSIM (Y, shaved) over whole validation images, batch 1, with the
        bicubic baseline scored by the same code."""
        losses, psnrs, ssims, bicubic = [], [], [], self._bicubic is None
        baseline = {"psnr_y": [], "ssim_y": []}
        for low_resolution, high_resolution in pairs:
            outputs = model(low_resolution, training=False)
            losses.append(float(self.per_image_loss(high_resolution, outputs)[0]))
            restored = to_8bit(tf.cast(outputs, tf.float32)).numpy()
            scores = y_scores(restored, high_resolution.numpy(), shave=self.scale)
            psnrs.append(float(scores["psnr_y"][0]))
            ssims.append(float(scores["ssim_y"][0]))
            if bicubic:
                scores = bicubic_baseline(low_resolution.numpy(), high_resolution.numpy(),
                                          self.scale)
                for key, values in baseline.items():
                    values.append(float(scores[key][0]))
        if bicubic:
            self._bicubic = {f"bicubic_{key}": float(np.mean(v)) for key, v in baseline.items()}
        return {"loss": float(np.mean(losses)), "images": len(psnrs),
                "psnr_y": float(np.mean(psnrs)), "ssim_y": float(np.mean(ssims)),
                **self._bicubic}

    def panel_inputs(self, validation, count):
        """The first `count` validation pairs, centre-cropped to their smallest common LR size
        (whole images differ in size) and batched."""
        pairs = [(lr[0], hr[0]) for lr, hr in validation.take(count)]
        height = min(int(lr.shape[0]) for lr, _ in pairs)
        width = min(int(lr.shape[1]) for lr, _ in pairs)
        lows, highs = [], []
        for lr, hr in pairs:
            top, left = (lr.shape[0] - height) // 2, (lr.shape[1] - width) // 2
            lows.append(lr[top:top + height, left:left + width])
            s = self.scale
            highs.append(hr[s * top:s * (top + height), s * left:s * (left + width)])
        return tf.stack(lows), tf.stack(highs)

    def panels(self, model, low_resolution, high_resolution):
        """TensorBoard tag and uint8 panels: LR | bicubic | SR | HR."""
        outputs = to_8bit(tf.cast(model(low_resolution, training=False), tf.float32))
        return "LR | bicubic | SR | HR", super_resolution_panels(
            np.asarray(low_resolution), outputs.numpy(), np.asarray(high_resolution),
            self.scale)
