"""One preprocessing for every path to the network: the same raw frames reach the network
identically (bit for bit) through the training data pipeline, `python -m tfseg.evaluate`,
`python -m tfseg.predict` and tools/opencv_segment.py, each following the description the
recipe gives and the export carries."""

import dataclasses
import json

import cv2
import numpy as np
import pytest
from test_opencv_segment import load_tool
from test_predict import MODEL_SIZE, make_frames, make_segmentation_export, write_frames

from tfseg.config import PreprocessConfig, TrainConfig, load_config, save_config
from tfseg.config.recipes import recipe_path
from tfseg.data.labels import write_roi_json
from tfseg.data.pipeline import make_datasets
from tfseg.data.preprocess import Preprocessing
from tfseg.data.sequences import Sequence, read_frame
from tfseg.deploy import runtimes
from tfseg.deploy.evaluation import evaluate_to_folder
from tfseg.deploy.inference import predict_files
from tfseg.deploy.metadata import check_preprocessing, metadata_for, read_onnx_metadata
from tfseg.utils.errors import TfsegError


@pytest.fixture(scope="module")
def segmentation_export(tmp_path_factory):
    return make_segmentation_export(tmp_path_factory.getbasetemp() / "segmentation_export")


@pytest.fixture
def network_inputs(monkeypatch):
    """Every batch of pixels the runtimes that `runtimes.load` opens are called with."""
    inputs, load = [], runtimes.load

    def recording_load(path, runtime=None):
        loaded = load(path, runtime)

        def predict(pixels):
            inputs.append(pixels.copy())
            return loaded(pixels)

        return runtimes.Runtime(loaded.name, predict, version=loaded.version,
                                metadata=loaded.metadata, input_size=loaded.input_size,
                                channels=loaded.channels, close=loaded.close)

    monkeypatch.setattr(runtimes, "load", recording_load)
    return inputs


def labelled_copy(frames, folder):
    """The frames as a training sequence folder: PNGs and a ROI list, one box each."""
    write_frames(folder, frames)
    write_roi_json(folder / "rois.json", [(f"frame_{i:04d}.png", [(8 + 12 * i, 14, 12, 20)])
                                          for i in range(len(frames))])
    return folder


def test_training_evaluate_predict_and_opencv_tool_feed_identical_inputs(
        segmentation_export, network_inputs, tmp_path):
    exported = segmentation_export
    folder = labelled_copy(exported.frames, tmp_path / "sequence")
    # The export's recipe on this folder: its frames train (in order: a shuffle buffer of 1)
    # and validate.
    config = dataclasses.replace(
        exported.config,
        data=dataclasses.replace(exported.config.data, path=str(folder), val_path=str(folder),
                                 shuffle_frames=1),
        train=TrainConfig(batch_size=2, epochs=1, steps_per_epoch=2))
    save_config(config, tmp_path / "config.yaml")
    description = Preprocessing.from_config(config)
    steps = description.steps   # every step at work: the comparison means something
    assert steps.blur and steps.background_every and steps.clahe_clip_limit and steps.crop
    assert read_onnx_metadata(exported.onnx)["preprocessing"] == description.to_metadata()

    training = np.concatenate([images.numpy() for images, _ in make_datasets(config).train])
    assert training.shape == (4, *MODEL_SIZE, 1)

    evaluate_to_folder(model_path=exported.onnx, config_path=tmp_path / "config.yaml",
                       runtime_name="onnxruntime", output=tmp_path / "evaluation")
    evaluation = np.concatenate(network_inputs)
    network_inputs.clear()
    predict_files(exported.onnx, [folder], tmp_path / "predictions")
    prediction = np.concatenate(network_inputs)

    tool = load_tool()
    tool_steps = tool.preprocessing_steps(tool.read_onnx_metadata(exported.onnx), exported.onnx)
    paths = sorted(folder.glob("*.png"))
    background = tool.background_of(paths, tool_steps)
    blobs = [tool.network_input(tool.prepare(tool.read_frame(path, tool_steps), background,
                                             tool_steps)) for path in paths]
    opencv = np.concatenate(blobs).transpose(0, 2, 3, 1)   # NCHW -> NHWC

    for name, inputs in (("evaluate", evaluation), ("predict", prediction),
                         ("tools/opencv_segment.py", opencv)):
        np.testing.assert_array_equal(inputs, training, err_msg=name)


def rgb_frames(count, size, seed):
    """16-bit RGB frames: three differently seeded grey sequences as channels."""
    return np.stack([make_frames(count, size, maximum=60000, dtype=np.uint16, seed=seed + c)
                     for c in range(3)], axis=-1)


@pytest.mark.parametrize("description", [
    Preprocessing(steps=PreprocessConfig(blur=5, background_every=2, background_alpha=0.7,
                                         clahe_clip_limit=3.0, clahe_tile_grid=3,
                                         crop=[2, 3, 50, 36]),
                  colour="rgb", resize_to=[24, 40], interpolation="cubic"),
    Preprocessing(colour="rgb", eight_bit=True, resize_to=[30, 20], interpolation="area"),
    Preprocessing(steps=PreprocessConfig(blur=3, background_every=3, clahe_clip_limit=2.0,
                                         clahe_tile_grid=4),
                  colour="gray", eight_bit=True, resize_to=[64, 96], interpolation="cubic"),
], ids=["rgb-16-bit-every-step", "rgb-8-bit-area", "gray-8-bit-upscaled"])
def test_opencv_tool_follows_every_kind_of_description(description, tmp_path):
    frames = rgb_frames(4, (44, 60), seed=5)
    folder = tmp_path / "frames"
    folder.mkdir()
    paths = []
    for index, frame in enumerate(frames):
        paths.append(folder / f"frame_{index}.png")
        cv2.imwrite(str(paths[-1]), frame[..., ::-1])   # stored BGR, as OpenCV writes
    background = Sequence(images=tuple(paths)).background(description)
    expected = np.stack([description.image(read_frame(path, description.colour), background)
                         for path in paths])

    tool = load_tool()
    steps = tool.preprocessing_steps(
        {"preprocessing": json.dumps(description.to_metadata())}, "model.onnx")
    tool_background = tool.background_of(paths, steps)
    blobs = [tool.network_input(tool.prepare(tool.read_frame(path, steps), tool_background,
                                             steps)) for path in paths]
    np.testing.assert_array_equal(np.concatenate(blobs).transpose(0, 2, 3, 1), expected)


def test_opencv_tool_refuses_a_description_it_cannot_follow():
    tool = load_tool()
    values = {**Preprocessing().to_metadata(), "sharpen": 1}
    with pytest.raises(SystemExit, match="model.onnx: preprocessing this script cannot follow "
                                         r"\(unknown \['sharpen'\]"):
        tool.preprocessing_steps({"preprocessing": json.dumps(values)}, "model.onnx")


def test_evaluate_refuses_data_preprocessed_otherwise_than_the_export(segmentation_export,
                                                                       tmp_path):
    exported = segmentation_export
    config = dataclasses.replace(exported.config, data=dataclasses.replace(
        exported.config.data, preprocess=dataclasses.replace(
            exported.config.data.preprocess, blur=5)))
    save_config(config, tmp_path / "config.yaml")
    with pytest.raises(TfsegError, match=f"{exported.onnx}: exported for frames preprocessed "
                                         f"with preprocessing.blur=3, but the config gives 5"):
        evaluate_to_folder(model_path=exported.onnx, config_path=tmp_path / "config.yaml",
                           runtime_name="onnxruntime", output=tmp_path / "evaluation")


@pytest.mark.parametrize("recipe,refused", [
    ("sr_johnson_x4", None),
    ("linknet_camvid", "preprocessing.eight_bit=False, but the config gives True")])
def test_evaluate_holds_old_exports_to_what_they_were_predicted_with(recipe, refused):
    # Exports from before "eight_bit" and "interpolation" were recorded: an SR model (frames
    # in 8 bits, nothing resized) is evaluated; a CamVid one was predicted on 16-bit values
    # and with a cubic resize where it trained on 8-bit ones resized by area, and is refused
    # until exported again.
    config = load_config(recipe_path(recipe))
    metadata = metadata_for(config, "NCHW")
    for key in ("eight_bit", "interpolation"):
        del metadata["preprocessing"][key]
    if refused is None:
        check_preprocessing(metadata, config, "old.onnx")
    else:
        with pytest.raises(TfsegError, match=f"old.onnx: exported for frames preprocessed "
                                             f"with {refused}"):
            check_preprocessing(metadata, config, "old.onnx")
