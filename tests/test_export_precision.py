"""int8 and float16 exports (`python -m tfseg.export --precision`): written beside the float32
file with its metadata plus the precision, smaller, run in onnxruntime on float32 pixels, scored
against float32 on the run's validation data in parity.json; int8 calibrated on the run's
training frames as the network is fed them; OpenCV builds that cannot load a copy say so."""

import json

import numpy as np
import pytest
from conftest import TINY_CONFIG, write_hr_images

from tfseg import export
from tfseg.cli import run_cli
from tfseg.deploy.metadata import check_metadata
from tfseg.deploy.precisions import (
    check_precisions,
    describe_precision,
    opencv_reason,
    precision_path,
)
from tfseg.models import randomize_batch_norm
from tfseg.utils.errors import TfsegError

# Full width: enough weights (3M) for the int8 file to be about 4x smaller.
WIDE_CONFIG = {**TINY_CONFIG, "model": {**TINY_CONFIG["model"], "options": {"width": 1.0}},
               "export": {"parity_samples": 2, "saved_model": False}}


def tiny(config_dict):
    from tfseg.config import Config, from_dict

    return from_dict(Config, config_dict, source="test")


def export_precisions_of(config, directory, precisions=("int8", "float16"), frames=4):
    """`export_from_config` of a model of `config` with random weights (batch norm too)."""
    from tfseg.data.pipeline import make_datasets
    from tfseg.deploy.exports import export_from_config
    from tfseg.models.from_config import build_model

    model = build_model(config, (config.data.height, config.data.width))
    randomize_batch_norm(model)
    return export_from_config(model, config, directory, make_datasets(config).validation,
                              precisions=precisions, calibration_frames=frames)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    directory = tmp_path_factory.mktemp("precisions") / "export"
    return directory, export_precisions_of(tiny(WIDE_CONFIG), directory)


def test_precisions_are_checked_and_ordered():
    assert check_precisions(["float16,int8"]) == ("float16", "int8")
    assert check_precisions(["int8", "float32", "int8"]) == ("int8",)
    assert check_precisions([]) == ()
    with pytest.raises(TfsegError, match="--precision 'fp8': expected float32, float16, int8"):
        check_precisions(["int8,fp8"])
    with pytest.raises(TfsegError, match="recurrent model's state"):
        check_precisions(["int8"], recurrent=True)
    assert check_precisions(["float16"], recurrent=True) == ("float16",)


def test_precision_files_sit_beside_the_float32_file(tmp_path):
    assert precision_path(tmp_path / "model.onnx", "int8") == tmp_path / "model.int8.onnx"
    assert precision_path(tmp_path / "model_32x48.onnx", "float16") == (
        tmp_path / "model_32x48.float16.onnx")
    assert precision_path(tmp_path / "model.onnx", "float32") == tmp_path / "model.onnx"


def test_metadata_precision_is_checked():
    assert check_metadata({"precision": "int8"}, "x.onnx")["precision"] == "int8"
    with pytest.raises(TfsegError, match="x.onnx: tfseg metadata precision='int4'"):
        check_metadata({"precision": "int4"}, "x.onnx")


def test_bad_precision_is_one_line_before_tensorflow_loads(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("{}\n")
    status = run_cli(export.main, ["--run-dir", str(tmp_path), "--precision", "int8,bf16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err == ["error: --precision 'bf16': expected float32, float16, int8"]


def test_description_names_what_opencv_cannot_load():
    result = {"bytes": 1_000_000, "float32_bytes": 4_000_000, "float32_file": "model.onnx",
              "runtimes": {
                  "onnxruntime": {"version": "onnxruntime 1.32.0", "max_abs_diff": 0.02,
                                  "argmax_agreement": 0.995, "mean_iou_difference": -0.004,
                                  "foreground_iou_difference": 0.001},
                  "opencv": {"not_supported": "OpenCV 4.6.0: Unsupported data type: FLOAT16"},
                  "opencv_classic": {"unavailable": "OpenCV 4.6.0 has no classic engine"}}}
    line = describe_precision("model.int8.onnx", result)
    assert line.startswith("model.int8.onnx (1.0 MB, 4.0x smaller than model.onnx): ")
    assert "mean_iou -0.40 points, foreground_iou +0.10 points, argmax agreement 99.50 %" in line
    assert "opencv: not supported by OpenCV 4.6.0: Unsupported data type: FLOAT16" in line
    assert "classic" not in line   # said on the float32 parity line already


def test_opencv_load_failures_keep_opencv_own_words():
    path = "/x/model.float16.onnx"
    error = (f"{path}: opencv: exit status 1: >: [ERROR:0@0.044] global onnx_importer.cpp:1061 "
             f"handleNode DNN/ONNX: ERROR during processing node [Mul]")
    assert opencv_reason(error, path) == "DNN/ONNX: ERROR during processing node [Mul]"


@pytest.mark.slow
def test_copies_carry_the_metadata_and_precision_and_are_smaller(exported):
    import onnx

    from tfseg.deploy.metadata import read_onnx_metadata

    directory, result = exported
    float32 = read_onnx_metadata(directory / "model.onnx")
    assert "precision" not in float32   # absent means float32
    for precision, smaller in (("int8", 3.3), ("float16", 1.9)):
        path = directory / f"model.{precision}.onnx"
        assert read_onnx_metadata(path) == {**float32, "precision": precision}
        assert (directory / "model.onnx").stat().st_size / path.stat().st_size > smaller
        entry = result["precisions"][path.name]
        assert entry["precision"] == precision and entry["bytes"] == path.stat().st_size
    ops = {node.op_type for node in onnx.load(str(directory / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # LinkNet's transposed convolutions run as int8 convolutions (onnxruntime has no int8
    # ConvTranspose kernel).
    assert "ConvTranspose" not in ops and "DepthToSpace" in ops
    assert result["precisions"]["model.int8.onnx"]["calibration_frames"] == 4
    assert not list(directory.glob("*.partial"))


@pytest.mark.slow
def test_copies_run_on_float32_pixels_close_to_float32(exported):
    from tfseg.deploy import runtimes

    directory, _ = exported
    pixels = np.random.default_rng(0).uniform(0, 60, (2, 64, 64, 1)).astype(np.float32)
    with runtimes.load(directory / "model.onnx") as float32:
        reference = float32(pixels)
    for precision, max_diff in (("int8", 0.5), ("float16", 0.01)):
        with runtimes.load(directory / f"model.{precision}.onnx") as runtime:
            assert runtime.metadata["precision"] == precision
            outputs = runtime(pixels)
        assert outputs.dtype == np.float32 and outputs.shape == reference.shape
        assert np.abs(outputs - reference).max() < max_diff
        assert np.mean(outputs.argmax(-1) == reference.argmax(-1)) > 0.97


@pytest.mark.slow
def test_parity_report_scores_each_copy_against_float32(exported):
    directory, _ = exported
    report = json.loads((directory / "parity.json").read_text())
    assert report["passed"]   # float32's own parity, unchanged
    for name in ("model.int8.onnx", "model.float16.onnx"):
        results = report["precisions"][name]["runtimes"]
        onnxruntime = results["onnxruntime"]
        assert onnxruntime["version"].startswith("onnxruntime")
        assert abs(onnxruntime["mean_iou_difference"]) < 0.05
        assert abs(onnxruntime["foreground_iou_difference"]) < 0.05
        assert onnxruntime["argmax_agreement"] > 0.97
        for runtime, figures in results.items():
            # Ran and scored, not supported (with OpenCV's reason) or not installed: a load
            # failure is never reported as a disagreement.
            assert "error" not in figures, (runtime, figures)
            if "not_supported" in figures:
                assert figures["not_supported"].startswith("OpenCV ")
            elif "version" in figures:
                assert "mean_iou_difference" in figures
    # OpenCV has no float16 tensors (4.x) or cannot wire float16's input cast (5.1).
    assert "not_supported" in report["precisions"]["model.float16.onnx"]["runtimes"]["opencv"]


@pytest.mark.slow
def test_calibration_reader_yields_training_frames_as_the_network_sees_them(exported):
    from tfseg.data.pipeline import make_datasets
    from tfseg.deploy.quantization import calibration_frames, calibration_reader

    directory, _ = exported
    config = tiny(WIDE_CONFIG)
    frames = calibration_frames(config, (64, 64), count=3)
    train = make_datasets(config).train.unbatch()
    expected = np.stack([np.asarray(image) for image, _ in train.take(3)])
    np.testing.assert_array_equal(frames, expected)   # preprocessed, not augmented
    reader = calibration_reader(directory / "model.onnx", frames)
    fed = [reader.get_next() for _ in range(4)]
    assert fed[3] is None
    for index, feed in enumerate(fed[:3]):
        (pixels,) = feed.values()
        assert pixels.dtype == np.float32 and pixels.shape == (1, 1, 64, 64)   # NCHW
        np.testing.assert_array_equal(pixels[0, 0], frames[index, :, :, 0])


@pytest.mark.slow
def test_super_resolution_copies_report_psnr_difference(tmp_path):
    write_hr_images(tmp_path / "train", 2, (40, 48))
    write_hr_images(tmp_path / "validation", 1, (40, 48), seed=1)
    config = tiny({
        "model": {"name": "sr_johnson", "scale": 4, "input_channels": 3},
        "data": {"source": "super_resolution", "height": 8, "width": 8,
                 "mean": [127.5] * 3, "std": [127.5] * 3,
                 "super_resolution": {"train": [str(tmp_path / "train")],
                                      "validation": [str(tmp_path / "validation")],
                                      "patch_size": 32}},
        "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "loss": "pixel"},
        "export": {"parity_samples": 1, "saved_model": False,
                   "parity_runtimes": ["onnxruntime"]}})
    result = export_precisions_of(config, tmp_path / "export")
    for name in ("model.int8.onnx", "model.float16.onnx"):
        figures = result["precisions"][name]["runtimes"]["onnxruntime"]
        assert abs(figures["psnr_y_difference"]) < 3.0, figures
        assert figures["psnr"] > 25, figures   # the copy's output against float32's


def test_recurrent_int8_is_refused_in_one_line():
    with pytest.raises(TfsegError) as error:
        check_precisions(["float16,int8"], recurrent=True, source="--precision")
    assert len(str(error.value).splitlines()) == 1
    assert "export it in float32 or float16" in str(error.value)
