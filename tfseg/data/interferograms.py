"""Interferogram sequences -> (image, mask) frames: folders on disk and the synthetic source.

A sequence is a folder of frames sharing one optical background (reference/DATA.md), found and
read by `tfseg.data.sequences`: 8- or 16-bit grayscale image files, preprocessed by
`tfseg.data.preprocess`. Their boxes come from the folder's `rois.json`
(the labelling tool's ROI list) or from YOLO `.txt` files beside the frames. A frame with an
empty box list is valid (all background); a frame without any label is an error.
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfseg.data import labels
from tfseg.data.preprocess import boxes_to_mask, crop
from tfseg.data.sequences import Sequence, frame_files, read_frame
from tfseg.data.synthetic import generate_sequence
from tfseg.utils.errors import TfsegError

log = logging.getLogger(__name__)
SPLITS = {"train": 0, "validation": 1}
_BAD_FRAME = "tfseg-bad-frame: "   # marks our errors inside tf.data's error messages


@dataclass(frozen=True)
class Frame:
    """One labelled frame on disk.

    `boxes` are (x, y, w, h) pixels, or normalised YOLO (x_center, y_center, w, h) when
    `normalised` (their pixel values need the frame's size, known once it is read).
    """

    path: Path
    boxes: tuple
    normalised: bool
    label_file: Path


def read_sequence(folder, label_format="auto"):
    """The labelled frames of one sequence folder, in file-name order.

    Args:
        folder: Path. A folder of frames.
        label_format: str. "rois" (the folder's rois.json), "yolo" (a .txt beside each
            frame) or "auto" (rois.json when present, else YOLO). Defaults to "auto".

    Raises:
        TfsegError: a frame has no label, or a label file is malformed; the message names it.
    """
    folder = Path(folder)
    paths = frame_files(folder)
    rois_path = folder / labels.ROI_FILE
    use_rois = label_format == "rois" or (label_format == "auto" and rois_path.exists())
    if use_rois:
        if not rois_path.exists():
            raise TfsegError(f"{rois_path}: missing (data.labels is 'rois')")
        rois = labels.read_roi_json(rois_path)
        unknown = sorted(set(rois) - {p.name for p in paths})
        if unknown:
            raise TfsegError(f"{rois_path}: lists {unknown[0]!r}, which is not a frame in "
                             f"{folder}")
    frames = []
    for path in paths:
        if use_rois:
            if path.name not in rois:
                raise TfsegError(f"{path}: not labelled in {rois_path} (label it, or remove "
                                 f"the frame)")
            frames.append(Frame(path, tuple(rois[path.name]), False, rois_path))
        else:
            label_path = path.with_suffix(".txt")
            if not label_path.exists():
                raise TfsegError(f"{path}: no YOLO label file {label_path.name} beside it (an "
                                 f"empty file means no sample)")
            frames.append(Frame(path, tuple(labels.read_yolo_normalised(label_path)), True,
                                label_path))
    return frames


def pixel_boxes(frame, shape):
    """`frame`'s boxes in pixels for a frame of `shape`; TfsegError for a box outside it."""
    height, width = shape
    boxes = []
    for box in frame.boxes:
        if frame.normalised:
            box = labels.yolo_to_pixels(box, height, width)
        x, y, w, h = box
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
            raise TfsegError(f"{frame.label_file}: box (x, y, w, h) = {tuple(box)} of "
                             f"{frame.path.name} lies outside its {height}x{width} (HxW) frame")
        boxes.append(box)
    return boxes


def frame_problems(frames, crop_region=()):
    """Reads every frame once, in parallel threads, before anything is written: (frame,
    one-line message) for each frame that is unreadable, whose boxes leave it, that the
    `crop_region` (x, y, w, h) does not fit, or whose size or bit depth differs from the
    first good frame of its sequence; in frame order."""
    def summary(frame):
        try:
            raw = read_frame(frame.path)
            pixel_boxes(frame, raw.shape)
            crop(raw, crop_region)
        except ValueError as error:
            return f"{frame.path}: {error}"
        except TfsegError as error:
            return str(error)
        return raw.shape, raw.dtype.itemsize * 8

    with ThreadPoolExecutor() as pool:
        summaries = list(pool.map(summary, frames))
    first, problems = {}, []
    for frame, found in zip(frames, summaries):
        if isinstance(found, str):
            problems.append((frame, found))
            continue
        (shape, bits), (first_shape, first_bits) = found, first.setdefault(
            frame.path.parent, found)
        if shape != first_shape:
            problems.append((frame, f"{frame.path}: {shape[0]}x{shape[1]} frame in a sequence "
                                    f"of {first_shape[0]}x{first_shape[1]} frames"))
        elif bits != first_bits:
            problems.append((frame, f"{frame.path}: {bits}-bit frame in a sequence of "
                                    f"{first_bits}-bit frames"))
    return problems


def sequence_background(frames, preprocessing):
    """The background `preprocessing` subtracts from one sequence of labelled `frames`
    (`tfseg.data.sequences.Sequence.background`), or None."""
    return Sequence(images=tuple(frame.path for frame in frames)).background(preprocessing)


def folder_frames(frames, backgrounds, preprocessing, *, skipped=None):
    """tf.data set of (image, mask) from labelled `frames`, decoded in parallel.

    Args:
        frames: list of `Frame`.
        backgrounds: dict sequence folder -> background (or None), from `sequence_background`.
        preprocessing: `tfseg.data.preprocess.Preprocessing` (it resizes frames).
        skipped: list or None. When a list, bad frames are logged, appended to it and
            dropped; when None (the default), a bad frame fails the pipeline.

    A bad frame fails the pipeline with an error naming the file; `data_error` turns it into
    a `TfsegError` where the data set is consumed.
    """
    image_shape = (*preprocessing.resize_to, preprocessing.channels)
    mask_shape = preprocessing.mask_size

    def load(index):
        frame = frames[int(index)]
        try:
            raw = read_frame(frame.path, preprocessing.colour)
            image, mask = prepare_frame(preprocessing, raw, pixel_boxes(frame, raw.shape[:2]),
                                        backgrounds[frame.path.parent])
        except (TfsegError, ValueError) as error:
            message = str(error) if isinstance(error, TfsegError) else f"{frame.path}: {error}"
            if skipped is None:
                raise ValueError(_BAD_FRAME + message) from None
            log.warning("tfseg: skipping a bad frame: %s", message)
            skipped.append(str(frame.path))
            return (np.zeros(image_shape, np.float32), np.zeros(mask_shape, np.uint8),
                    False)
        return image, mask, True

    def load_tensors(index):
        image, mask, good = tf.numpy_function(load, [index], (tf.float32, tf.uint8, tf.bool),
                                              stateful=False)
        return (tf.ensure_shape(image, image_shape), tf.ensure_shape(mask, mask_shape),
                good)

    dataset = tf.data.Dataset.range(len(frames)).map(
        load_tensors, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.filter(lambda image, mask, good: good).map(
        lambda image, mask, good: (image, mask))


def data_error(error):
    """The `TfsegError` a tf.data error stands for, or None when it is not a bad frame."""
    message = getattr(error, "message", str(error))
    if _BAD_FRAME not in message:
        return None
    return TfsegError(message.split(_BAD_FRAME, 1)[1].splitlines()[0])


def prepare_frame(preprocessing, frame, boxes, background):
    """One raw frame and its (x, y, w, h) boxes -> (network input, mask), both as
    `preprocessing` makes them."""
    return (preprocessing.image(frame, background),
            preprocessing.mask(boxes_to_mask(boxes, *frame.shape[:2])))


def prepare_sequence(frames, boxes, preprocessing):
    """Preprocesses one in-memory sequence and rasterises its boxes.

    Args:
        frames: (T, H, W) uint8 or uint16 frames of one sequence.
        boxes: per frame, a list of (x, y, w, h) boxes.
        preprocessing: `tfseg.data.preprocess.Preprocessing`.

    Returns:
        images (T, height, width, C) float32 at the network input size and masks (T, ...)
        uint8 at the preprocessing's `mask_size`.
    """
    every = preprocessing.steps.background_every
    background = (preprocessing.background(
        (f"frame {index}", frame) for index, frame in enumerate(frames[::every]))
        if every else None)
    pairs = [prepare_frame(preprocessing, frame, frame_boxes, background)
             for frame, frame_boxes in zip(frames, boxes)]
    return (np.stack([image for image, _ in pairs]), np.stack([mask for _, mask in pairs]))


def sequence_seed(seed, split, index):
    """A 32-bit seed for sequence `index` of `split`, independent across splits and runs."""
    return int(np.random.SeedSequence([seed, SPLITS[split], index]).generate_state(1)[0])


def synthetic_frames(spec, preprocessing, *, seed, split, num_sequences):
    """tf.data set of single (image, mask) frames from synthetic sequences of `spec`
    (`tfseg.config.SyntheticSpec`), preprocessed by `preprocessing`: the frames of
    `synthetic_sequences`, one after the other."""
    return synthetic_sequences(spec, preprocessing, seed=seed, split=split,
                               num_sequences=num_sequences).unbatch()


def synthetic_sequences(spec, preprocessing, *, seed, split, num_sequences):
    """tf.data set of whole synthetic sequences of `spec`, preprocessed by `preprocessing`:
    images (T, H, W, C) float32 and masks (T, H, W) uint8, T = `spec.frames_per_sequence`.

    Sequence i of `split` is rendered from `sequence_seed(seed, split, i)`, so the stream is
    reproducible and the validation split never overlaps training.
    """
    count = spec.frames_per_sequence

    def render(index):
        frames, boxes = generate_sequence(spec, sequence_seed(seed, split, int(index)))
        return prepare_sequence(frames, boxes, preprocessing)

    def render_tensors(index):
        images, masks = tf.numpy_function(render, [index], (tf.float32, tf.uint8),
                                          stateful=False)
        return (tf.ensure_shape(images, (count, *preprocessing.resize_to,
                                         preprocessing.channels)),
                tf.ensure_shape(masks, (count, *preprocessing.mask_size)))

    return tf.data.Dataset.range(num_sequences).map(
        render_tensors, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
