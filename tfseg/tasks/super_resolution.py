"""Super-resolution as the training loop sees it: the pixel or perceptual loss, a step's PSNR
sums, PSNR and SSIM on Y in validation, and the LR | bicubic | SR | HR panels."""

import numpy as np
import tensorflow as tf

from tfseg.data.super_resolution import to_8bit
from tfseg.tasks.losses import PerceptualLoss, per_image_mean
from tfseg.tasks.metrics import bicubic_baseline, y_scores
from tfseg.tasks.panels import super_resolution_panels


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
