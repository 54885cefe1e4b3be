"""tools/label_rois.py: YOLO conversion, resume, box mapping and atomic saves without a
display; a clear one-line exit 2 when there is no display or the input is bad."""

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO, assert_one_line_error, load_script

from tfseg.data.labels import read_roi_json, read_yolo, write_roi_json, write_yolo
from tfseg.utils import files
from tfseg.utils.errors import TfsegError

TOOL = REPO / "tools" / "label_rois.py"
label_rois = load_script(TOOL)

# name, (height, width), bit depth, boxes (x, y, w, h)
FRAMES = [
    ("frame_0000.bmp", (60, 90), 8, [(10, 5, 20, 12), (60, 40, 25, 15)]),
    ("frame_0001.png", (60, 90), 16, []),
    ("frame_0002.tif", (75, 50), 16, [(0, 0, 50, 75)]),
    ("frame_0003.bmp", (60, 90), 8, [(33, 21, 7, 9)]),
]


@pytest.fixture
def folder(tmp_path):
    """A folder of 8- and 16-bit BMP/PNG/TIFF frames with a YOLO file beside each."""
    folder = tmp_path / "sequence"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, (height, width), bits, boxes in FRAMES:
        dtype = np.uint8 if bits == 8 else np.uint16
        frame = rng.integers(0, np.iinfo(dtype).max, (height, width), endpoint=True)
        cv2.imwrite(str(folder / name), frame.astype(dtype))
        write_yolo((folder / name).with_suffix(".txt"), boxes, height, width)
    return folder


def run_tool(*args, **env):
    """Runs the tool from the repo root with DISPLAY and WAYLAND_DISPLAY unset (plus `env`)."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, check=False, timeout=300,
                          env={**environment, **env})


def test_without_a_display_it_says_so_in_one_line_and_exits_2(folder):
    result = run_tool(folder)
    assert_one_line_error(result, "no display")
    assert not (folder / "rois.json").exists()


@pytest.mark.skipif(Path("/tmp/.X11-unix/X99").exists(), reason="display :99 exists here")
def test_an_unreachable_display_is_reported_instead_of_aborting(folder):
    """OpenCV's Qt build aborts the process when namedWindow cannot reach the display."""
    result = run_tool(folder, DISPLAY=":99")
    assert_one_line_error(result, "cannot open an OpenCV window")


def test_from_yolo_writes_the_boxes_the_yolo_files_hold(folder):
    result = run_tool(folder, "--from-yolo")
    assert result.returncode == 0, result.stderr
    assert "wrote 4 box(es) of 4 frames" in result.stdout
    rois = read_roi_json(folder / "rois.json")
    assert list(rois) == [name for name, *_ in FRAMES]
    for name, (height, width), _, boxes in FRAMES:
        assert rois[name] == boxes
        assert rois[name] == read_yolo((folder / name).with_suffix(".txt"), height, width)


def test_from_yolo_does_not_overwrite_an_existing_list(folder):
    write_roi_json(folder / "rois.json", [("frame_0000.bmp", [(1, 2, 3, 4)])])
    result = run_tool(folder, "--from-yolo")
    assert_one_line_error(result, "rois.json: already exists")
    assert read_roi_json(folder / "rois.json") == {"frame_0000.bmp": [(1, 2, 3, 4)]}


def test_a_fully_labelled_folder_needs_no_display(folder):
    assert run_tool(folder, "--from-yolo").returncode == 0
    result = run_tool(folder)
    assert result.returncode == 0, result.stderr
    assert "all 4 frames are already in" in result.stdout


def missing_folder(folder):
    return folder / "absent", [], "absent: no such folder"


def no_frames(folder):
    for path in folder.glob("frame_*"):
        path.unlink()
    return folder, [], "no frames"


def corrupt_frame(folder):
    (folder / "frame_0001.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder, ["--from-yolo"], "frame_0001.png: unreadable or truncated image"


def bad_yolo_line(folder):
    (folder / "frame_0002.txt").write_text("0 0.5 0.5 0.2\n")
    return folder, ["--from-yolo"], "frame_0002.txt:1: expected 'class x_center"


def missing_yolo_file(folder):
    (folder / "frame_0003.txt").unlink()
    return folder, ["--from-yolo"], "frame_0003.bmp: no YOLO label file frame_0003.txt"


def bad_roi_list(folder):
    (folder / "rois.json").write_text("[[")
    return folder, [], "rois.json: not a readable JSON ROI list"


@pytest.mark.parametrize("damage", [missing_folder, no_frames, corrupt_frame, bad_yolo_line,
                                    missing_yolo_file, bad_roi_list])
def test_bad_input_is_one_line_naming_the_file_and_exit_2(folder, damage):
    path, options, expected = damage(folder)
    assert_one_line_error(run_tool(path, *options), expected)


def test_resume_picks_up_at_the_first_frame_not_in_the_list(folder):
    frames = label_rois.list_frames(folder)
    rois_path = folder / "rois.json"
    assert label_rois.unlabelled_frames(frames, label_rois.read_rois(rois_path)) == frames
    write_roi_json(rois_path, [("frame_0000.bmp", []), ("frame_0002.tif", [(1, 1, 2, 2)])])
    remaining = label_rois.unlabelled_frames(frames, label_rois.read_rois(rois_path))
    assert [p.name for p in remaining] == ["frame_0001.png", "frame_0003.bmp"]
    write_roi_json(rois_path, [(p.name, []) for p in frames])
    assert label_rois.unlabelled_frames(frames, label_rois.read_rois(rois_path)) == []


def test_display_fits_max_side_and_boxes_map_back_to_full_resolution():
    frame = np.arange(300 * 200, dtype=np.uint16).reshape(300, 200)
    image = label_rois.to_display(frame, 100)
    assert image.dtype == np.uint8 and image.shape == (100, 67)
    assert image.min() <= 1 and image.max() >= 254, "16-bit frames are stretched to 8 bits"
    assert label_rois.to_display(frame[:50, :40].astype(np.uint8), 100).shape == (50, 40)
    boxes = label_rois.to_frame_boxes([(10, 20, 30, 40), (0, 0, 67, 100), (60, 90, 30, 30),
                                       (5, 5, 0, 3)], (100, 67), (300, 200))
    assert boxes == [(30, 60, 89, 120), (0, 0, 200, 300), (179, 270, 21, 30)]


def test_labelling_saves_after_every_frame_and_resumes_after_an_interrupt(folder):
    """The display step is replaced by a function that 'draws' one box per frame."""
    frames = label_rois.list_frames(folder)
    rois_path = folder / "rois.json"
    shown = []

    def draw_one_box(image, title):
        shown.append(title.split()[0])
        saved = label_rois.read_rois(rois_path)
        assert list(saved) == [p.name for p in frames[:len(saved)]]
        if len(shown) == 3:
            raise KeyboardInterrupt   # Ctrl+C while the third frame is on screen
        height, width = image.shape[:2]
        return [(0, 0, width // 2, height // 2)]

    with pytest.raises(KeyboardInterrupt):
        label_rois.label_frames(frames, rois_path, 40, draw_one_box)
    assert list(read_roi_json(rois_path)) == ["frame_0000.bmp", "frame_0001.png"]
    assert label_rois.label_frames(frames, rois_path, 40, draw_one_box) == 2
    assert shown == [p.name for p in frames[:3]] + [p.name for p in frames[2:]]
    rois = read_roi_json(rois_path)
    for name, (height, width), *_ in FRAMES:   # half the display, mapped back
        (x, y, w, h), = rois[name]
        assert (x, y) == (0, 0) and abs(w - width / 2) <= 1.5 and abs(h - height / 2) <= 1.5
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".json"
                  or p.name.startswith(".")) == ["rois.json"]


def test_an_interrupted_save_keeps_the_previous_list_and_leaves_no_partial_file(
        folder, monkeypatch):
    rois_path = folder / "rois.json"
    write_roi_json(rois_path, [("frame_0000.bmp", [(1, 2, 3, 4)])])
    before = set(folder.iterdir())

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(TfsegError, match=r"rois.json: cannot write \(disk full\)"):
        write_roi_json(rois_path, [("frame_0000.bmp", []), ("frame_0001.png", [])])
    assert set(folder.iterdir()) == before
    assert read_roi_json(rois_path) == {"frame_0000.bmp": [(1, 2, 3, 4)]}


def proposal_file(tmp_path, entries):
    """A rois.json of proposals, as `python -m tfseg.predict --boxes` writes them."""
    (tmp_path / "predictions").mkdir(exist_ok=True)
    write_roi_json(tmp_path / "predictions" / "rois.json", entries)
    return tmp_path / "predictions" / "rois.json"


def test_proposals_open_each_frame_and_the_corrections_are_saved(folder, tmp_path):
    frames = label_rois.list_frames(folder)
    rois_path = folder / "rois.json"
    # Frame 0 gets a box reaching outside its 60x90 frame (clipped); frame 1 none; frame 2
    # its label; frame 3 is not in the file (opens empty).
    proposed = {"frame_0000.bmp": [(10, 5, 20, 12), (80, 50, 20, 20)], "frame_0001.png": [],
                "frame_0002.tif": [(0, 0, 50, 75)]}
    proposals = label_rois.load_proposals(proposal_file(tmp_path, proposed.items()), frames,
                                          rois_path)
    opened = {}

    def correct(image, title, boxes, frame_shape):
        name = title.split()[0]
        opened[name] = (list(boxes), frame_shape, image.shape)
        return boxes[:1] + [(1, 2, 3, 4)] if name == "frame_0000.bmp" else boxes

    assert label_rois.label_frames(frames, rois_path, 40, correct, proposals) == 4
    assert opened["frame_0000.bmp"][:2] == ([(10, 5, 20, 12), (80, 50, 10, 10)], (60, 90))
    assert opened["frame_0000.bmp"][2] == (27, 40)   # the display, shrunk to --max-display
    assert [opened[name][0] for name in ("frame_0001.png", "frame_0002.tif",
                                         "frame_0003.bmp")] == [[], [(0, 0, 50, 75)], []]
    assert read_roi_json(rois_path) == {"frame_0000.bmp": [(10, 5, 20, 12), (1, 2, 3, 4)],
                                        "frame_0001.png": [], "frame_0002.tif": [(0, 0, 50, 75)],
                                        "frame_0003.bmp": []}


def test_a_yolo_folder_of_proposals_is_read_by_frame_name_at_each_frame_size(folder):
    frames = label_rois.list_frames(folder)
    (folder / "classes.txt").write_text("sample\n")   # YOLO's class list: not a frame's
    (folder / "frame_0001.txt").unlink()               # no proposal: opens empty
    proposals = label_rois.load_proposals(folder, frames, folder / "rois.json")
    assert sorted(proposals) == ["frame_0000.bmp", "frame_0002.tif", "frame_0003.bmp"]
    for name, (height, width), _, boxes in FRAMES:
        expected = [] if name == "frame_0001.png" else boxes
        assert label_rois.proposal_boxes(proposals, name, (height, width)) == (expected, 0)


def unknown_frame(folder, tmp_path):
    return proposal_file(tmp_path, [("frame_0000.bmp", []), ("other.bmp", []),
                                    ("more.bmp", [])]), "'other.bmp' (and 1 more) is not in"


def no_matching_yolo(folder, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "classes.txt").write_text("sample\n")
    return tmp_path / "empty", "no YOLO .txt file named after a frame"


def bad_yolo_proposal(folder, tmp_path):
    (folder / "frame_0003.txt").write_text("0 0.5 0.5 1.5 0.2\n")
    return folder, "frame_0003.txt:1: coordinates must be normalised"


def missing_proposals(folder, tmp_path):
    return tmp_path / "nowhere.json", "nowhere.json: no such file or folder"


def malformed_proposals(folder, tmp_path):
    (tmp_path / "bad.json").write_text('{"frame_0000.bmp": [[1, 2, 3]]}')
    return tmp_path / "bad.json", "expected a box [x, y, w, h] of 4 integers"


def the_list_being_written(folder, tmp_path):
    write_roi_json(folder / "rois.json", [])
    return folder / "rois.json", "is the ROI list being written"


@pytest.mark.parametrize("damage", [unknown_frame, no_matching_yolo, bad_yolo_proposal,
                                    missing_proposals, malformed_proposals,
                                    the_list_being_written])
def test_bad_proposals_are_refused_naming_the_file(folder, tmp_path, damage):
    path, expected = damage(folder, tmp_path)
    with pytest.raises(TfsegError, match=re.escape(expected)):
        label_rois.load_proposals(path, label_rois.list_frames(folder), folder / "rois.json")


@pytest.mark.slow   # three runs of the tool, ~0.7 s each
def test_proposals_are_checked_before_the_display_in_one_line(folder, tmp_path):
    path, expected = unknown_frame(folder, tmp_path)
    assert_one_line_error(run_tool(folder, "--proposals", path), expected)
    good = proposal_file(tmp_path, [("frame_0000.bmp", [(1, 2, 3, 4)])])
    assert_one_line_error(run_tool(folder, "--proposals", good), "no display")
    result = run_tool(folder, "--proposals", good, "--from-yolo")
    assert result.returncode == 2 and "give one of them" in result.stderr
    assert not (folder / "rois.json").exists()


def test_the_box_editor_draws_deletes_undoes_and_keeps_proposals_exact():
    # A 300x200 frame shown at 100x67: boxes stay in frame pixels.
    editor = label_rois.BoxEditor([(0, 0, 120, 150), (0, 0, 10, 10)], (100, 67), (300, 200))
    editor.mouse(cv2.EVENT_RBUTTONDOWN, 1, 1)            # in both: the smaller one goes
    assert editor.boxes == [(0, 0, 120, 150)]
    for event, x, y in ((cv2.EVENT_LBUTTONDOWN, 50, 80), (cv2.EVENT_MOUSEMOVE, 60, 90),
                        (cv2.EVENT_LBUTTONUP, 60, 95)):
        editor.mouse(event, x, y)
    assert editor.boxes == [(0, 0, 120, 150), (149, 240, 30, 45)]
    assert editor.render(np.zeros((100, 67), np.uint8)).shape == (100, 67, 3)
    editor.mouse(cv2.EVENT_LBUTTONDOWN, 5, 5)
    editor.mouse(cv2.EVENT_LBUTTONUP, 6, 30)            # 1 pixel wide: a click, no box
    editor.mouse(cv2.EVENT_RBUTTONDOWN, 66, 0)          # on no box: nothing
    assert len(editor.boxes) == 2 and not editor.key(ord("z"))
    assert editor.boxes == [(0, 0, 120, 150)]
    assert not editor.key(ord("c")) and editor.boxes == []
    assert not editor.key(ord("r")) and editor.boxes == [(0, 0, 120, 150), (0, 0, 10, 10)]
    assert not editor.key(8) and editor.boxes == []      # backspace undoes too
    assert all(editor.key(key) for key in (13, 10, 32, 27))
