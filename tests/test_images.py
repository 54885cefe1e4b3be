"""`stretch_to_8bit`: the one way panels (training, evaluate) and overlays (predict) show a
preprocessed frame: each frame min-max stretched to 0..255 and rounded."""

import numpy as np

from tfseg.deploy.inference import segmentation_pictures
from tfseg.tasks.panels import segmentation_panels
from tfseg.utils.images import stretch_to_8bit


def test_each_frame_is_stretched_on_its_own_and_rounded():
    frames = np.array([[[0.0, 1.0, 2.0]], [[10.0, 10.0, 30.0]]], np.float32)[..., None]
    stretched = stretch_to_8bit(frames)
    assert stretched.shape == (2, 1, 3, 3) and stretched.dtype == np.uint8
    np.testing.assert_array_equal(stretched[0, 0, :, 0], [0, 128, 255])   # 127.5 rounds up
    np.testing.assert_array_equal(stretched[1, 0, :, 1], [0, 0, 255])
    np.testing.assert_array_equal(stretch_to_8bit(np.full((2, 2, 3), 7.0)), 0)   # flat frame


def test_panels_and_overlays_show_the_frame_alike():
    rng = np.random.default_rng(0)
    images = rng.uniform(-50, 3000, (2, 4, 5, 1)).astype(np.float32)
    masks = rng.integers(0, 2, (2, 4, 5))
    colours = np.array([[0, 0, 0], [255, 64, 64]], np.uint8)
    panels = segmentation_panels(images, masks, masks, colours=colours, ignore_label=255)
    np.testing.assert_array_equal(panels[:, :, :5], stretch_to_8bit(images))
    logits = np.eye(2, dtype=np.float32)[masks[0]]
    overlay = segmentation_pictures(logits, images[0], colours)["overlay"]
    np.testing.assert_array_equal(overlay, np.round(
        0.5 * stretch_to_8bit(images[0]) + 0.5 * colours[masks[0]]).astype(np.uint8))
