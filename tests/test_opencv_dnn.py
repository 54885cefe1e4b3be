"""The OpenCV layer picks each runtime's engine from what the installed OpenCV has, refuses
OpenCV older than the minimum, and can run in another interpreter (TFSEG_OPENCV_PYTHON)."""

import re
import stat
import sys
from types import SimpleNamespace

import pytest
from conftest import write_plain_onnx

from tfseg.deploy import opencv_dnn, parity, runtimes
from tfseg.deploy.opencv_dnn import EngineUnavailable, OpenCVError, OpenCVWorker

WITH_ORT = "  Other third-party libraries:\n  ONNX Runtime:                  YES (1.20)\n"
WITHOUT_ORT = "  ONNX Runtime:                  NO\n"


def fake_cv2(version, engines, build_information=WITHOUT_ORT):
    """A stand-in for the cv2 module: its version, the ENGINE_* names of cv2.dnn, and its
    build information."""
    return SimpleNamespace(__version__=version,
                           dnn=SimpleNamespace(**{name: i for i, name in enumerate(engines)}),
                           getBuildInformation=lambda: build_information)


@pytest.mark.parametrize("cv2,expected", [
    # OpenCV 4.x: one engine, no engine argument.
    (fake_cv2("4.6.0", []), {"opencv": None}),
    (fake_cv2("4.12.0", []), {"opencv": None}),
    # 5.0: the new engine by default, the classic one beside it.
    (fake_cv2("5.0.0", ["ENGINE_AUTO", "ENGINE_NEW", "ENGINE_CLASSIC", "ENGINE_ORT"]),
     {"opencv": "ENGINE_NEW", "opencv_classic": "ENGINE_CLASSIC"}),
    # 5.1: ENGINE_NEW renamed ENGINE_OPENCV, the classic engine gone.
    (fake_cv2("5.1.0", ["ENGINE_AUTO", "ENGINE_OPENCV", "ENGINE_ORT"]),
     {"opencv": "ENGINE_OPENCV"}),
    # ENGINE_ORT only where OpenCV was built with ONNX Runtime (else it falls back).
    (fake_cv2("5.1.0", ["ENGINE_AUTO", "ENGINE_OPENCV", "ENGINE_ORT"], WITH_ORT),
     {"opencv": "ENGINE_OPENCV", "opencv_ort": "ENGINE_ORT"}),
])
def test_each_runtime_maps_to_the_engine_the_installed_opencv_has(cv2, expected):
    for runtime in opencv_dnn.RUNTIMES:
        engine, missing = opencv_dnn._engine(cv2, runtime)
        if runtime in expected:
            assert (engine, missing) == (expected[runtime], None), runtime
        else:
            assert engine is None and cv2.__version__ in missing, runtime


@pytest.mark.parametrize("version", ["4.5.5", "3.4.20"])
def test_opencv_older_than_the_minimum_is_refused(version):
    with pytest.raises(SystemExit, match=f"OpenCV {version} is older than 4.6"):
        opencv_dnn._check_version(fake_cv2(version, []))
    opencv_dnn._check_version(fake_cv2("4.6.0", []))   # the minimum itself passes


def test_installed_opencv_reports_its_version_and_default_engine(tmp_path):
    engines, version = opencv_dnn.installed_engines()
    assert engines["opencv"] is None
    path = write_plain_onnx(tmp_path / "plain.onnx")
    with OpenCVWorker(path) as worker:
        assert worker.version.startswith(f"OpenCV {version} (")


def test_a_missing_engine_is_unavailable_not_a_failure(tmp_path):
    path = write_plain_onnx(tmp_path / "plain.onnx")
    engines, _ = opencv_dnn.installed_engines()
    missing = [name for name, reason in engines.items() if reason]
    if not missing:
        pytest.skip("this OpenCV has every engine")
    with pytest.raises(EngineUnavailable, match=re.escape(engines[missing[0]])):
        OpenCVWorker(path, missing[0])


def test_parity_records_an_unavailable_runtime_as_such(monkeypatch):
    def unavailable(path, runtime):
        raise runtimes.RuntimeUnavailable(f"{runtime}: OpenCV 9.9 has no such engine")

    monkeypatch.setattr(parity, "load", unavailable)
    result = parity.run_parity("model.onnx", "opencv_classic", None, None,
                               task="segmentation", tolerance=parity.Tolerance())
    assert result == {"unavailable": "OpenCV 9.9 has no such engine", "passed": True}
    assert parity.describe(result) == "not available: OpenCV 9.9 has no such engine"


def test_the_worker_runs_in_the_interpreter_the_variable_names(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!/bin/sh\ntouch {marker}\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv(opencv_dnn.PYTHON_VARIABLE, str(wrapper))
    path = write_plain_onnx(tmp_path / "plain.onnx")
    with OpenCVWorker(path):
        pass
    assert marker.exists()
    monkeypatch.setenv(opencv_dnn.PYTHON_VARIABLE, str(tmp_path / "absent"))
    with pytest.raises(OpenCVError, match="absent for OpenCV DNN .*TFSEG_OPENCV_PYTHON"):
        OpenCVWorker(path)
