"""Test-time views (tfseg.tasks.test_time): each view undone exactly, phase slopes that stay
the slopes of the transformed frame, the average being the views' mean class probability,
and the same views in validation, predict and tools/opencv_segment.py."""

import numpy as np
import pytest
from conftest import TINY_CONFIG

from tfseg.config import load_config
from tfseg.tasks.factory import make_task
from tfseg.tasks.test_time import VIEWS, averaged_logits, back_from, averaging_predictor, view_of
from tfseg.tasks.validation import validate


def softmax(logits):
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


@pytest.mark.parametrize("view", VIEWS["flips_and_transpose"])
def test_every_view_is_undone_exactly(view):
    images = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype(np.float32)
    np.testing.assert_array_equal(back_from(view_of(images, view), view), images)


def frame_with_slopes(size=24):
    """(1, size, size, 3): a smooth non-symmetric field and its slopes along x and y (the
    central differences, which a flip negates and a transpose swaps exactly)."""
    y, x = np.mgrid[:size, :size].astype(np.float64)
    field = np.sin(0.31 * x + 0.12 * y ** 1.3) + 0.02 * x * y
    slope_y, slope_x = np.gradient(field)
    return np.stack([field, slope_x, slope_y], -1)[None].astype(np.float32)


def slope_agreement(images):
    """Logits (0, agreement of the slope channels with the frame's own slopes): a view
    whose slopes were not negated or swapped with its axes disagrees."""
    slope_y, slope_x = np.gradient(images[..., 0], axis=(1, 2))
    agreement = images[..., 1] * slope_x + images[..., 2] * slope_y
    return np.stack([np.zeros_like(agreement), 50.0 * agreement], -1)


@pytest.mark.parametrize("kind", ["flips", "flips_and_transpose"])
def test_the_views_slopes_are_the_slopes_of_the_viewed_frame(kind):
    images = frame_with_slopes()
    plain = softmax(slope_agreement(images))
    averaged = softmax(averaged_logits(slope_agreement, images, kind, slope_channels=(1, 2)))
    np.testing.assert_allclose(averaged, plain, atol=1e-5)
    # Views of the slopes as plain images are not physical: the agreement falls.
    careless = softmax(averaged_logits(slope_agreement, images, kind, slope_channels=None))
    assert np.abs(careless - plain).max() > 0.1


def test_the_average_is_the_mean_class_probability_of_the_views():
    rng = np.random.default_rng(1)
    weights = rng.normal(size=(4, 3)).astype(np.float32)

    def predict(images):   # a pixel's logits depend on its neighbour to the right
        return np.roll(images, -1, axis=2) @ weights

    images = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
    views = VIEWS["flips_and_transpose"]
    expected = np.mean([back_from(softmax(predict(view_of(images, view, (1, 2)))), view)
                        for view in views], axis=0)
    averaged = averaged_logits(predict, images, "flips_and_transpose", slope_channels=(1, 2))
    np.testing.assert_allclose(softmax(averaged), expected, atol=1e-6)
    np.testing.assert_allclose(np.exp(averaged).sum(-1), 1.0, atol=1e-5)
    assert np.abs(softmax(predict(images)) - expected).max() > 0.05   # the views differ


def test_one_view_is_the_predictor_itself():
    def predict(images):
        return images

    assert averaging_predictor(predict, "none") is predict


def test_validation_scores_the_averaged_views(write_yaml):
    """Training's validation and evaluate score through `task.predictor`."""
    config = load_config(write_yaml(TINY_CONFIG))
    averaged = load_config(write_yaml(TINY_CONFIG), ["data.augment.test_time=flips"])
    rng = np.random.default_rng(2)
    images = rng.normal(size=(3, 16, 16, 1)).astype(np.float32)
    masks = (rng.random((3, 16, 16)) < 0.4).astype(np.uint8)

    def predict(frames):
        return np.concatenate([frames, np.roll(frames, 1, axis=1)], -1)

    scores = validate(make_task(averaged), predict, [(images, masks)])
    expected = validate(make_task(config), averaging_predictor(predict, "flips"),
                        [(images, masks)])
    assert scores == expected
    assert scores != validate(make_task(config), predict, [(images, masks)])


@pytest.mark.slow  # over 5 s: the fast tier keeps its 3-minute budget
@pytest.mark.parametrize("kind", ["flips", "flips_and_transpose"])
def test_the_opencv_tool_averages_the_views_as_tfseg(kind, tmp_path):
    """tools/opencv_segment.py's views of a frame with its phase slopes and amplitude, run in
    OpenCV DNN, against tfseg's views of the same frame run in onnxruntime."""
    import keras
    from test_opencv_segment import load_tool

    from tfseg.deploy.exports import export_onnx
    from tfseg.deploy.parity import run_onnxruntime

    inputs = keras.Input((16, 16, 4))
    hidden = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same")(hidden))
    path = export_onnx(model, tmp_path / "views.onnx", metadata={"preprocessing": {
        "phase_gradient": True, "fringe_amplitude": True}})   # the frame's channel + 3
    image = np.concatenate([frame_with_slopes(16)[0],
                            np.random.default_rng(3).normal(size=(16, 16, 1))], -1)
    image = image.astype(np.float32)

    tool = load_tool()
    net = tool.load_network(path)
    scores = tool.averaged_scores(net, image, tool.TEST_TIME_VIEWS[kind],
                                  {"phase_gradient": True, "colour": "gray"})
    expected = averaged_logits(lambda x: run_onnxruntime(path, x).transpose(0, 2, 3, 1),
                               image[None], kind, slope_channels=(1, 2))
    np.testing.assert_allclose(scores.transpose(0, 2, 3, 1), expected, atol=1e-4)
    single = run_onnxruntime(path, image[None]).transpose(0, 2, 3, 1)
    assert np.abs(softmax(single) - softmax(expected)).max() > 0.01   # the views differ


@pytest.mark.slow  # over 5 s: the fast tier keeps its 3-minute budget
def test_predict_and_the_tool_run_the_views_the_export_names(tmp_path):
    """An export of a recipe with `data.augment.test_time: flips` carries it: predict runs
    the views by default (`--test-time none`: one pass) and the OpenCV tool runs them too,
    to the same masks."""
    import dataclasses

    from test_opencv_segment import load_tool
    from test_predict import (
        FRAME_SIZE,
        make_frames,
        make_segmenter,
        read_mask,
        segmentation_config,
        write_frames,
    )

    from tfseg.deploy.exports import export_onnx
    from tfseg.deploy.inference import predict_files
    from tfseg.deploy.metadata import metadata_for, read_onnx_metadata

    config = segmentation_config(mean=[90.0], std=[40.0])
    config = dataclasses.replace(config, data=dataclasses.replace(
        config.data, augment=dataclasses.replace(config.data.augment, test_time="flips")))
    path = export_onnx(make_segmenter(mean=[90.0], std=[40.0]), tmp_path / "model.onnx",
                       metadata=metadata_for(config, "NCHW"))
    assert read_onnx_metadata(path)["test_time"] == "flips"
    frames = write_frames(tmp_path / "frames", make_frames(3, FRAME_SIZE))
    predict_files(path, [frames], tmp_path / "views")
    predict_files(path, [frames], tmp_path / "one", test_time="none")
    load_tool().main([str(path), *map(str, sorted(frames.iterdir())), "--output",
                      str(tmp_path / "tool")])

    def masks(name):
        return np.stack([read_mask(tmp_path / name / f"{p.stem}_mask.png")
                         for p in sorted(frames.iterdir())])

    np.testing.assert_array_equal(masks("tool"), masks("views"))
    assert np.mean(masks("views") != masks("one")) > 0.001   # the views changed the answer


def test_an_oblong_export_of_a_square_recipe_keeps_the_flips(write_yaml):
    from tfseg.deploy.metadata import metadata_at_size, metadata_for

    config = load_config(write_yaml(TINY_CONFIG),
                         ["data.augment.test_time=flips_and_transpose"])
    metadata = metadata_for(config, "NCHW")
    assert metadata["test_time"] == "flips_and_transpose"
    assert metadata_at_size(metadata, (96, 96))["test_time"] == "flips_and_transpose"
    assert metadata_at_size(metadata, (64, 96))["test_time"] == "flips"
