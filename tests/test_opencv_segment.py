"""tools/opencv_segment.py: with OpenCV, numpy and the standard library only, it reads the
export's metadata, preprocesses like tfseg and segments like `python -m tfseg.predict`: the
same masks and overlays, at the input frame's size."""

import subprocess
import sys

import cv2
import numpy as np
import onnx
import pytest
from conftest import REPO, load_script, write_plain_onnx
from test_predict import (
    FRAME_SIZE,
    make_segmentation_export,
    read_mask,
    training_masks,
)

from tfseg import predict
from tfseg.cli import run_cli
from tfseg.deploy import inference, opencv_dnn

TOOL = REPO / "tools" / "opencv_segment.py"
FORBIDDEN = ("tensorflow", "keras", "onnx", "onnxruntime", "tf2onnx", "tfseg")


@pytest.fixture(scope="module")
def segmentation_export(tmp_path_factory):
    return make_segmentation_export(tmp_path_factory.getbasetemp() / "segmentation_export")


def load_tool(name="opencv_segment"):
    """tools/<name>.py as a module."""
    return load_script(TOOL.with_name(f"{name}.py"))


def run_tool(*args):
    """Runs the tool with `-X importtime`, so stderr lists every module it imported."""
    return subprocess.run([opencv_dnn.python(), "-X", "importtime", str(TOOL), *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


def imported_modules(importtime_log):
    return {line.rsplit("|", 1)[1].strip() for line in importtime_log.splitlines()
            if line.startswith("import time:") and "|" in line}


def test_metadata_scan_reads_what_onnx_reads(segmentation_export):
    expected = {p.key: p.value for p in onnx.load(str(segmentation_export.onnx)).metadata_props}
    assert load_tool().read_onnx_metadata(segmentation_export.onnx) == expected
    assert "preprocessing" in expected and "class_colours" in expected


@pytest.mark.slow
def test_tool_segments_like_tfseg_predict_without_tensorflow(segmentation_export, tmp_path):
    frames = sorted(segmentation_export.folder.iterdir())
    result = run_tool(segmentation_export.onnx, *frames, "--output", tmp_path / "tool")
    assert result.returncode == 0, result.stderr[-2000:]
    modules = imported_modules(result.stderr)
    assert "cv2" in modules and "numpy" in modules
    assert not [m for m in modules if m.split(".")[0] in FORBIDDEN]
    # predict with the same OpenCV DNN (the interpreter the tool ran in): the same logits, so
    # the masks and overlays, resized back into the frames' crop alike, are equal.
    assert run_cli(predict.main, ["--model", str(segmentation_export.onnx), "--input",
                                  str(segmentation_export.folder), "--output",
                                  str(tmp_path / "tfseg"), "--runtime", "opencv"]) == 0
    for kind, read in (("mask", read_mask), ("overlay", lambda path: cv2.imread(str(path)))):
        tool, tfseg = (np.stack([read(tmp_path / name / f"{p.stem}_{kind}.png") for p in frames])
                       for name in ("tool", "tfseg"))
        assert tool.shape[:3] == (len(frames), *FRAME_SIZE)   # the frames' size, not the model's
        np.testing.assert_array_equal(tool, tfseg, err_msg=kind)
    # ... and they are the Keras model's, 255 outside the 40x56 crop at (4, 2).
    expected = training_masks(segmentation_export.model, segmentation_export.frames,
                              segmentation_export.config)
    assert np.mean(tool_masks(tmp_path / "tool", frames) == expected) >= 0.999
    assert 0.05 < np.mean(expected[expected != inference.UNSEEN]) < 0.95


def tool_masks(folder, frames):
    return np.stack([read_mask(folder / f"{path.stem}_mask.png") for path in frames])


@pytest.mark.parametrize("classes, model_size, frame_size, crop", [
    (2, (32, 48), (48, 64), [4, 2, 56, 40]),       # upsampled into a crop
    (5, (128, 128), (200, 300), [40, 30, 200, 150]),  # more classes than OpenCV's 4 channels
    (3, (64, 96), (40, 60), []),                    # downsampled to the whole frame
    (1, (24, 40), (24, 40), []),                    # the model's size: nothing resized
])
def test_tool_resizes_scores_back_as_predict(classes, model_size, frame_size, crop):
    rng = np.random.default_rng(classes)
    logits = cv2.GaussianBlur(rng.normal(size=(*model_size, classes)).astype(np.float32),
                              (0, 0), 2).reshape(*model_size, classes)
    mask = load_tool().mask_in_frame(logits.transpose(2, 0, 1), frame_size, crop)
    np.testing.assert_array_equal(mask, inference.mask_in_frame(logits, frame_size, crop))
    assert mask.shape == frame_size and len(np.unique(mask)) == classes + bool(crop)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tool_writes_a_frame_of_another_size_than_the_model_at_its_own_size(dtype, tmp_path):
    # A 128x128 threshold network (class 1 above 90) fed the 150x200 crop at (60, 30) of a
    # 200x300 frame, bright left of column 160 (inside and outside the crop), dark right of it;
    # the tool and predict (onnxruntime) answer alike, in the frame. A 16-bit frame (x 257)
    # reaches the network alike; its overlay shows it stretched to 0..255.
    from test_preprocessing_paths import write_threshold_onnx

    steps = {"blur": 0, "background_every": 0, "background_alpha": 0.0, "clahe_clip_limit": 0.0,
             "clahe_tile_grid": 8, "crop": [60, 30, 200, 150], "colour": "gray",
             "eight_bit": False, "resize_to": [128, 128], "interpolation": "area",
             "units": "8bit"}
    model = write_threshold_onnx(tmp_path / "model.onnx", {
        "tfseg_version": "0.1.0", "task": "segmentation", "layout": "NCHW",
        "input_size": [128, 128], "input_channels": 1, "class_names": ["background", "sample"],
        "class_colours": [[0, 0, 0], [255, 64, 64]], "preprocessing": steps})
    scale = np.iinfo(dtype).max // 255
    frame = np.full((200, 300), 20 * scale, dtype)
    frame[:, :160] = 200 * scale
    shown = frame if dtype == np.uint8 else np.where(frame > 20 * scale, 255, 0).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "frame.png"), frame)
    load_tool().main([str(model), str(tmp_path / "frame.png"), "--output", str(tmp_path / "out")])

    mask = read_mask(tmp_path / "out" / "frame_mask.png")
    assert mask.shape == (200, 300)
    outside = np.ones_like(mask, bool)
    outside[30:180, 60:260] = False
    assert np.all(mask[outside] == 255)
    assert np.all(mask[30:180, 60:159] == 1) and np.all(mask[30:180, 161:260] == 0)
    overlay = cv2.imread(str(tmp_path / "out" / "frame_overlay.png"))   # BGR
    assert overlay.shape == (200, 300, 3)
    np.testing.assert_array_equal(overlay[outside], np.repeat(shown[outside, None], 3, -1))
    bright, dark = int(shown[100, 100]), int(shown[100, 200])   # 200, 20 or 255, 0
    colour = np.round([(bright + 64) / 2, (bright + 64) / 2, (bright + 255) / 2])   # BGR
    np.testing.assert_array_equal(overlay[100, 100], colour)
    np.testing.assert_array_equal(overlay[100, 200], [dark / 2] * 3)
    inference.predict_files(model, [tmp_path / "frame.png"], tmp_path / "predict")
    np.testing.assert_array_equal(mask, read_mask(tmp_path / "predict" / "frame_mask.png"))
    np.testing.assert_array_equal(overlay, cv2.imread(str(tmp_path / "predict" /
                                                          "frame_overlay.png")))


def test_tool_refuses_a_model_without_tfseg_metadata(segmentation_export, tmp_path):
    plain = write_plain_onnx(tmp_path / "plain.onnx")
    frame = next(segmentation_export.folder.iterdir())
    result = run_tool(plain, frame, "--output", tmp_path / "out")
    assert result.returncode != 0
    assert f"error: {plain}: not a tfseg NCHW segmentation export" in result.stderr
    assert not (tmp_path / "out").exists()


def test_tool_reports_a_model_opencv_cannot_load_in_one_line(segmentation_export, tmp_path):
    # The export's metadata on a graph OpenCV refuses (a Conv whose weights are missing).
    proto = onnx.load(str(segmentation_export.onnx))
    del proto.graph.initializer[:]
    broken = tmp_path / "broken.onnx"
    onnx.save(proto, str(broken))
    frame = next(segmentation_export.folder.iterdir())
    result = run_tool(broken, frame, "--output", tmp_path / "out")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors and f"{broken}: OpenCV " in errors[0] and "cannot load this model" in errors[0]
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
