"""Every runtime runs an export the same way: raw NHWC pixels in, NHWC outputs out, the tfseg
metadata read back intact; files that are not tfseg exports are refused by name."""

import json

import numpy as np
import onnx
import pytest
from conftest import require_opencv_engine, write_plain_onnx
from test_export import trained_run_dir

from tfseg.deploy import runtimes
from tfseg.deploy.metadata import decode_metadata, encode_metadata, metadata_for
from tfseg.deploy.opencv_dnn import RUNTIMES as OPENCV_RUNTIMES
from tfseg.deploy.opencv_dnn import OpenCVError, OpenCVWorker
from tfseg.runs.restore import load_run
from tfseg.utils.errors import TfsegError

SIZE = (64, 64)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny trained run's model, its export metadata, frames, and its export folder."""
    run_dir = trained_run_dir(tmp_path_factory)
    config, model = load_run(run_dir)
    images = np.random.default_rng(0).uniform(0, 60, (3, *SIZE, 1)).astype(np.float32)
    return model, metadata_for(config, "NCHW"), images, run_dir / "export"


def test_metadata_survives_onnx_strings_and_saved_model_json(exported):
    _, metadata, _, out = exported
    properties = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert properties["input_size"] == "64x64" and properties["input_channels"] == "1"
    assert json.loads(properties["class_names"]) == ["background", "sample"]
    assert json.loads(properties["class_colours"]) == [[0, 0, 0], [255, 64, 64]]
    assert json.loads(properties["preprocessing"])["resize_to"] == [64, 64]
    assert properties["normalisation"] == "inside the model: feed raw pixels"
    assert all(isinstance(value, str) for value in properties.values())
    onnx_metadata = runtimes.load(out / "model.onnx").metadata
    assert {k: onnx_metadata[k] for k in metadata} == metadata
    assert runtimes.load(out / "saved_model").metadata == {**metadata, "layout": "NHWC"}
    assert decode_metadata(encode_metadata(metadata)) == metadata


def test_configured_class_colours_reach_the_metadata():
    from tfseg.config import Config, from_dict

    config = from_dict(Config, {"data": {"class_colours": [[1, 2, 3], [4, 5, 6]]}},
                       source="test")
    assert metadata_for(config, "NCHW")["class_colours"] == [[1, 2, 3], [4, 5, 6]]


@pytest.mark.parametrize("path,runtime", [
    ("saved_model", None), ("model.onnx", None),
    *(("model.onnx", name) for name in OPENCV_RUNTIMES)])
def test_every_runtime_matches_keras_in_nhwc(exported, path, runtime):
    require_opencv_engine(runtime or "")
    model, _, images, out = exported
    expected = runtimes.from_keras(model)(images)
    assert expected.shape == (3, *SIZE, 2)
    with runtimes.load(out / path, runtime) as loaded:
        assert loaded.name == (runtime or ("savedmodel" if path == "saved_model"
                                           else "onnxruntime"))
        assert loaded.input_size == SIZE and loaded.channels == 1
        # Several calls reuse what was loaded (OpenCV: the same child process).
        for batch in (images, images[1:2]):
            outputs = loaded(batch)
            assert outputs.dtype == np.float32
            np.testing.assert_allclose(outputs, expected[:len(batch)] if len(batch) == 3
                                       else expected[1:2], atol=1e-4)


def test_keras_file_runs_in_keras(exported, tmp_path):
    model, _, images, _ = exported
    model.save(tmp_path / "model.keras")
    loaded = runtimes.load(tmp_path / "model.keras")
    assert loaded.name == "keras" and loaded.metadata == {}
    np.testing.assert_allclose(loaded(images), model(images, training=False), atol=1e-5)


@pytest.mark.slow   # 1.5 s: two graphs traced
def test_the_keras_runtime_runs_a_frozen_snapshot_unless_asked_for_live_weights(exported):
    model, _, images, _ = exported
    frozen, live = runtimes.from_keras(model), runtimes.from_keras(model, frozen=False)
    before = frozen(images)
    np.testing.assert_allclose(before, live(images), atol=1e-5)
    kernel = next(w for w in model.weights if w.path.endswith("kernel"))
    saved = kernel.numpy()
    try:
        kernel.assign(saved * 0.5)   # as training's next epoch changes the weights
        np.testing.assert_array_equal(frozen(images), before)
        assert np.abs(live(images) - before).max() > 1e-3
    finally:
        kernel.assign(saved)


def test_wrong_frames_are_refused_with_the_expected_shape(exported):
    out = exported[3]
    loaded = runtimes.load(out / "model.onnx")
    with pytest.raises(TfsegError, match="takes 64x64 frames, got 64x48"):
        loaded(np.zeros((1, 64, 48, 1), np.float32))
    with pytest.raises(TfsegError, match=r"expected \(N, H, W, 1\) pixels"):
        loaded(np.zeros((1, *SIZE, 3), np.float32))


def test_onnx_without_tfseg_metadata_is_refused(tmp_path):
    write_plain_onnx(tmp_path / "plain.onnx")
    for runtime in ("onnxruntime", "opencv"):
        with pytest.raises(TfsegError, match=r"plain.onnx: not a tfseg export: no tfseg "
                                             r"metadata"):
            runtimes.load(tmp_path / "plain.onnx", runtime)


def test_missing_paths_and_non_models_are_named(tmp_path, exported):
    _, _, _, out = exported
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.onnx").write_bytes(b"not an onnx model")
    (tmp_path / "empty").mkdir()
    cases = {tmp_path / "absent.onnx": "absent.onnx: no such file or directory",
             tmp_path / "notes.txt": "notes.txt: not a model file; expected a SavedModel",
             tmp_path / "broken.onnx": "broken.onnx: not an ONNX model",
             tmp_path / "empty": "empty: not a SavedModel directory"}
    for path, message in cases.items():
        with pytest.raises(TfsegError, match=message):
            runtimes.load(path)
    with pytest.raises(TfsegError, match="runtime 'opencv' cannot run this file"):
        runtimes.load(out / "saved_model", "opencv")


def test_opencv_crash_or_refusal_is_reported_not_raised_through(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(OpenCVError, match="opencv: exit status"):
        OpenCVWorker(broken, "opencv")
