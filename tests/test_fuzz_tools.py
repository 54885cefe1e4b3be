"""Bad and hostile input to the tools (issue 19, parts 3 and 5), as a table: every row builds
its files, runs the tool's main(argv) in-process and checks the exit status, the one-line
message, and that no file or folder was added, changed or left half-written (earlier outputs
included). FIFOs are refused unopened: a test that opened one would time out."""

import hashlib
import io
import json
import os

import cv2
import numpy as np
import onnx
import pytest
from conftest import write_plain_onnx
from test_opencv_segment import load_tool

from tfseg.cli import run_cli
from tfseg.data import synthetic_folders
from tfseg.utils.errors import TfsegError

FIFO, FOLDER = "<fifo>", "<folder>"
GOOD_EPOCH = {"epoch": 1, "train_loss": 1.0, "validation_loss": 1.2, "validation_mean_iou": 0.5}
plot_history, make_interferograms, convert_weights, opencv_segment = (
    load_tool(name) for name in ("plot_history", "make_interferograms",
                                 "convert_resnet18_weights", "opencv_segment"))


def history(*entries):
    return json.dumps({"history": list(entries)})


def npz(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def png(height, width, dtype=np.uint8, suffix=".png"):
    return cv2.imencode(suffix, np.full((height, width), 100, dtype))[1].tobytes()


def tiny_export(path):
    """Writes an identity network with one-class tfseg metadata for 8x8 inputs cropped at
    (2, 2) from 12x12 frames to `path`: an export OpenCV runs in milliseconds."""
    steps = {"blur": 0, "background_every": 0, "background_alpha": 0.0,
             "clahe_clip_limit": 0.0, "clahe_tile_grid": 8, "crop": [2, 2, 8, 8],
             "colour": "gray", "eight_bit": False, "resize_to": [], "interpolation": "area"}
    proto = onnx.load(str(write_plain_onnx(path)))
    onnx.helper.set_model_props(proto, {
        "task": "segmentation", "layout": "NCHW", "input_size": "8x8",
        "class_colours": "[[0, 0, 0]]", "preprocessing": json.dumps(steps)})
    onnx.save(proto, str(path))


def make_files(root, files):
    """Makes `files` {relative path: text, bytes, FIFO, FOLDER or a function writing the
    file at the path it is given} under `root`."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == FIFO:
            os.mkfifo(path)
        elif content == FOLDER:
            path.mkdir()
        elif callable(content):
            content(path)
        else:
            path.write_bytes(content.encode() if isinstance(content, str) else content)


def snapshot(root):
    """{path: sha256, or None for a folder or FIFO} of everything under `root`."""
    return {path: hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
            for path in sorted(root.rglob("*"))}


RUN = {"run/config.yaml": "model: {}\n", "run/curves.png": b"the previous figure"}
DATA_SET = {"data/sequence_000/frame_0000.bmp": png(16, 16, suffix=".bmp"),
            "data/sequence_000/rois.json": "[]\n"}
EARLIER_WEIGHTS = {"weights/resnet18.weights.h5": b"earlier weights"}


def new_weights(root):
    return root / "weights" / "new.weights.h5"


# (id, tool's main, files, argv(root), message fragments). Each exits 2 with one line.
CASES = [
    ("plot-not-json", plot_history.main, {**RUN, "run/metrics.json": "{'history': []"},
     lambda r: [r / "run"], ["run/metrics.json: not a readable JSON file"]),
    ("plot-binary", plot_history.main, {**RUN, "run/metrics.json": b"\xff\xfe\x00"},
     lambda r: [r / "run"], ["metrics.json: not a readable JSON file ('utf-8' codec"]),
    ("plot-a-list", plot_history.main, {**RUN, "run/metrics.json": "[1, 2]"},
     lambda r: [r / "run"], ["metrics.json: expected a JSON object whose 'history' is a list"]),
    ("plot-history-text", plot_history.main, {**RUN, "run/metrics.json": '{"history": "x"}'},
     lambda r: [r / "run"], ["metrics.json: expected a JSON object whose 'history'"]),
    ("plot-no-epoch-yet", plot_history.main, {**RUN, "run/metrics.json": history()},
     lambda r: [r / "run"], ["metrics.json: the run has no finished epoch yet"]),
    ("plot-no-score", plot_history.main, {**RUN, "run/metrics.json": history({"epoch": 1})},
     lambda r: [r / "run"], ["no score to plot; expected one of validation_mean_iou, "
                             "validation_psnr_y"]),
    ("plot-epoch-without-loss", plot_history.main,
     {**RUN, "run/metrics.json": history(GOOD_EPOCH, {"epoch": 2, "validation_mean_iou": 1})},
     lambda r: [r / "run"], ["metrics.json: history[1] has no train_loss"]),
    ("plot-score-as-text", plot_history.main,
     {**RUN, "run/metrics.json": history({**GOOD_EPOCH, "validation_mean_iou": "0.5"})},
     lambda r: [r / "run"], ["history[0] validation_mean_iou='0.5'; expected a number (or "
                             "null)"]),
    ("plot-infinite-loss", plot_history.main,
     {**RUN, "run/metrics.json": history({**GOOD_EPOCH, "train_loss": float("inf")})},
     lambda r: [r / "run"], ["history[0] train_loss=inf; expected a number"]),
    ("plot-epoch-null", plot_history.main,
     {**RUN, "run/metrics.json": history({**GOOD_EPOCH, "epoch": None})},
     lambda r: [r / "run"], ["history[0] epoch=None; expected a number"]),
    ("plot-metrics-fifo", plot_history.main, {**RUN, "run/metrics.json": FIFO},
     lambda r: [r / "run"], ["run/metrics.json: not a regular file"]),
    ("plot-metrics-folder", plot_history.main, {**RUN, "run/metrics.json": FOLDER},
     lambda r: [r / "run"], ["run/metrics.json: not a regular file"]),
    ("plot-truncated-state", plot_history.main,
     {**RUN, "run/checkpoints/state-40.json": history(GOOD_EPOCH)[:30],
      "run/checkpoints/state-20.json": history(GOOD_EPOCH)},
     lambda r: [r / "run"], ["checkpoints/state-40.json: not a readable JSON file"]),
    ("plot-not-a-run", plot_history.main, {"empty": FOLDER}, lambda r: [r / "empty"],
     ["empty: no metrics.json and no checkpoints/state-*.json"]),
    ("plot-out-under-a-file", plot_history.main, {**RUN, "run/metrics.json": history(GOOD_EPOCH)},
     lambda r: [r / "run", "--out", r / "run/config.yaml/curves.png"],
     ["cannot write the figure there", "config.yaml is not a folder"]),
    ("plot-out-unknown-format", plot_history.main,
     {**RUN, "run/metrics.json": history(GOOD_EPOCH)},
     lambda r: [r / "run", "--out", r / "run/curves.pngx"],
     ["curves.pngx: cannot draw a .pngx file; expected one of", ".png", ".svg"]),
    ("plot-out-a-folder", plot_history.main,
     {**RUN, "run/metrics.json": history(GOOD_EPOCH), "run/plot.png": FOLDER},
     lambda r: [r / "run", "--out", r / "run/plot.png"], ["plot.png: not a regular file"]),
    ("data-no-sequences", make_interferograms.main, {},
     lambda r: ["--out", r / "new", "--sequences", "0"], ["--sequences 0: expected at least 1"]),
    ("data-negative-frames", make_interferograms.main, {},
     lambda r: ["--out", r / "new", "--frames", "-2"], ["--frames -2: expected at least 1"]),
    ("data-negative-samples", make_interferograms.main, {},
     lambda r: ["--out", r / "new", "--max-samples", "-1"],
     ["--max-samples -1: expected at least 0"]),
    ("data-negative-seed", make_interferograms.main, {},
     lambda r: ["--out", r / "new", "--seed", "-1"], ["--seed -1: expected at least 0"]),
    ("data-fringes-nan", make_interferograms.main, {},
     lambda r: ["--out", r / "new", "--fringes", "nan"],
     ["--fringes nan: expected 0..256.0 for --size 1024x1024"]),
    ("data-fringes-too-dense", make_interferograms.main, {},
     lambda r: ["--out", r / "new", "--size", "32x32"],
     ["--fringes 24.0: expected 0..8.0 for --size 32x32 (a fringe spans at least 4 pixels)"]),
    ("data-huge-size", make_interferograms.main, {},
     lambda r: ["--out", r / "new", "--size", "99999999x99999999"],
     ["--size 99999999x99999999 --frames 16: a sequence needs about", "GB is available"]),
    ("data-huge-frames", make_interferograms.main, {},
     lambda r: ["--out", r / "new", "--size", "64x64", "--fringes", "4", "--frames",
                "99999999999"], ["--frames 99999999999: a sequence needs about"]),
    ("data-no-disk-for-it", make_interferograms.main, {},
     lambda r: ["--out", r / "new", "--size", "64x64", "--fringes", "4", "--sequences",
                str(10**12)], [f"--sequences {10**12} --frames 16 --size 64x64: the data "
                               f"set needs about", "MB free"]),
    ("data-out-exists", make_interferograms.main, DATA_SET,
     lambda r: ["--out", r / "data"], ["data: already exists; choose a new folder"]),
    ("data-out-under-a-file", make_interferograms.main, RUN,
     lambda r: ["--out", r / "run/config.yaml/data"],
     ["cannot write the data set there", "config.yaml is not a folder"]),
    ("weights-missing", convert_weights.main, EARLIER_WEIGHTS,
     lambda r: [r / "no.npz", new_weights(r)], ["no.npz: no such file"]),
    ("weights-random-bytes", convert_weights.main,
     {**EARLIER_WEIGHTS, "in.npz": np.random.default_rng(0).bytes(512)},
     lambda r: [r / "in.npz", new_weights(r)], ["in.npz: not an .npz archive"]),
    ("weights-truncated", convert_weights.main,
     {**EARLIER_WEIGHTS, "in.npz": npz(a=np.zeros(500, np.float32))[:300]},
     lambda r: [r / "in.npz", new_weights(r)], ["in.npz: not an .npz archive"]),
    ("weights-npy", convert_weights.main,
     {**EARLIER_WEIGHTS, "in.npy": npy(np.zeros(3, np.float32))},
     lambda r: [r / "in.npy", new_weights(r)], ["in.npy: not an .npz archive"]),
    ("weights-pickled-objects", convert_weights.main,
     {**EARLIER_WEIGHTS, "in.npz": npz(a=np.array([{"x": 1}], object))},
     lambda r: [r / "in.npz", new_weights(r)],
     ["in.npz: not a readable .npz archive (Object arrays cannot be loaded"]),
    ("weights-fifo", convert_weights.main, {**EARLIER_WEIGHTS, "in.npz": FIFO},
     lambda r: [r / "in.npz", new_weights(r)], ["in.npz: not a regular file"]),
    ("weights-integers", convert_weights.main,
     {**EARLIER_WEIGHTS, "in.npz": npz(**{"conv1.weight": np.zeros((64, 3, 7, 7), np.int32)})},
     lambda r: [r / "in.npz", new_weights(r)],
     ["in.npz: conv1.weight holds int32 values; expected floating point weights"]),
    ("weights-nan", convert_weights.main,
     {**EARLIER_WEIGHTS, "in.npz": npz(**{"bn1.running_var": np.array([1.0, np.nan], np.float32)})},
     lambda r: [r / "in.npz", new_weights(r)], ["in.npz: bn1.running_var holds NaN or infinite"]),
    ("weights-not-resnet18", convert_weights.main,
     {**EARLIER_WEIGHTS, "in.npz": npz(**{"fc.weight": np.zeros((10, 512), np.float32)})},
     lambda r: [r / "in.npz", new_weights(r)],
     ["in.npz: not a torchvision ResNet18 state_dict; missing keys ['bn1.bias'"]),
    ("weights-output-name", convert_weights.main, {**EARLIER_WEIGHTS, "in.npz": npz()},
     lambda r: [r / "in.npz", r / "weights/new.h5"], ["new.h5: the output name must end in "
                                                      ".weights.h5"]),
    ("weights-output-exists", convert_weights.main, {**EARLIER_WEIGHTS, "in.npz": npz()},
     lambda r: [r / "in.npz", r / "weights/resnet18.weights.h5"],
     ["resnet18.weights.h5: already exists; remove it or choose another name"]),
    ("weights-output-under-a-file", convert_weights.main, {**RUN, "in.npz": npz()},
     lambda r: [r / "in.npz", r / "run/config.yaml/x.weights.h5"],
     ["cannot write the weights file there", "config.yaml is not a folder"]),
]

FRAMES = {"model.onnx": tiny_export, "frames/a.png": png(12, 12), "frames/b.png": png(12, 12),
          "out/a_mask.png": b"an earlier mask", "out/a_overlay.png": b"an earlier overlay"}

# (id, files, argv(root), message fragments) of tools/opencv_segment.py, which needs no
# tfseg: each exits with one line (status 1, Python's for a SystemExit message).
OPENCV_CASES = [
    ("frame-fifo", {**FRAMES, "frames/c.png": FIFO},
     lambda r: [r / "frames/a.png", r / "frames/c.png"], ["frames/c.png: not a regular file"]),
    ("model-fifo", {**FRAMES, "model.onnx": FIFO}, lambda r: [r / "frames/a.png"],
     ["model.onnx: not a regular file"]),
    ("frame-missing", FRAMES, lambda r: [r / "frames/a.png", r / "frames/z.png"],
     ["frames/z.png: no such frame"]),
    ("frame-a-folder", FRAMES, lambda r: [r / "frames"], ["frames: not a regular file"]),
    ("same-stem-twice", {**FRAMES, "other/a.png": png(12, 12)},
     lambda r: [r / "frames/a.png", r / "other/a.png"],
     ["other/a.png: its outputs would overwrite those of", "(same name 'a')"]),
    ("crop-outside-frame", {**FRAMES, "frames/small.png": png(9, 12)},
     lambda r: [r / "frames/small.png"],
     ["small.png: the export's crop (x, y, w, h) = (2, 2, 8, 8) reaches outside the 9x12 "
      "(HxW) frame"]),
    ("frame-sizes-differ", {**FRAMES, "frames/c.png": png(16, 16)},
     lambda r: [r / "frames/a.png", r / "frames/b.png", r / "frames/c.png"],
     ["frames/c.png: 16x16 frame", "a.png is 12x12; expected the frames of one sequence"]),
    ("truncated-last-frame", {**FRAMES, "frames/c.png": png(12, 12)[:40]},
     lambda r: [r / "frames/a.png", r / "frames/c.png"], ["frames/c.png: unreadable image"]),
    ("float-frame", {**FRAMES, "frames/c.tiff": png(12, 12, np.float32, ".tiff")},
     lambda r: [r / "frames/c.tiff"], ["c.tiff: float32 pixels; expected an 8- or 16-bit"]),
    ("empty-frame", {**FRAMES, "frames/c.png": b""}, lambda r: [r / "frames/c.png"],
     ["frames/c.png: unreadable image"]),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_tools_refuse_in_one_line(case, tmp_path, capsys):
    _, main, files, argv, fragments = case
    make_files(tmp_path, files)
    before = snapshot(tmp_path)
    status = run_cli(main, [str(arg) for arg in argv(tmp_path)])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), captured.err
    for fragment in fragments:
        assert fragment in lines[0]
    assert not captured.out
    assert snapshot(tmp_path) == before


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", OPENCV_CASES, ids=[case[0] for case in OPENCV_CASES])
def test_opencv_tool_refuses_frames_in_one_line(case, tmp_path):
    _, files, frames, fragments = case
    make_files(tmp_path, files)
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        opencv_segment.main([str(tmp_path / "model.onnx"), *map(str, frames(tmp_path)),
                             "--output", str(tmp_path / "out")])
    message = str(exit_.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message
    assert snapshot(tmp_path) == before


def test_opencv_tool_replaces_earlier_outputs_whole(tmp_path):
    make_files(tmp_path, FRAMES)
    opencv_segment.main([str(tmp_path / "model.onnx"), str(tmp_path / "frames/a.png"),
                         str(tmp_path / "frames/b.png"), "--output", str(tmp_path / "out")])
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "a_mask.png", "a_overlay.png", "b_mask.png", "b_overlay.png"]   # no temporaries
    mask = cv2.imread(str(tmp_path / "out/a_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (12, 12) and not mask[2:10, 2:10].any()   # one class in the 8x8 crop
    mask[2:10, 2:10] = 255
    assert (mask == 255).all()   # 255 outside the crop, at the frame's size


def test_plot_history_draws_null_and_nan_as_gaps(tmp_path, capsys):
    make_files(tmp_path, {"run/metrics.json": history(
        GOOD_EPOCH, {**GOOD_EPOCH, "epoch": 2, "train_loss": None},
        {**GOOD_EPOCH, "epoch": 3, "validation_mean_iou": float("nan")})})
    assert run_cli(plot_history.main, [str(tmp_path / "run")]) == 0
    assert cv2.imread(str(tmp_path / "run/curves.png")) is not None
    assert capsys.readouterr().out.strip() == str(tmp_path / "run/curves.png")


def test_an_interrupted_data_set_leaves_no_folder_and_no_temporaries(tmp_path, monkeypatch):
    # The disk fills while the third frame is written: the folder is never renamed into
    # place, and its temporary is gone.
    written = []

    def imwrite(path, frame):
        written.append(path)
        return len(written) < 3

    monkeypatch.setattr(synthetic_folders.cv2, "imwrite", imwrite)
    with pytest.raises(TfsegError, match=r"new: cannot write the data set there \(OpenCV "
                                         r"could not write frame_0002.bmp\)"):
        make_interferograms.main(["--out", str(tmp_path / "new"), "--size", "16x16",
                                  "--fringes", "4", "--frames", "4"])
    assert len(written) == 3 and not list(tmp_path.iterdir())
