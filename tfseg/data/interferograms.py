"""Interferogram sequences -> (image, mask) frames, and the synthetic source as a tf.data set.

A sequence is the unit of work: background subtraction needs all of its frames.
"""

import numpy as np
import tensorflow as tf

from tfseg.data import preprocess
from tfseg.data.synthetic import generate_sequence

SPLITS = {"train": 0, "validation": 1}


def prepare_sequence(frames, boxes, data_config):
    """Preprocesses one sequence as configured and rasterises its boxes.

    Args:
        frames: (T, H, W) uint8 or uint16 frames of one sequence.
        boxes: per frame, a list of (x, y, w, h) boxes.
        data_config: `tfseg.config.DataConfig`.

    Returns:
        images (T, height, width, 1) float32 and masks (T, height, width) uint8, at the
        configured network input size.
    """
    steps = data_config.preprocess
    max_value = float(np.iinfo(frames.dtype).max)
    images = preprocess.box_blur(frames, steps.blur)
    images = preprocess.subtract_background(images, steps.background_every,
                                            steps.background_alpha)
    images = preprocess.equalize(images, steps.clahe_clip_limit, steps.clahe_tile_grid,
                                 max_value)
    out_images, out_masks = [], []
    for image, frame_boxes in zip(images, boxes):
        mask = preprocess.boxes_to_mask(frame_boxes, *image.shape)
        image, mask = preprocess.resize_pair(image, mask, data_config.height, data_config.width)
        out_images.append(image)
        out_masks.append(mask)
    return np.stack(out_images)[..., None].astype(np.float32), np.stack(out_masks)


def sequence_seed(seed, split, index):
    """A 32-bit seed for sequence `index` of `split`, independent across splits and runs."""
    return int(np.random.SeedSequence([seed, SPLITS[split], index]).generate_state(1)[0])


def synthetic_frames(data_config, *, seed, split, num_sequences):
    """tf.data set of single (image, mask) frames from synthetic sequences.

    Sequence i of `split` is rendered from `sequence_seed(seed, split, i)`, so the stream is
    reproducible and the validation split never overlaps training.
    """
    spec = data_config.synthetic
    shape = (spec.frames_per_sequence, data_config.height, data_config.width)

    def render(index):
        frames, boxes = generate_sequence(spec, sequence_seed(seed, split, int(index)))
        return prepare_sequence(frames, boxes, data_config)

    def render_tensors(index):
        images, masks = tf.numpy_function(render, [index], (tf.float32, tf.uint8),
                                          stateful=False)
        return tf.ensure_shape(images, shape + (1,)), tf.ensure_shape(masks, shape)

    sequences = tf.data.Dataset.range(num_sequences).map(
        render_tensors, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return sequences.unbatch()
