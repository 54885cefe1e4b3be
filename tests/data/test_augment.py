"""Augmentation inside the training step transforms image and mask alike, keeps ids exact."""

import numpy as np
import pytest
import tensorflow as tf

from tfseg.data.augment import SegmentationAugmentation


@pytest.mark.parametrize("flip", ["horizontal", "vertical", "horizontal_and_vertical"])
def test_masks_stay_integer_valid_and_aligned_with_images_over_many_draws(flip):
    augment = SegmentationAugmentation(flip=flip, seed=1)
    rng = np.random.default_rng(0)
    masks = rng.choice(np.array([0, 1, 2, 255], np.uint8), size=(4, 12, 10))
    # The image encodes its mask, so any misalignment shows up as a mismatch.
    images = masks[..., None].astype(np.float32) * 10 + 0.5
    step = tf.function(augment)
    seen = set()
    for _ in range(25):
        out_images, out_masks = step(tf.constant(images), tf.constant(masks))
        assert out_masks.dtype == tf.uint8
        assert set(np.unique(out_masks.numpy())) <= {0, 1, 2, 255}
        np.testing.assert_array_equal(np.round((out_images[..., 0].numpy() - 0.5) / 10),
                                      out_masks.numpy())
        seen.add(out_masks.numpy().tobytes())
    assert len(seen) > 1, "the flips never changed anything"


def test_none_is_identity():
    masks = tf.zeros((1, 4, 4), tf.uint8)
    images = tf.random.uniform((1, 4, 4, 1))
    out_images, out_masks = SegmentationAugmentation(flip="none", seed=0)(images, masks)
    assert out_images is images and out_masks is masks
