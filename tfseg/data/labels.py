"""The two on-disk box-label formats of interferogram data sets (reference/DATA.md).

- ROI lists, as the seed's labelling tool saved them: a JSON list of `[frame file, boxes]`
  pairs, or a mapping `{frame file: boxes}`, each box `[x, y, w, h]` in pixels (the
  `cv2.selectROI` convention).
- YOLO text files beside the frames (`frame.txt` for `frame.bmp`): one box per line,
  `class x_center y_center width height`, normalised to 0..1.

Readers raise `TfsegError` naming the file (and entry or line) and what was expected.
"""

import json
from pathlib import Path

from tfseg.utils.errors import TfsegError
from tfseg.utils.files import check_regular_file, write_text_atomic

ROI_FILE = "rois.json"   # a sequence folder's ROI list


def write_roi_json(path, entries):
    """Writes `[(frame file name, [(x, y, w, h), ...]), ...]` as a JSON ROI list.

    Atomic: an interrupted write never leaves a truncated list.
    """
    data = [[str(name), [[int(v) for v in box] for box in boxes]] for name, boxes in entries]
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def read_roi_json(path):
    """Reads a JSON ROI file into {frame file name: [(x, y, w, h), ...]}: a list of
    `[frame file, boxes]` pairs, or a mapping `{frame file: boxes}`; a frame listed twice is
    an error (never only its last entry kept)."""
    path = Path(path)
    check_regular_file(path, "a JSON ROI file")
    try:
        data = json.loads(path.read_text(), object_pairs_hook=_unique_keys)
    except _DuplicateKey as duplicate:
        raise TfsegError(f"{path}: frame {duplicate.args[0]!r} is listed twice (expected one "
                         f"entry per frame)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TfsegError(f"{path}: not a readable JSON ROI list ({error})") from None
    if isinstance(data, dict):
        return {name: _boxes(boxes, f"{path}: frame {name!r}") for name, boxes in data.items()}
    if not isinstance(data, list):
        raise TfsegError(f"{path}: expected a list of [frame file, boxes] pairs or a mapping "
                         f"{{frame file: boxes}}")
    rois = {}
    for index, entry in enumerate(data):
        where = f"{path}: entry {index}"
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise TfsegError(f"{where}: expected [frame file, [[x, y, w, h], ...]], "
                             f"got {entry!r}")
        if entry[0] in rois:
            raise TfsegError(f"{where}: frame {entry[0]!r} is listed twice (expected one "
                             f"entry per frame)")
        rois[entry[0]] = _boxes(entry[1], f"{where} ({entry[0]})")
    return rois


class _DuplicateKey(Exception):
    """A JSON object with a key twice (`json` would keep only the last)."""


def _unique_keys(pairs):
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)
    return dict(pairs)


def write_yolo(path, boxes, height, width, class_id=0):
    """Writes pixel boxes (x, y, w, h) of a height x width frame as a YOLO text file
    (atomically; no box: an empty file, a frame without samples)."""
    lines = [f"{class_id} {(x + w / 2) / width:.6f} {(y + h / 2) / height:.6f} "
             f"{w / width:.6f} {h / height:.6f}" for x, y, w, h in boxes]
    write_text_atomic(path, "".join(line + "\n" for line in lines))


def read_yolo_normalised(path):
    """Reads a YOLO text file into normalised (x_center, y_center, width, height) boxes."""
    path = Path(path)
    check_regular_file(path, "a YOLO label file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise TfsegError(f"{path}: not a readable YOLO label file ({error})") from None
    boxes = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            class_id, cx, cy, w, h = (float(f) for f in fields)
        except ValueError:
            raise TfsegError(f"{path}:{number}: expected 'class x_center y_center width "
                             f"height', got {line!r}") from None
        if class_id != 0:   # nan too
            raise TfsegError(f"{path}:{number}: class id must be 0 (boxes mark the one "
                             f"sample class), got {fields[0]!r}")
        if not all(0.0 <= v <= 1.0 for v in (cx, cy, w, h)):
            raise TfsegError(f"{path}:{number}: coordinates must be normalised to 0..1, "
                             f"got {line!r}")
        boxes.append((cx, cy, w, h))
    return boxes


def read_yolo(path, height, width):
    """Reads a YOLO text file into pixel boxes (x, y, w, h) for a height x width frame."""
    return [yolo_to_pixels(box, height, width) for box in read_yolo_normalised(path)]


def yolo_to_pixels(box, height, width):
    """A normalised YOLO (x_center, y_center, w, h) box -> pixel (x, y, w, h)."""
    cx, cy, w, h = box
    return (round((cx - w / 2) * width), round((cy - h / 2) * height), round(w * width),
            round(h * height))


def _boxes(boxes, where):
    if not isinstance(boxes, list):
        raise TfsegError(f"{where}: expected a list of boxes [[x, y, w, h], ...], got "
                         f"{boxes!r}")
    return [_box(box, where) for box in boxes]


def _box(box, where):
    if not (isinstance(box, list) and len(box) == 4
            and all(isinstance(v, int) and not isinstance(v, bool) for v in box)):
        raise TfsegError(f"{where}: expected a box [x, y, w, h] of 4 integers, got {box!r}")
    return tuple(box)
