"""Exports agree with Keras in the SavedModel, onnxruntime and both OpenCV DNN engines; the
export command checks every size it writes, names a failing runtime and exits non-zero;
nothing half-written is left behind."""

import fcntl
import json
import os
import shutil

import keras
import numpy as np
import onnx
import pytest
import tensorflow as tf
import yaml
from conftest import TINY_CONFIG, assert_parity_results, run_module

from tfseg import export, models
from tfseg.cli import run_cli
from tfseg.config import PreprocessConfig
from tfseg.data.preprocess import Preprocessing
from tfseg.deploy import runtimes
from tfseg.deploy.exports import export_model, export_onnx
from tfseg.deploy.metadata import check_metadata, make_metadata, read_onnx_metadata
from tfseg.deploy.parity import ParityError, check_parity
from tfseg.models import randomize_batch_norm
from tfseg.utils.errors import TfsegError
from tfseg.utils.files import write_json

SIZE = (64, 64)


def trained_run_dir(tmp_path_factory):
    """A tiny trained run (TINY_CONFIG, exported by the training run itself), trained once
    per test session and shared, read only, by the export and evaluation tests: under
    pytest-xdist the first worker to need it trains it while the others wait on a lock
    (`copy_of_run` gives a test a run of its own to write into)."""
    from tfseg.config import Config, from_dict
    from tfseg.training.loop import train

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent   # the session's folder, above each worker's own
    run_dir = root / "tiny_run"
    with open(root / "tiny_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (run_dir / "export" / "parity.json").exists():
            train(from_dict(Config, TINY_CONFIG, source="TINY_CONFIG"), run_dir)
    return run_dir


def copy_of_run(source, destination, *, export=True):
    """`destination`, a run of its own: `source`'s config.yaml, a copy of its export (if
    `export`) and a link to its checkpoints, which the copy must only read."""
    destination.mkdir()
    shutil.copy(source / "config.yaml", destination)
    (destination / "checkpoints").symlink_to(source / "checkpoints")
    if export:
        shutil.copytree(source / "export", destination / "export")
    return destination


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return trained_run_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def trained(run_dir):
    """The run's restored model and a few raw validation-like frames."""
    from tfseg.runs.restore import load_run

    _, model = load_run(run_dir)
    images = np.random.default_rng(0).uniform(0, 60, (3, *SIZE, 1)).astype(np.float32)
    return model, images


def test_json_reports_stay_valid_json_with_nan(tmp_path):
    write_json({"foreground_iou": float("nan"), "per_class": [1.0, float("inf")]},
                      tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == {
        "foreground_iou": None, "per_class": [1.0, None]}


def test_saved_model_serves_inference_mode(run_dir, trained):
    model, images = trained
    serve = tf.saved_model.load(str(run_dir / "export" / "saved_model")).signatures[
        "serving_default"]
    served = serve(pixels=tf.constant(images))["logits"].numpy()
    np.testing.assert_allclose(served, model(images, training=False).numpy(), atol=1e-5)
    assert np.abs(served - model(images, training=True).numpy()).max() > 1e-3


def test_onnx_is_nchw_static_with_metadata(run_dir):
    out = run_dir / "export"
    proto = onnx.load(str(out / "model.onnx"))
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 1, *SIZE]
    assert proto.opset_import[0].version == 17
    properties = {p.key: p.value for p in proto.metadata_props}
    assert properties["layout"] == "NCHW" and properties["model"] == "linknet"
    assert properties["input_size"] == "64x64" and properties["input_channels"] == "1"
    assert not list(out.glob("*.partial"))


def test_a_disagreeing_export_fails_naming_the_runtime(run_dir, trained, tmp_path):
    _, images = trained
    keras.utils.set_random_seed(1)
    other = models.build("linknet", num_classes=2, input_shape=SIZE, input_channels=1,
                         mean=[12.0], std=[12.0])
    with pytest.raises(ParityError, match="onnxruntime: max abs diff"):
        check_parity([(run_dir / "export" / "model.onnx", other)], images,
                            runtimes=["onnxruntime"], task="segmentation",
                            report_path=tmp_path / "parity.json")
    report = json.loads((tmp_path / "parity.json").read_text())
    assert report["runtimes"]["onnxruntime"]["passed"] is False and not report["passed"]


@pytest.mark.slow  # over 10 s: the fast tier stays under 3 minutes
def test_super_resolution_exports_pass_psnr_parity(tmp_path):
    keras.utils.set_random_seed(0)
    model = models.build("sr_johnson", scale=2, input_shape=(16, 16), input_channels=3,
                         mean=[127.5] * 3, std=[127.5] * 3)
    randomize_batch_norm(model)
    metadata = make_metadata(
        model="sr_johnson", task="super_resolution", input_size=(16, 16), input_channels=3,
        layout="NCHW", mean=[127.5] * 3, std=[127.5] * 3,
        preprocessing=Preprocessing(colour="rgb", eight_bit=True), scale=2)
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    exported = export_model(model, metadata, tmp_path, images)
    assert not (tmp_path / "labels.txt").exists()
    assert_parity_results(exported["parity"], runtimes.RUNTIMES[1:])
    for result in exported["parity"].values():
        assert "unavailable" in result or result["psnr"] >= 60, result
    upscaled = runtimes.load(tmp_path / "model.onnx")(images)
    assert upscaled.shape == (2, 32, 32, 3)
    assert runtimes.load(tmp_path / "saved_model").metadata["scale"] == 2


def fringe_metadata(input_channels, **steps):
    preprocessing = Preprocessing(steps=PreprocessConfig(blur=0, background_every=0, **steps),
                                  resize_to=[32, 32])
    return make_metadata(model="linknet", task="segmentation", input_size=(32, 32),
                         input_channels=input_channels, layout="NCHW",
                         mean=[0.0] * input_channels, std=[1.0] * input_channels,
                         preprocessing=preprocessing, class_names=["background", "sample"])


def test_metadata_counts_the_channels_of_the_demodulated_fringes():
    both = {"phase_gradient": True, "fringe_amplitude": True}
    for channels, steps in ((1, {}), (3, {"phase_gradient": True}),
                            (2, {"fringe_amplitude": True}), (4, both)):
        assert check_metadata(fringe_metadata(channels, **steps), "m.onnx")
    with pytest.raises(TfsegError, match=r"m.onnx: tfseg metadata input_channels=3; "
                                         r"expected 1 or 3, plus 3 for the demodulated"):
        check_metadata(fringe_metadata(3, **both), "m.onnx")
    with pytest.raises(TfsegError, match="input_channels=4; expected 1 or 3$"):
        check_metadata(fringe_metadata(4), "m.onnx")


@pytest.mark.slow  # over 10 s: the fast tier stays under 3 minutes
def test_a_model_of_the_frame_and_its_fringes_exports_and_agrees_everywhere(tmp_path):
    keras.utils.set_random_seed(0)
    model = models.build("linknet", num_classes=2, input_shape=(32, 32), input_channels=4,
                         mean=[0.0] * 4, std=[1.0] * 4, width=0.5)
    randomize_batch_norm(model)
    metadata = fringe_metadata(4, phase_gradient=True, fringe_amplitude=True)
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 4)).astype(np.float32)
    exported = export_model(model, metadata, tmp_path, images)
    assert_parity_results(exported["parity"], runtimes.RUNTIMES[1:])
    assert runtimes.load(tmp_path / "model.onnx").metadata["input_channels"] == 4


@pytest.mark.slow  # 5 s each: the fast tier stays under 3 minutes
@pytest.mark.parametrize("size,target", [((3, 5), (7, 11)), ((97, 83), (50, 70))])
def test_fractional_resize_exports_at_its_exact_size(tmp_path, size, target):
    # tf2onnx writes 97 -> 50 as scale 50/97, which runtimes may floor to 49 (TOOLCHAIN.md
    # trap 2).
    inputs = keras.Input((*size, 3))
    resized = keras.layers.Resizing(*target, interpolation="bilinear")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(resized))
    onnx_path = export_onnx(model, tmp_path / "resize.onnx")
    output = onnx.load(str(onnx_path)).graph.output[0]
    assert [d.dim_value for d in output.type.tensor_type.shape.dim] == [1, 2, *target]
    images = np.random.default_rng(0).normal(size=(2, *size, 3)).astype(np.float32)
    expected = model(images, training=False).numpy()
    for runtime in ("onnxruntime", "opencv"):
        with runtimes.load(onnx_path, runtime) as loaded:
            np.testing.assert_allclose(loaded(images), expected, atol=1e-4, err_msg=runtime)


def test_training_run_exports_through_the_same_code(run_dir):
    report = json.loads((run_dir / "export" / "parity.json").read_text())
    assert report["reference"] == "keras" and report["passed"]
    assert_parity_results(report["runtimes"], runtimes.RUNTIMES[1:])
    assert (run_dir / "export" / "labels.txt").read_text() == "background\nsample\n"
    metadata = runtimes.load(run_dir / "export" / "model.onnx").metadata
    assert metadata["task"] == "segmentation" and metadata["input_size"] == [64, 64]
    assert metadata["preprocessing"]["background_every"] == 1
    assert metadata["preprocessing"]["resize_to"] == [64, 64]


@pytest.mark.slow
def test_export_command_writes_and_checks_every_size(run_dir, tmp_path):
    run_dir = copy_of_run(run_dir, tmp_path / "run")
    result = run_module("tfseg.export", "--run-dir", run_dir, "--size", "64x64",
                        "--size", "96x80", "--skip-runtime", "opencv_classic")
    assert result.returncode == 0, result.stderr
    out = run_dir / "export"
    report = json.loads((out / "parity.json").read_text())
    assert report["skipped"] == ["opencv_classic"] and report["passed"]
    assert_parity_results(report["runtimes"], [
        "savedmodel", *(f"{runtime}{name}" for runtime in ("onnxruntime", "opencv",
                                                           "opencv_ort")
                        for name in ("", " model_96x80.onnx"))])
    for result_ in report["runtimes"].values():
        assert "unavailable" in result_ or (result_["max_abs_diff"] <= 1e-3
                                            and result_["argmax_agreement"] >= 0.999)
    assert report["runtimes"]["opencv model_96x80.onnx"]["input_size"] == [96, 80]
    # Each size's file tells a caller to resize frames to that size, not the training one.
    for name, size in (("model.onnx", [64, 64]), ("model_96x80.onnx", [96, 80])):
        metadata = read_onnx_metadata(out / name)
        assert metadata["input_size"] == metadata["preprocessing"]["resize_to"] == size
    assert runtimes.load(out / "model_96x80.onnx").input_size == (96, 80)
    assert "parity      opencv model_96x80.onnx: max abs diff" in result.stdout
    assert not [p for p in out.iterdir() if p.name.endswith((".partial", ".tmp"))]


@pytest.mark.slow  # over 10 s: the fast tier stays under 3 minutes
def test_parity_failure_exits_non_zero_naming_the_runtime(run_dir, tmp_path, capsys):
    """A run whose tolerance no runtime can meet: the export names onnxruntime, exits 2,
    leaves the run without an export and the rejected files, report included, for a look."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["export"].update(saved_model=False, parity_runtimes=["onnxruntime"],
                            max_abs_diff=0.0)
    copy = copy_of_run(run_dir, tmp_path / "run", export=False)
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    assert run_cli(export.main, ["--run-dir", str(copy)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: exports disagree with Keras (onnxruntime: max abs diff")
    assert f"see {copy / 'export.rejected' / 'parity.json'};" in error
    assert error.rstrip().endswith(f"{copy / 'export'} is unchanged")
    assert not (copy / "export").exists()
    report = json.loads((copy / "export.rejected" / "parity.json").read_text())
    assert set(report["runtimes"]) == {"onnxruntime"} and not report["passed"]
    # The rejected export itself is complete: only the check failed.
    assert runtimes.load(copy / "export.rejected" / "model.onnx").metadata["model"] == "linknet"
    assert sorted(path.name for path in copy.iterdir()) == [
        "checkpoints", "config.yaml", "export.rejected"]
