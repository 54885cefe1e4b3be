"""Exports agree with Keras in TensorFlow, onnxruntime and both OpenCV DNN engines; failures
name the runtime; nothing half-written is left behind."""

import json

import keras
import numpy as np
import onnx
import pytest
import tensorflow as tf

from tfseg import export, models
from tfseg.opencv_dnn import OpenCVError, run_opencv

SIZE = (48, 80)


def make_model(seed):
    keras.utils.set_random_seed(seed)
    model = models.build("linknet", num_classes=2, input_shape=SIZE, input_channels=1,
                         mean=[12.0], std=[12.0])
    # Non-trivial batch-norm statistics: a training-mode export would disagree (trap 1).
    rng = np.random.default_rng(seed)
    for variable in model.non_trainable_variables:
        if "moving_mean" in variable.path:
            variable.assign(rng.normal(0, 0.3, variable.shape).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    model = make_model(0)
    images = np.random.default_rng(0).uniform(0, 60, (3, *SIZE, 1)).astype(np.float32)
    saved_model = export.export_saved_model(model, out / "saved_model")
    onnx_path = export.export_onnx(model, out / "model.onnx", metadata={"model": "linknet"})
    return model, images, saved_model, onnx_path, out


def test_json_reports_stay_valid_json_with_nan(tmp_path):
    export.write_json({"foreground_iou": float("nan"), "per_class": [1.0, float("inf")]},
                      tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == {
        "foreground_iou": None, "per_class": [1.0, None]}


def test_saved_model_serves_inference_mode(exported):
    model, images, saved_model, _, _ = exported
    serve = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    served = serve(pixels=tf.constant(images))["logits"].numpy()
    np.testing.assert_allclose(served, model(images, training=False).numpy(), atol=1e-5)
    assert np.abs(served - model(images, training=True).numpy()).max() > 1e-3


def test_onnx_is_nchw_static_with_metadata(exported):
    _, _, _, onnx_path, out = exported
    proto = onnx.load(str(onnx_path))
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 1, *SIZE]
    assert proto.opset_import[0].version == 17
    properties = {p.key: p.value for p in proto.metadata_props}
    assert properties["layout"] == "NCHW" and properties["model"] == "linknet"
    assert json.loads(properties["input_shape"]) == [1, 1, *SIZE]
    assert not list(out.glob("*.partial"))


def test_parity_in_every_runtime(exported, tmp_path):
    _, images, saved_model, onnx_path, _ = exported
    runtimes = ["onnxruntime", "opencv", "opencv_classic"]
    results = export.check_parity(saved_model, onnx_path, images, runtimes=runtimes,
                                  layout="NCHW", max_abs_diff=1e-3, min_argmax_agreement=0.999,
                                  report_path=tmp_path / "parity.json")
    report = json.loads((tmp_path / "parity.json").read_text())
    assert set(report["runtimes"]) == set(runtimes) and report["samples"] == 3
    for runtime in runtimes:
        assert results[runtime]["passed"], (runtime, results[runtime])
        assert results[runtime]["max_abs_diff"] <= 1e-3


def test_disagreeing_export_fails_naming_the_runtime(exported, tmp_path):
    _, images, saved_model, _, _ = exported
    other = export.export_onnx(make_model(1), tmp_path / "other.onnx")
    with pytest.raises(export.ParityError, match="onnxruntime: max abs diff"):
        export.check_parity(saved_model, other, images, runtimes=["onnxruntime"],
                            layout="NCHW", max_abs_diff=1e-3, min_argmax_agreement=0.999,
                            report_path=tmp_path / "parity.json")
    report = json.loads((tmp_path / "parity.json").read_text())
    assert report["runtimes"]["onnxruntime"]["passed"] is False


def test_opencv_failure_is_reported_not_crashing(tmp_path, exported):
    _, images, saved_model, _, _ = exported
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(OpenCVError, match="opencv: exit status"):
        run_opencv(broken, images[:1])
    with pytest.raises(export.ParityError, match="opencv"):
        export.check_parity(saved_model, broken, images, runtimes=["opencv"], layout="NCHW",
                            max_abs_diff=1e-3, min_argmax_agreement=0.999,
                            report_path=tmp_path / "parity.json")


@pytest.mark.parametrize("size,target", [((3, 5), (7, 11)), ((97, 83), (50, 70))])
def test_fractional_resize_exports_at_its_exact_size(tmp_path, size, target):
    # tf2onnx writes 97 -> 50 as scale 50/97, which runtimes may floor to 49 (TOOLCHAIN.md
    # trap 2).
    inputs = keras.Input((*size, 3))
    resized = keras.layers.Resizing(*target, interpolation="bilinear")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(resized))
    onnx_path = export.export_onnx(model, tmp_path / "resize.onnx")
    output = onnx.load(str(onnx_path)).graph.output[0]
    assert [d.dim_value for d in output.type.tensor_type.shape.dim] == [1, 2, *target]
    images = np.random.default_rng(0).normal(size=(2, *size, 3)).astype(np.float32)
    expected = model(images, training=False).numpy()
    for runtime in ("onnxruntime", "opencv"):
        outputs = (export.run_onnxruntime(onnx_path, images) if runtime == "onnxruntime"
                   else run_opencv(onnx_path, images, runtime=runtime))
        np.testing.assert_allclose(outputs.transpose(0, 2, 3, 1), expected, atol=1e-4,
                                   err_msg=runtime)
