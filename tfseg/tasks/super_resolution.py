"""Super-resolution: the pixel or perceptual loss, a step's PSNR sums, and in validation PSNR
and SSIM on Y against bicubic, per image, with LR | bicubic | SR | HR panels."""

import numpy as np
import tensorflow as tf

from tfseg.data.super_resolution import to_8bit
from tfseg.tasks.losses import PerceptualLoss, per_image_mean
from tfseg.tasks.metrics import bicubic_baseline, y_scores
from tfseg.tasks.panels import stack_padded, super_resolution_panels
from tfseg.utils.errors import TfsegError


class SuperResolutionTask:
    """Super-resolution: pixel or perceptual loss; PSNR while training, PSNR and SSIM on the
    Y channel (border shaved by the scale, the published protocol) in validation."""

    progress_keys = ("psnr",)
    panel_tag = "LR | bicubic | SR | HR"

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

    @staticmethod
    def predictor(predict):
        """`predict` itself: super-resolution is scored on one view."""
        return predict

    def validation_scores(self, samples=0):
        """An empty `SuperResolutionScores` of this task (`tfseg.tasks.validation.validate`)."""
        return SuperResolutionScores(self, samples)


class SuperResolutionScores:
    """Every validation score of super-resolution, image by image: the loss, PSNR and SSIM on
    Y (border shaved by the scale, the published protocol) and the bicubic baseline scored by
    the same code, and the panels of the first `samples` images."""

    def __init__(self, task, samples):
        self.task, self.samples = task, samples
        self.loss_sum, self.rows, self.panels = 0.0, [], []

    def update(self, low_resolution, high_resolution, outputs):
        """Adds a batch of (N, h, w, 3) LR and (N, sh, sw, 3) HR images and SR `outputs`
        (numpy; whole images of one size, usually N = 1)."""
        scale = self.task.scale
        self.loss_sum += float(np.sum(self.task.per_image_loss(high_resolution, outputs)))
        restored = to_8bit(tf.constant(outputs, tf.float32)).numpy()
        scores = {**y_scores(restored, high_resolution, shave=scale),
                  **{f"bicubic_{key}": value for key, value in
                     bicubic_baseline(low_resolution, high_resolution, scale).items()}}
        for index in range(len(restored)):
            self.rows.append({"image": len(self.rows) + 1,
                              "height": high_resolution.shape[1],
                              "width": high_resolution.shape[2],
                              **{key: float(value[index]) for key, value in scores.items()}})
        take = self.samples - len(self.panels)
        if take > 0:
            self.panels.extend(super_resolution_panels(
                low_resolution[:take], restored[:take], high_resolution[:take], scale))

    def result(self):
        """{"loss" (mean per image), "images", mean "psnr_y", "ssim_y", "bicubic_psnr_y",
        "bicubic_ssim_y", "per_image" rows}; "panels" (padded to the largest) too when there
        are some.

        Raises:
            TfsegError: no image was scored.
        """
        if not self.rows:
            raise TfsegError("the validation split holds no images to score")
        report = {"loss": self.loss_sum / len(self.rows), "images": len(self.rows),
                  **{key: float(np.mean([row[key] for row in self.rows]))
                     for key in ("psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y")},
                  "per_image": self.rows}
        if self.panels:
            report["panels"] = stack_padded(self.panels)
        return report
