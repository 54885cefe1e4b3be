"""Interferogram sequences -> (image, mask) frames: folders on disk and the synthetic source.

A sequence is a folder of frames sharing one optical background (reference/DATA.md). Frames are
8- or 16-bit grayscale BMP, PNG or TIFF files; their boxes come from the folder's `rois.json`
(the labelling tool's ROI list) or from YOLO `.txt` files beside the frames. A frame with an
empty box list is valid (all background); a frame without any label is an error.
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from tfseg.data import labels, preprocess
from tfseg.data.synthetic import generate_sequence
from tfseg.utils.errors import TfsegError
from tfseg.utils.images import read_unchanged

log = logging.getLogger(__name__)
SPLITS = {"train": 0, "validation": 1}
FRAME_SUFFIXES = (".bmp", ".png", ".tif", ".tiff")
LABEL_SUFFIXES = (".txt", ".json")
ROI_FILE = "rois.json"
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


def find_sequences(root):
    """Sequence folders under `root`: `root` itself if it holds frames, else its subfolders
    that do (sorted). Raises TfsegError for a missing folder or one without frames."""
    root = Path(root)
    if not root.is_dir():
        raise TfsegError(f"{root}: no such folder (expected a folder of interferogram frames "
                         f"or of sequence folders)")
    if _frame_files(root):
        return [root]
    folders = [p for p in sorted(root.iterdir()) if p.is_dir() and _frame_files(p)]
    if not folders:
        raise TfsegError(f"{root}: no frames found (expected {'/'.join(FRAME_SUFFIXES)} files "
                         f"in it or in its subfolders)")
    return folders


def _frame_files(folder):
    files = []
    for path in sorted(folder.iterdir()):
        suffix = path.suffix.lower()
        if path.is_dir() or path.name.startswith("."):
            continue
        if suffix in FRAME_SUFFIXES:
            files.append(path)
        elif suffix not in LABEL_SUFFIXES:
            raise TfsegError(f"{path}: unknown file type in a frame folder (expected frames "
                             f"{', '.join(FRAME_SUFFIXES)} and labels {ROI_FILE} or .txt)")
    return files


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
    paths = _frame_files(folder)
    rois_path = folder / ROI_FILE
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


def read_frame(path):
    """A grayscale frame as (H, W) uint8 or uint16; TfsegError for an unreadable file."""
    frame = read_unchanged(path)
    if frame.ndim == 3:   # grayscale stored as 24/32-bit colour
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2GRAY if frame.shape[2] == 4
                             else cv2.COLOR_BGR2GRAY)
    return frame


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


def check_frames(frames):
    """Reads every frame once, in parallel threads, before anything is written: TfsegError
    naming the first frame that is unreadable, whose boxes leave it, or whose size or bit
    depth differs from the first frame of its sequence."""
    def summary(frame):
        raw = read_frame(frame.path)
        pixel_boxes(frame, raw.shape)
        return raw.shape, raw.dtype.itemsize * 8

    with ThreadPoolExecutor() as pool:
        summaries = list(pool.map(summary, frames))
    first = {}
    for frame, (shape, bits) in zip(frames, summaries):
        first_shape, first_bits = first.setdefault(frame.path.parent, (shape, bits))
        if shape != first_shape:
            raise TfsegError(f"{frame.path}: {shape[0]}x{shape[1]} frame in a sequence of "
                             f"{first_shape[0]}x{first_shape[1]} frames")
        if bits != first_bits:
            raise TfsegError(f"{frame.path}: {bits}-bit frame in a sequence of {first_bits}-bit "
                             f"frames")


def sequence_background(frames, preprocess_config):
    """Background of one sequence: mean of its every k-th blurred frame (None when off),
    read in parallel threads (OpenCV releases the GIL)."""
    every = preprocess_config.background_every
    if every == 0:
        return None
    paths = [f.path for f in frames[::every]]
    with ThreadPoolExecutor() as pool:
        sampled = list(pool.map(read_frame, paths))
    for path, frame in zip(paths, sampled):
        if frame.shape != sampled[0].shape:
            raise TfsegError(f"{path}: {frame.shape[0]}x{frame.shape[1]} frame in a sequence "
                             f"of {sampled[0].shape[0]}x{sampled[0].shape[1]} frames")
    return preprocess.estimate_background(sampled, preprocess_config.blur)


def folder_frames(frames, backgrounds, data_config, *, skipped=None):
    """tf.data set of (image, mask) from labelled `frames`, decoded in parallel.

    Args:
        frames: list of `Frame`.
        backgrounds: dict sequence folder -> background (or None), from `sequence_background`.
        data_config: `tfseg.config.DataConfig`.
        skipped: list or None. When a list, bad frames are logged, appended to it and
            dropped; when None (the default), a bad frame fails the pipeline.

    A bad frame fails the pipeline with an error naming the file; `data_error` turns it into
    a `TfsegError` where the data set is consumed.
    """
    height, width = data_config.height, data_config.width

    def load(index):
        frame = frames[int(index)]
        try:
            raw = read_frame(frame.path)
            background = backgrounds[frame.path.parent]
            if background is not None and background.shape != raw.shape:
                raise TfsegError(f"{frame.path}: {raw.shape[0]}x{raw.shape[1]} frame in a "
                                 f"sequence of {background.shape[0]}x{background.shape[1]} "
                                 f"frames")
            image, mask = preprocess.prepare_frame(raw, pixel_boxes(frame, raw.shape),
                                                   background, data_config)
        except (TfsegError, ValueError) as error:
            message = str(error) if isinstance(error, TfsegError) else f"{frame.path}: {error}"
            if skipped is None:
                raise ValueError(_BAD_FRAME + message) from None
            log.warning("tfseg: skipping a bad frame: %s", message)
            skipped.append(str(frame.path))
            return np.zeros((height, width, 1), np.float32), np.zeros((height, width),
                                                                      np.uint8), False
        return image, mask, True

    def load_tensors(index):
        image, mask, good = tf.numpy_function(load, [index], (tf.float32, tf.uint8, tf.bool),
                                              stateful=False)
        return (tf.ensure_shape(image, (height, width, 1)), tf.ensure_shape(mask, (height, width)),
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


def prepare_sequence(frames, boxes, data_config):
    """Preprocesses one in-memory sequence as configured and rasterises its boxes.

    Args:
        frames: (T, H, W) uint8 or uint16 frames of one sequence.
        boxes: per frame, a list of (x, y, w, h) boxes.
        data_config: `tfseg.config.DataConfig`.

    Returns:
        images (T, height, width, 1) float32 and masks (T, height, width) uint8, at the
        configured network input size.
    """
    steps = data_config.preprocess
    background = (preprocess.estimate_background(frames[::steps.background_every], steps.blur)
                  if steps.background_every else None)
    pairs = [preprocess.prepare_frame(frame, frame_boxes, background, data_config)
             for frame, frame_boxes in zip(frames, boxes)]
    return (np.stack([image for image, _ in pairs]), np.stack([mask for _, mask in pairs]))


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
