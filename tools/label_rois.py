#!/usr/bin/env python
"""Draws sample boxes on a folder of interferogram frames into its JSON ROI list (rois.json).

The seed's labelling workflow (reference/DATA.md): each frame not yet in the list is shown,
scaled to fit --max-display pixels, and the boxes drawn on it with OpenCV's selectROIs are
mapped back to full-resolution pixels and appended to the list, which is saved (atomically)
after every frame; started again, the tool picks up at the first frame not in the list.
With --from-yolo it instead converts the YOLO .txt files beside the frames into the list (no
display needed). With --proposals PATH each frame opens with the boxes of PATH to correct
instead of none: a rois.json, or a folder of YOLO .txt files named after the frames, such as
`python -m tfseg.predict --boxes` writes (boxes reaching outside a frame are clipped to it;
a frame without proposals opens empty). Examples:

    python tools/label_rois.py data/interferograms/sequence_000
    python tools/label_rois.py data/interferograms/sequence_000 --from-yolo
    python tools/label_rois.py data/interferograms/sequence_000 --proposals predictions/

With --proposals, the window shows the boxes (green): drag to draw a box, right-click in a
box to delete it (the smallest one under the pointer), z undoes, r restores the proposals,
c clears, and ENTER, SPACE or ESC saves the frame as shown. Closing the window or Ctrl+C in
this terminal stops without saving the frame on screen.

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
from tfseg.data.labels import (
    ROI_FILE,
    read_roi_json,
    read_yolo,
    read_yolo_normalised,
    write_roi_json,
    yolo_to_pixels,
)
from tfseg.data.sequences import FRAME_SUFFIXES, frame_files
from tfseg.utils.errors import TfsegError
from tfseg.utils.images import read_unchanged

WINDOW = "label_rois"
HOW_TO_DRAW = __doc__.split("\n\n")[-1].strip()
HOW_TO_CORRECT = __doc__.split("\n\n")[-2].strip()
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


def load_proposals(path, frames, rois_path):
    """The starting boxes of --proposals `path` for `frames`: {frame file name: (x, y, w, h)
    pixel boxes, or ("yolo", normalised boxes) converted once the frame's size is known}.

    `path` is a JSON ROI list (either form `tfseg.data.labels.read_roi_json` reads) naming
    frames of the folder only, or a folder whose YOLO files named after frames (`<stem>.txt`)
    are read; other .txt files there (a YOLO classes.txt) are left alone. Raises TfsegError
    (one line, naming the file) for anything else.
    """
    path = Path(path)
    if not path.exists():
        raise TfsegError(f"{path}: no such file or folder (--proposals takes a {ROI_FILE} "
                         f"or a folder of YOLO .txt files)")
    if path.resolve() == Path(rois_path).resolve():
        raise TfsegError(f"{path}: is the ROI list being written; --proposals needs the "
                         f"boxes from elsewhere (e.g. python -m tfseg.predict --boxes)")
    names = {frame.name for frame in frames}
    if path.is_dir():
        proposals = {}
        for frame in frames:
            label = path / f"{frame.stem}.txt"
            if label.exists():
                proposals[frame.name] = ("yolo", read_yolo_normalised(label))
        if not proposals:
            raise TfsegError(f"{path}: no YOLO .txt file named after a frame of "
                             f"{frames[0].parent} (expected e.g. {frames[0].stem}.txt)")
        return proposals
    proposals = read_roi_json(path)
    strangers = [name for name in proposals if name not in names]
    if strangers:
        more = f" (and {len(strangers) - 1} more)" if len(strangers) > 1 else ""
        raise TfsegError(f"{path}: frame {strangers[0]!r}{more} is not in "
                         f"{frames[0].parent}; proposals of another folder?")
    return proposals


def proposal_boxes(proposals, name, frame_shape):
    """The pixel boxes proposed for frame `name` of `frame_shape` (H, W), clipped to the
    frame, empty ones dropped: (boxes, how many were clipped or dropped)."""
    boxes = proposals.get(name, [])
    if isinstance(boxes, tuple) and boxes and boxes[0] == "yolo":
        boxes = [yolo_to_pixels(box, *frame_shape[:2]) for box in boxes[1]]
    fitted = to_frame_boxes(boxes, frame_shape[:2], frame_shape[:2])
    return fitted, sum(tuple(box) not in fitted for box in boxes)


class BoxEditor:
    """The boxes of one frame under correction, kept in frame pixels (a box left alone is
    saved exactly as proposed); drawn and hit on a display of another scale. The window
    feeds it mouse events and keys (`edit_on_screen`); tests feed them by hand."""

    DONE_KEYS = (13, 10, 32, 27)   # ENTER (CR, LF), SPACE, ESC
    MIN_DRAG = 3                   # display pixels: a shorter drag is a click, not a box

    def __init__(self, boxes, display_shape, frame_shape):
        self.proposed = [tuple(box) for box in boxes]
        self.boxes = list(self.proposed)
        self.display_shape, self.frame_shape = display_shape[:2], frame_shape[:2]
        self.history, self.anchor, self.pointer = [], None, None

    def _change(self, boxes):
        self.history.append(self.boxes)
        self.boxes = boxes

    def mouse(self, event, x, y):
        """A mouse event at display pixel (x, y) (cv2.setMouseCallback's first three)."""
        if event == cv2.EVENT_LBUTTONDOWN:
            self.anchor = self.pointer = (x, y)
        elif event == cv2.EVENT_MOUSEMOVE and self.anchor is not None:
            self.pointer = (x, y)
        elif event == cv2.EVENT_LBUTTONUP and self.anchor is not None:
            (x0, y0), self.anchor = self.anchor, None
            if abs(x - x0) >= self.MIN_DRAG and abs(y - y0) >= self.MIN_DRAG:
                drawn = (min(x, x0), min(y, y0), abs(x - x0), abs(y - y0))
                self._change(self.boxes + to_frame_boxes([drawn], self.display_shape,
                                                         self.frame_shape))
        elif event == cv2.EVENT_RBUTTONDOWN:
            fx = x * self.frame_shape[1] / self.display_shape[1]
            fy = y * self.frame_shape[0] / self.display_shape[0]
            under = [box for box in self.boxes
                     if box[0] <= fx < box[0] + box[2] and box[1] <= fy < box[1] + box[3]]
            if under:
                smallest = min(under, key=lambda box: box[2] * box[3])
                self._change([box for box in self.boxes if box is not smallest])

    def key(self, key):
        """A key code (cv2.waitKey & 0xFF): True when the frame is done."""
        if key in self.DONE_KEYS:
            return True
        if key in (ord("z"), 8) and self.history:   # z or backspace: undo
            self.boxes = self.history.pop()
        elif key == ord("r"):
            self._change(list(self.proposed))
        elif key == ord("c"):
            self._change([])
        return False

    def render(self, image):
        """BGR display image with the boxes (green) and the box being drawn (yellow)."""
        shown = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
        scale_x = self.display_shape[1] / self.frame_shape[1]
        scale_y = self.display_shape[0] / self.frame_shape[0]
        for x, y, w, h in self.boxes:
            cv2.rectangle(shown, (round(x * scale_x), round(y * scale_y)),
                          (round((x + w) * scale_x) - 1, round((y + h) * scale_y) - 1),
                          (0, 255, 0), 1)
        if self.anchor is not None:
            cv2.rectangle(shown, self.anchor, self.pointer, (0, 255, 255), 1)
        return shown


def edit_on_screen(image, title, boxes, frame_shape):
    """Shows `image` with `boxes` (frame pixels) for correction (`BoxEditor`) and returns
    the boxes kept, in frame pixels. Closing the window stops like Ctrl+C."""
    editor = BoxEditor(boxes, image.shape, frame_shape)
    cv2.setWindowTitle(WINDOW, title)
    cv2.setMouseCallback(WINDOW, lambda event, x, y, flags, param: editor.mouse(event, x, y))
    while True:
        cv2.imshow(WINDOW, editor.render(image))
        key = cv2.waitKey(20)
        if key != -1 and editor.key(key & 0xFF):
            return editor.boxes
        if cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
            raise KeyboardInterrupt


def label_frames(frames, rois_path, max_side, select_boxes, proposals=None):
    """Labels the frames not yet in the ROI list at `rois_path`, saving it after each frame.

    Args:
        frames: list of Path. All frames of the folder, in order.
        rois_path: Path. The JSON ROI list; created if missing, else appended to.
        max_side: int. Largest displayed side, in pixels.
        select_boxes: callable (display image, window title) -> boxes (x, y, w, h) drawn on
            that image: the only step that needs a display. With `proposals`: callable
            (display image, window title, proposed frame boxes, frame shape) -> the frame
            boxes kept (`edit_on_screen`).
        proposals: optional, from `load_proposals`: each frame's starting boxes.

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
        if proposals is None:
            drawn = select_boxes(image, f"{path.name} ({progress}): boxes, then ESC")
            boxes = to_frame_boxes(drawn, image.shape[:2], frame.shape[:2])
        else:
            proposed, clipped = proposal_boxes(proposals, path.name, frame.shape)
            if clipped:
                print(f"{path.name}: {clipped} proposed box(es) reached outside the frame: "
                      f"clipped or dropped", flush=True)
            boxes = select_boxes(image, f"{path.name} ({progress}): correct, then ENTER",
                                 proposed, frame.shape[:2])
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
    parser.add_argument("--proposals", type=Path, metavar="PATH",
                        help="start each frame from these boxes, to correct: a rois.json or "
                        "a folder of YOLO .txt files (python -m tfseg.predict --boxes)")
    args = parser.parse_args(argv)
    if args.max_display < 16:
        parser.error(f"--max-display must be >= 16 pixels, got {args.max_display}")
    if args.from_yolo and args.proposals:
        parser.error("--from-yolo converts labels without a window; --proposals opens boxes "
                     "for correction in one: give one of them")
    rois_path = args.rois or args.folder / ROI_FILE
    frames = list_frames(args.folder)
    proposals = args.proposals and load_proposals(args.proposals, frames, rois_path)
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
    print(f"{remaining} of {len(frames)} frames to label. "
          f"{HOW_TO_DRAW if proposals is None else HOW_TO_CORRECT}")
    try:
        labelled = label_frames(frames, rois_path, args.max_display,
                                select_on_screen if proposals is None else edit_on_screen,
                                proposals)
    except KeyboardInterrupt:
        print(f"stopped; {rois_path} holds every frame labelled so far: run again to resume")
        return 130
    finally:
        cv2.destroyAllWindows()
    print(f"done: {labelled} frame(s) labelled, {rois_path} lists all {len(frames)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
