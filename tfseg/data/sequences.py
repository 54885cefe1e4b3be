"""Sequences of raw frames: which folders hold them, reading frames in the network's colour,
videos, and each sequence's background. Training folders and `python -m tfseg.predict` find
and read frames here alike; TensorFlow is never loaded.

A sequence is a folder of frames (in file-name order) or a video: frames that share one
optical background (reference/DATA.md). Frames are 8- or 16-bit image files.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from tfseg.utils.errors import TfsegError
from tfseg.utils.images import read_unchanged

FRAME_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
LABEL_SUFFIXES = (".txt", ".json")   # YOLO files and the labelling tool's rois.json
VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv")
_TO_COLOUR = {("gray", 3): cv2.COLOR_BGR2GRAY, ("gray", 4): cv2.COLOR_BGRA2GRAY,
              ("rgb", 3): cv2.COLOR_BGR2RGB, ("rgb", 4): cv2.COLOR_BGRA2RGB}


def find_sequences(root):
    """Sequence folders under `root`: `root` itself if it holds frames, else its subfolders
    that do (sorted). Raises TfsegError for a missing folder or one without frames."""
    root = Path(root)
    if not root.is_dir():
        raise TfsegError(f"{root}: no such folder (expected a folder of frames or of sequence "
                         f"folders)")
    if frame_files(root):
        return [root]
    folders = [p for p in sorted(root.iterdir()) if p.is_dir() and frame_files(p)]
    if not folders:
        raise TfsegError(f"{root}: no frames found (expected {'/'.join(FRAME_SUFFIXES)} files "
                         f"in it or in its subfolders)")
    return folders


def frame_files(folder):
    """The frame files of `folder`, sorted by name (hidden files and subfolders ignored).
    Raises TfsegError for a file that is neither a frame nor a label file."""
    files = []
    for path in sorted(Path(folder).iterdir()):
        suffix = path.suffix.lower()
        if path.is_dir() or path.name.startswith("."):
            continue
        if suffix in FRAME_SUFFIXES:
            files.append(path)
        elif suffix not in LABEL_SUFFIXES:
            raise TfsegError(f"{path}: unknown file type in a frame folder (expected frames "
                             f"{', '.join(FRAME_SUFFIXES)} and labels rois.json or .txt)")
    return files


def read_frame(path, colour="gray"):
    """An image file as a `colour` frame (`to_colour`), uint8 or uint16. TfsegError naming
    an unreadable file."""
    return to_colour(read_unchanged(path), colour, path)


def to_colour(frame, colour, source):
    """`frame` as OpenCV decodes it (grey, BGR or BGRA) -> (H, W) grey or (H, W, 3) RGB.

    A grey file stays (H, W) for an "rgb" network too: its three channels would be equal,
    and `Preprocessing.image` makes them after the resize, on a third of the pixels (a
    3072x3072 frame's conversion and float copy cost more than its network at 704x960).
    """
    if frame.dtype not in (np.uint8, np.uint16):
        raise TfsegError(f"{source}: {frame.dtype} pixels; expected 8- or 16-bit images")
    if frame.ndim == 2:
        return frame
    return cv2.cvtColor(frame, _TO_COLOUR[colour, frame.shape[2]])


def read_video(path, colour, every=1):
    """(name, source, frame) of every `every`-th frame of a video (skipped frames are only
    grabbed, not decoded)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise TfsegError(f"{path}: unreadable video")
    index = 0
    try:
        while capture.grab():
            if index % every == 0:
                ok, frame = capture.retrieve()
                if not ok:
                    raise TfsegError(f"{path}: frame {index} cannot be decoded")
                yield f"{path.stem}_{index:06d}", f"{path} frame {index}", to_colour(
                    frame, colour, path)
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise TfsegError(f"{path}: no frames could be read from this video")


@dataclass(frozen=True)
class Sequence:
    """Frames that share one background: image files in order, or one video. `name` is the
    folder's name under a root of sequence folders ("" otherwise)."""

    images: tuple = ()
    video: Path = None
    name: str = ""

    def frames(self, colour, every=1):
        """(name, source, frame) of every `every`-th frame, in `colour`."""
        if self.video is None:
            for path in self.images[::every]:
                yield path.stem, path, read_frame(path, colour)
        else:
            yield from read_video(self.video, colour, every)

    def background(self, preprocessing):
        """The background `preprocessing` subtracts from this sequence's frames (None when
        it subtracts none): the mean of every k-th frame, image files read in parallel
        threads (OpenCV releases the GIL)."""
        every = preprocessing.steps.background_every
        if not every:
            return None
        if self.video is not None:
            return preprocessing.background(
                (source, frame) for _, source, frame in self.frames(preprocessing.colour, every))
        paths = self.images[::every]
        with ThreadPoolExecutor() as pool:
            return preprocessing.background(zip(paths, pool.map(
                partial(read_frame, colour=preprocessing.colour), paths)))
