"""Prediction panels (segmentation: input | ground truth | prediction; super-resolution:
LR | bicubic | SR | HR) and the class colours they, overlays and exports use."""

import cv2
import numpy as np

from tfseg.utils.images import stretch_to_8bit

IGNORE_COLOUR = (255, 255, 255)


def palette(num_classes):
    """A fixed RGB colour per class id (class 0 black), distinct for small class counts."""
    rng = np.random.default_rng(0)
    colours = rng.integers(64, 256, size=(max(num_classes, 1), 3), dtype=np.uint8)
    colours[0] = 0
    if num_classes == 2:
        colours[1] = (255, 64, 64)
    return colours


def class_colours(data_config, num_classes):
    """uint8 (num_classes, 3) RGB: the config's `data.class_colours`, else `palette`."""
    if data_config.class_colours:
        return np.asarray(data_config.class_colours, np.uint8)
    return palette(num_classes)


def colourize(labels, colours, ignore_label):
    """uint8 (..., 3) image of class ids in `colours` (uint8 (K, 3) RGB); ignored pixels
    white."""
    labels = np.asarray(labels)
    rgb = colours[np.clip(labels, 0, len(colours) - 1)]
    rgb[labels == ignore_label] = IGNORE_COLOUR
    return rgb


def segmentation_panels(images, masks, predictions, *, colours, ignore_label):
    """uint8 (N, H, 3W, 3) panels: input (`stretch_to_8bit`) | ground truth | prediction.

    Args:
        images: (N, h, w, C) input pixels, C = 1 or 3; shown resized (bilinear) to the
            masks' size where a network of another size took them.
        masks: (N, H, W) ground-truth ids.
        predictions: (N, H, W) predicted ids.
        colours: uint8 (K, 3) RGB per class id (`class_colours`).
    """
    shown, (height, width) = stretch_to_8bit(images), np.shape(masks)[1:3]
    if shown.shape[1:3] != (height, width):
        shown = np.stack([cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
                          for image in shown])
    return np.concatenate([shown, colourize(masks, colours, ignore_label),
                           colourize(predictions, colours, ignore_label)], axis=2)


def super_resolution_panels(low_resolution, outputs, high_resolution, scale):
    """uint8 (N, sH, 4 sW, 3) panels: LR (nearest, to show its pixels) | bicubic | SR | HR.

    Args:
        low_resolution: (N, H, W, 3) LR pixels 0..255.
        outputs: (N, sH, sW, 3) SR pixels 0..255.
        high_resolution: (N, sH, sW, 3) HR pixels 0..255.
        scale: int. The upscaling factor s.
    """
    import tensorflow as tf

    size = np.asarray(high_resolution).shape[1:3]
    views = [tf.image.resize(low_resolution, size, method=method)
             for method in ("nearest", "bicubic")] + [outputs, high_resolution]
    return np.concatenate([np.clip(np.round(np.asarray(view)), 0, 255).astype(np.uint8)
                           for view in views], axis=2)


def stack_padded(panels):
    """uint8 (N, H, W, 3): `panels` of different sizes padded with black to the largest (whole
    SR images differ in size), one batch for TensorBoard or a strip file."""
    height = max(panel.shape[0] for panel in panels)
    width = max(panel.shape[1] for panel in panels)
    return np.stack([np.pad(panel, ((0, height - panel.shape[0]),
                                    (0, width - panel.shape[1]), (0, 0)))
                     for panel in panels])
