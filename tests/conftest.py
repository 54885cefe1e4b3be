"""Shared fixtures: a tiny but complete run configuration, and subprocess helpers."""

import functools
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
CPUINFO = Path(__file__).resolve().parent / "cpuinfo"   # /proc/cpuinfo of three CPU kinds
# Runs (and their subprocesses) see the AVX2-only Zen 3's CPU, so `train.mixed_precision:
# auto` trains in float32 whatever machine runs the tests; tests of auto pose as other CPUs.
os.environ.setdefault("TFSEG_CPUINFO", str(CPUINFO / "zen3.txt"))

# Every section of a real run, shrunk: 64x64 frames, 2 epochs of 2 steps, 4 validation frames.
TINY_CONFIG = {
    "model": {"name": "linknet", "num_classes": 2, "input_channels": 1,
              "options": {"width": 0.5}},
    "data": {"height": 64, "width": 64, "mean": [12.0], "std": [12.0], "val_sequences": 1,
             "synthetic": {"height": 64, "width": 64, "frames_per_sequence": 4,
                           "fringes": 8.0},
             "preprocess": {"background_every": 1}},
    "train": {"epochs": 2, "steps_per_epoch": 2, "batch_size": 2, "log_images": 2},
    "export": {"parity_samples": 2},
}


@pytest.fixture
def write_yaml(tmp_path):
    """Writes a mapping (or raw text) to a YAML file in tmp_path and returns its path."""
    def write(content, name="config.yaml"):
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
        return path
    return write


@functools.cache
def opencv_engines():
    """{OpenCV DNN runtime: None if the OpenCV under test (`TFSEG_OPENCV_PYTHON`, else this
    interpreter's) has it, else why not}."""
    from tfseg.deploy.opencv_dnn import installed_engines

    return installed_engines()[0]


def available_opencv_runtimes():
    """The OpenCV DNN runtimes the OpenCV under test has ("opencv" always)."""
    return [name for name, missing in opencv_engines().items() if missing is None]


def require_opencv_engine(runtime):
    """Skips the test, with OpenCV's reason, when the OpenCV under test lacks `runtime`."""
    if runtime.startswith("opencv") and opencv_engines()[runtime] is not None:
        pytest.skip(opencv_engines()[runtime])


def assert_parity_results(results, labels):
    """`results` (a parity report's runtimes) has exactly `labels`; a runtime label is
    unavailable exactly when the OpenCV under test lacks that engine, and all others ran and
    passed."""
    assert set(results) == set(labels)
    for label, result in results.items():
        runtime = label.split()[0]
        missing = opencv_engines().get(runtime)
        assert ("unavailable" in result) == (missing is not None), (label, result)
        assert result["passed"], (label, result)
        if missing is None:
            assert result["version"], (label, result)


def load_script(path):
    """A script of the repository (tools/, benchmarks/) imported as a module."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_module(module, *args, timeout=600, env=None):
    """Runs `python -m module args...` from the repo root; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def psnr(a, b, peak=255.0):
    """Peak signal-to-noise ratio in dB between two arrays on a 0..peak scale."""
    mse = float(np.mean((np.asarray(a, np.float64) - b) ** 2))
    return np.inf if mse == 0 else 10 * np.log10(peak**2 / mse)


def write_plain_onnx(path):
    """An ONNX model (identity, 1x1x4x4) without tfseg metadata: not a tfseg export."""
    import onnx

    shape = [1, 1, 4, 4]
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "plain",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, shape)])
    onnx.save(onnx.helper.make_model(graph), str(path))
    return path


def write_hr_images(folder, count, shape, seed=0):
    """`count` smooth random RGB PNGs of `shape` (H, W) in a new `folder` (SR test data)."""
    import cv2

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        image = cv2.GaussianBlur(rng.integers(0, 256, (*shape, 3), np.uint8), (5, 5), 0)
        cv2.imwrite(str(folder / f"{index}.png"), image)
    return folder


def assert_one_line_error(result, *expected):
    """`result` (a CompletedProcess) failed with exit 2 and one stderr line holding every
    `expected` text, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def comparable(metrics):
    """The numbers of metrics.json but its timings (equal runs differ only in those), flat."""
    timings = ("images_per_second", "train_seconds", "total_seconds")

    def flat(value, prefix=""):
        if isinstance(value, dict):
            return {k: v for key, item in value.items() if key not in timings
                    for k, v in flat(item, f"{prefix}{key}.").items()}
        if isinstance(value, list):
            return {k: v for index, item in enumerate(value)
                    for k, v in flat(item, f"{prefix}{index}.").items()}
        return {prefix[:-1]: value}

    return flat(metrics)


def assert_same_run(metrics, reference):
    """Two runs' metrics.json hold the same history, best and final scores (floats to 1e-5:
    a resumed run restores the same state, but may compute in another order)."""
    resumed, reference = comparable(metrics), comparable(reference)
    assert resumed.keys() == reference.keys()
    for key, value in reference.items():
        assert resumed[key] == (pytest.approx(value, rel=1e-5, abs=1e-6)
                                if isinstance(value, float) else value), key
