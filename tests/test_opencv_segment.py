"""tools/opencv_segment.py: with OpenCV, numpy and the standard library only, it reads the
export's metadata, preprocesses like tfseg and segments like `python -m tfseg.predict`."""

import importlib.util
import subprocess
import sys

import cv2
import numpy as np
import onnx
import pytest
from conftest import REPO, write_plain_onnx
from test_predict import (
    MODEL_SIZE,
    make_segmentation_export,
    read_mask,
    training_logits,
    training_masks,
)

from tfseg import predict
from tfseg.cli import run_cli
from tfseg.deploy import opencv_dnn

TOOL = REPO / "tools" / "opencv_segment.py"
FORBIDDEN = ("tensorflow", "keras", "onnx", "onnxruntime", "tf2onnx", "tfseg")


@pytest.fixture(scope="module")
def segmentation_export(tmp_path_factory):
    return make_segmentation_export(tmp_path_factory.getbasetemp() / "segmentation_export")


def load_tool(name="opencv_segment"):
    """tools/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(name, TOOL.with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_tool_segments_like_tfseg_predict_without_tensorflow(segmentation_export, tmp_path):
    frames = sorted(segmentation_export.folder.iterdir())
    result = run_tool(segmentation_export.onnx, *frames, "--output", tmp_path / "tool")
    assert result.returncode == 0, result.stderr[-2000:]
    modules = imported_modules(result.stderr)
    assert "cv2" in modules and "numpy" in modules
    assert not [m for m in modules if m.split(".")[0] in FORBIDDEN]
    assert run_cli(predict.main, ["--model", str(segmentation_export.onnx), "--input",
                                  str(segmentation_export.folder), "--output",
                                  str(tmp_path / "tfseg")]) == 0
    tool = np.stack([read_mask(tmp_path / "tool" / f"{p.stem}_mask.png") for p in frames])
    tfseg = np.stack([read_mask(tmp_path / "tfseg" / f"{p.stem}_mask.png") for p in frames])
    # The tool writes masks at the model's size; predict at the frames' own size, from the
    # same logits resized back (bilinear) into the crop: compare each with the Keras model.
    keras_logits = training_logits(segmentation_export.model, segmentation_export.frames,
                                   segmentation_export.config)
    assert tool.shape == (len(frames), *MODEL_SIZE)
    assert 0.05 < tool.mean() < 0.95
    assert np.mean(tool == keras_logits.argmax(-1)) >= 0.999
    expected = training_masks(segmentation_export.model, segmentation_export.frames,
                              segmentation_export.config)
    assert np.mean(tfseg == expected) >= 0.999
    overlay = cv2.imread(str(tmp_path / "tool" / f"{frames[0].stem}_overlay.png"))
    assert overlay.shape == (*MODEL_SIZE, 3)


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
