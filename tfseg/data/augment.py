"""Random augmentation as Keras layers, run inside the training step (so on the accelerator
when there is one), transforming image and mask together.

Keras 3.15 returns transformed masks as float32 (TOOLCHAIN.md trap 6); they are cast back to
their integer dtype here, so label ids stay exact.
"""

import keras
import tensorflow as tf


class SegmentationAugmentation:
    """Applies the configured random transforms to a batch of (images, masks).

    Args:
        flip: str. "none", "horizontal", "vertical" or "horizontal_and_vertical".
        seed: int. Seed of the layers' random generators.
    """

    def __init__(self, *, flip, seed):
        self.layers = []
        if flip != "none":
            self.layers.append(keras.layers.RandomFlip(flip, seed=seed, name="augment_flip"))

    def __call__(self, images, masks):
        """images (B, H, W, C) float, masks (B, H, W) integer -> both transformed alike."""
        if not self.layers:
            return images, masks
        data = {"images": images, "segmentation_masks": masks[..., None]}
        for layer in self.layers:
            data = layer(data, training=True)
        out_masks = tf.cast(tf.round(data["segmentation_masks"][..., 0]), masks.dtype)
        return data["images"], out_masks
