#!/usr/bin/env python
"""Draws sample boxes on a folder of interferogram frames into its JSON ROI list (rois.json).

The seed's labelling workflow (reference/DATA.md): each frame not yet in the list is shown,
scaled to fit --max-display pixels, and the boxes drawn on it with OpenCV's selectROIs are
mapped back to full-resolution pixels and appended to the list, which is saved (atomically)
after every frame; started again, the tool picks up at the first frame not in the list.
With --from-yolo it instead converts the YOLO .txt files beside the frames into the list (no
display needed). Examples:

    python tools/label_rois.py data/interferograms/sequence_000
    python tools/label_rois.py data/interferograms/sequence_000 --from-yolo

In the window: drag a box and press SPACE or ENTER to keep it (c cancels it; a box not kept
is dropped), draw the next one, and press ESC when the frame is done (ESC alone: the frame has
no sample). To stop, press Ctrl+C in this terminal, then ESC in the window: the frame on
screen is not saved, and running the tool again resumes there.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import cv2

from tfseg.cli import run_cli
from tfseg.data.labels import ROI_FILE, read_roi_json, read_yolo, write_roi_json
from tfseg.data.sequences import FRAME_SUFFIXES, frame_files
from tfseg.utils.errors import TfsegError
from tfseg.utils.images import read_unchanged

WINDOW = "label_rois"
HOW_TO_DRAW = __doc__.split("\n\n")[-1].strip()
# OpenCV's Qt build aborts the process, with no exception to catch, when it cannot open a
# window; a child process tries first.
WINDOW_PROBE = f"import cv2; cv2.namedWindow({WINDOW!r}); cv2.destroyAllWindows()"


def list_frames(folder):
    """The frame files of `folder` as training reads them (`tfseg.data.sequences.frame_files`);
    TfsegError if it is missing or has none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TfsegError(f"{folder}: no such folder (expected a folder of frames)")
    frames = frame_files(folder)
    if not frames:
        raise TfsegError(f"{folder}: no frames ({', '.join(FRAME_SUFFIXES)} files) in it")
    return frames


def read_rois(rois_path):
    """The ROI list at `rois_path` as {frame file name: boxes}; empty if there is none yet."""
    return read_roi_json(rois_path) if rois_path.exists() else {}


def unlabelled_frames(frames, rois):
    """The frames whose file name is not in the ROI list `rois`, in order: where to resume."""
    return [path for path in frames if path.name not in rois]


def to_display(frame, max_side):
    """`frame` as 8-bit (16-bit min-max stretched) and shrunk so neither side exceeds
    `max_side` pixels; never enlarged."""
    if frame.dtype != "uint8":
        frame = cv2.normalize(frame, None, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U)
    height, width = frame.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale == 1.0:
        return frame
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def to_frame_boxes(boxes, display_shape, frame_shape):
    """Boxes (x, y, w, h) drawn on a display image -> full-resolution pixel boxes, clipped to
    the frame; boxes that vanish (zero width or height) are dropped."""
    scale_y = frame_shape[0] / display_shape[0]
    scale_x = frame_shape[1] / display_shape[1]
    frame_boxes = []
    for x, y, w, h in boxes:
        left = min(max(round(x * scale_x), 0), frame_shape[1])
        right = min(max(round((x + w) * scale_x), 0), frame_shape[1])
        top = min(max(round(y * scale_y), 0), frame_shape[0])
        bottom = min(max(round((y + h) * scale_y), 0), frame_shape[0])
        if right > left and bottom > top:
            frame_boxes.append((left, top, right - left, bottom - top))
    return frame_boxes


def label_frames(frames, rois_path, max_side, select_boxes):
    """Labels the frames not yet in the ROI list at `rois_path`, saving it after each frame.

    Args:
        frames: list of Path. All frames of the folder, in order.
        rois_path: Path. The JSON ROI list; created if missing, else appended to.
        max_side: int. Largest displayed side, in pixels.
        select_boxes: callable (display image, window title) -> boxes (x, y, w, h) drawn on
            that image: the only step that needs a display.

    Returns:
        The number of frames labelled.
    """
    rois = read_rois(rois_path)
    entries = list(rois.items())
    todo = unlabelled_frames(frames, rois)
    for number, path in enumerate(todo, start=1):
        frame = read_unchanged(path)
        image = to_display(frame, max_side)
        progress = f"{number}/{len(todo)}"
        drawn = select_boxes(image, f"{path.name} ({progress}): boxes, then ESC")
        boxes = to_frame_boxes(drawn, image.shape[:2], frame.shape[:2])
        entries.append((path.name, boxes))
        write_roi_json(rois_path, entries)
        print(f"{path.name}: {len(boxes)} box(es) saved ({progress})", flush=True)
    return len(todo)


def select_on_screen(image, title):
    """Shows `image` and returns the boxes drawn on it with cv2.selectROIs."""
    cv2.setWindowTitle(WINDOW, title)
    boxes = cv2.selectROIs(WINDOW, image, showCrosshair=True, fromCenter=False,
                           printNotice=False)
    return [tuple(int(v) for v in box) for box in boxes]


def open_window():
    """Opens the labelling window; TfsegError (one line) when there is no usable display."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        raise TfsegError("no display (DISPLAY and WAYLAND_DISPLAY are unset): drawing boxes "
                         "needs a screen; --from-yolo converts YOLO files without one")
    try:
        probe = subprocess.run([sys.executable, "-c", WINDOW_PROBE], capture_output=True,
                               text=True, check=False, timeout=120)
    except subprocess.TimeoutExpired:
        raise TfsegError("cannot open an OpenCV window: no answer from the display "
                         "within 120 s") from None
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or [f"exit status {probe.returncode}"])[0]
        raise TfsegError(f"cannot open an OpenCV window on this display ({reason})")
    cv2.namedWindow(WINDOW, cv2.WINDOW_AUTOSIZE)


def convert_yolo(frames, rois_path):
    """Writes the boxes of the YOLO files beside `frames` as the ROI list `rois_path`."""
    if rois_path.exists():
        raise TfsegError(f"{rois_path}: already exists; move it away to convert the YOLO "
                         f"files (it may hold hand-drawn boxes)")
    entries = []
    for path in frames:
        label_path = path.with_suffix(".txt")
        if not label_path.exists():
            raise TfsegError(f"{path}: no YOLO label file {label_path.name} beside it (an "
                             f"empty file means no sample)")
        height, width = read_unchanged(path).shape[:2]
        entries.append((path.name, read_yolo(label_path, height, width)))
    write_roi_json(rois_path, entries)
    return entries


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder of frames (BMP, PNG, TIFF)")
    parser.add_argument("--rois", type=Path,
                        help=f"JSON ROI list to write (default: FOLDER/{ROI_FILE})")
    parser.add_argument("--max-display", type=int, default=1000,
                        help="largest displayed side in pixels (default: 1000)")
    parser.add_argument("--from-yolo", action="store_true",
                        help="convert the YOLO .txt files beside the frames instead")
    args = parser.parse_args(argv)
    if args.max_display < 16:
        parser.error(f"--max-display must be >= 16 pixels, got {args.max_display}")
    rois_path = args.rois or args.folder / ROI_FILE
    frames = list_frames(args.folder)
    if args.from_yolo:
        entries = convert_yolo(frames, rois_path)
        boxes = sum(len(frame_boxes) for _, frame_boxes in entries)
        print(f"wrote {boxes} box(es) of {len(entries)} frames to {rois_path}")
        return 0
    remaining = len(unlabelled_frames(frames, read_rois(rois_path)))
    if not remaining:
        print(f"all {len(frames)} frames are already in {rois_path}")
        return 0
    open_window()
    print(f"{remaining} of {len(frames)} frames to label. {HOW_TO_DRAW}")
    try:
        labelled = label_frames(frames, rois_path, args.max_display, select_on_screen)
    except KeyboardInterrupt:
        print(f"stopped; {rois_path} holds every frame labelled so far: run again to resume")
        return 130
    finally:
        cv2.destroyAllWindows()
    print(f"done: {labelled} frame(s) labelled, {rois_path} lists all {len(frames)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
