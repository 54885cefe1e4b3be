"""Both label formats round-trip, and malformed files are refused naming file and place."""

import os
import re
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest
from conftest import REPO

from tfseg.data.labels import read_roi_json, read_yolo, write_roi_json, write_yolo
from tfseg.utils.errors import TfsegError

BOXES = [(10, 20, 30, 15), (0, 0, 5, 7)]


def test_roi_json_round_trip(tmp_path):
    write_roi_json(tmp_path / "rois.json", [("a.bmp", BOXES), ("b.bmp", [])])
    assert read_roi_json(tmp_path / "rois.json") == {"a.bmp": BOXES, "b.bmp": []}


def test_yolo_round_trip_is_pixel_exact(tmp_path):
    write_yolo(tmp_path / "a.txt", BOXES, height=97, width=131)
    assert read_yolo(tmp_path / "a.txt", height=97, width=131) == BOXES


@pytest.mark.parametrize("content,expected", [
    ("{not json", "not a readable JSON ROI list"),
    ('7', "expected a list of [frame file, boxes] pairs or a mapping {frame file: boxes}"),
    ('{"a.bmp": 5}', "frame 'a.bmp': expected a list of boxes [[x, y, w, h], ...], got 5"),
    ('[["a.bmp", [[1, 2, 3]]]]', "entry 0 (a.bmp): expected a box [x, y, w, h] of 4 integers"),
    ('[["a.bmp"]]', "entry 0: expected [frame file, [[x, y, w, h], ...]]"),
])
def test_bad_roi_json_is_refused(tmp_path, content, expected):
    (tmp_path / "rois.json").write_text(content)
    with pytest.raises(TfsegError, match="rois.json") as caught:
        read_roi_json(tmp_path / "rois.json")
    assert expected in str(caught.value)


@pytest.mark.parametrize("line,expected", [
    ("0 0.5 0.5 0.2", "a.txt:2: expected 'class x_center y_center width height'"),
    ("0 0.5 0.5 1.2 0.1", "a.txt:2: coordinates must be normalised to 0..1"),
])
def test_bad_yolo_line_is_refused_with_line_number(tmp_path, line, expected):
    (tmp_path / "a.txt").write_text(f"0 0.5 0.5 0.1 0.1\n{line}\n")
    with pytest.raises(TfsegError) as caught:
        read_yolo(tmp_path / "a.txt", 100, 100)
    assert expected in str(caught.value)


@pytest.mark.slow  # over 5 s: the fast tier keeps its 3-minute budget
def test_make_interferograms_writes_the_on_disk_format(tmp_path):
    out = tmp_path / "set"
    command = [sys.executable, str(REPO / "tools" / "make_interferograms.py"), "--out",
               str(out), "--sequences", "2", "--frames", "3", "--size", "96x128",
               "--fringes", "10", "--seed", "4"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    folders = sorted(out.iterdir())
    assert [f.name for f in folders] == ["sequence_000", "sequence_001"]
    rois = read_roi_json(folders[0] / "rois.json")
    assert sorted(rois) == ["frame_0000.bmp", "frame_0001.bmp", "frame_0002.bmp"]
    frame = cv2.imread(str(folders[0] / "frame_0001.bmp"), cv2.IMREAD_UNCHANGED)
    assert frame.shape == (96, 128) and frame.dtype == np.uint8
    assert read_yolo(folders[0] / "frame_0001.txt", 96, 128) == rois["frame_0001.bmp"]
    again = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.mark.parametrize("name,read", [
    ("rois.json", read_roi_json),
    ("frame.txt", lambda path: read_yolo(path, 10, 10)),
])
def test_a_fifo_as_label_file_is_refused_without_opening_it(tmp_path, name, read):
    """Opening a FIFO blocks until a writer comes: the reader must refuse it unopened. It
    runs in a thread, so a reader that opens the FIFO fails this test instead of hanging."""
    os.mkfifo(tmp_path / name)
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(raised(read, tmp_path / name)),
                              daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert outcome, "the reader opened the FIFO and blocked"
    assert isinstance(outcome[0], TfsegError)
    assert re.search(f"{name}: not a regular file .*; expected a", str(outcome[0]))


def raised(function, *args):
    """The exception `function(*args)` raises, or None."""
    try:
        function(*args)
    except Exception as error:   # the test inspects whatever it is
        return error
    return None
