"""One preprocessing for every path to the network: the same raw frames reach the network
identically (bit for bit) through the training data pipeline, `python -m tfseg.evaluate`,
`python -m tfseg.predict` and tools/opencv_segment.py, each following the description the
recipe gives and the export carries; an export made at another size gets the same inputs from
evaluate as from predict (frames preprocessed at its size; SR ones tiled alike)."""

import dataclasses
import json

import cv2
import numpy as np
import onnx
import pytest
from test_opencv_segment import load_tool
from test_predict import (
    FRAME_SIZE,
    MODEL_SIZE,
    STEPS,
    make_frames,
    make_segmentation_export,
    segmentation_config,
    write_frames,
)

from tfseg.config import PreprocessConfig, TrainConfig, load_config, save_config
from tfseg.config.recipes import recipe_path
from tfseg.data.interferograms import prepare_sequence
from tfseg.data.labels import write_roi_json
from tfseg.data.pipeline import make_datasets
from tfseg.data.preprocess import Preprocessing
from tfseg.data.sequences import Sequence, read_frame
from tfseg.deploy import runtimes
from tfseg.deploy.evaluation import evaluate_to_folder, predict_whole_images
from tfseg.deploy.inference import choose_tile, predict_files, run_model
from tfseg.deploy.metadata import (
    check_preprocessing,
    encode_metadata,
    metadata_at_size,
    metadata_for,
    preprocessing_of,
    read_onnx_metadata,
)
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

    for name, inputs in (("evaluate", evaluation), ("predict", prediction),
                         ("tools/opencv_segment.py", opencv_tool_inputs(exported.onnx, folder))):
        np.testing.assert_array_equal(inputs, training, err_msg=name)


def opencv_tool_inputs(onnx_path, folder):
    """NHWC network inputs tools/opencv_segment.py prepares from the frames of `folder` for
    the export `onnx_path`."""
    tool = load_tool()
    steps, _, _ = tool.export_facts(tool.read_onnx_metadata(onnx_path), onnx_path)
    paths = sorted(folder.glob("*.png"))
    background = tool.background_of(paths, steps)
    blobs = [tool.network_input(tool.prepare(tool.read_frame(path, steps), background, steps))
             for path in paths]
    return np.concatenate(blobs).transpose(0, 2, 3, 1)   # NCHW -> NHWC


def write_threshold_onnx(path, metadata):
    """A segmentation export in all but its network: a 1x1 convolution (class 1 where a pixel
    exceeds 90) at the static NCHW size of the tfseg `metadata` it carries; built in
    milliseconds, where a converted network takes seconds."""
    height, width = metadata["input_size"]
    initializers = [onnx.numpy_helper.from_array(np.array([-1.0, 1.0], np.float32).reshape(
                        2, 1, 1, 1), "weights"),
                    onnx.numpy_helper.from_array(np.array([90.0, -90.0], np.float32), "bias")]
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Conv", ["pixels", "weights", "bias"], ["logits"])], "threshold",
        [onnx.helper.make_tensor_value_info("pixels", onnx.TensorProto.FLOAT,
                                            [1, 1, height, width])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT,
                                            [1, 2, height, width])], initializers)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.helper.set_model_props(model, encode_metadata(metadata))
    onnx.save(model, str(path))
    return path


def test_an_export_at_another_size_gets_the_inputs_of_predict_and_training_at_its_size(
        network_inputs, tmp_path):
    # `python -m tfseg.export --size 24x40`: evaluate feeds it the raw frames preprocessed at
    # 24x40 (not the 32x48 training inputs resized), as predict, the OpenCV tool and
    # training at 24x40 do, and scores its logits on the config's 32x48 masks.
    size, frames = (24, 40), make_frames(4, FRAME_SIZE)
    folder = labelled_copy(frames, tmp_path / "sequence")
    config = segmentation_config(mean=[90.0], std=[40.0])
    config = dataclasses.replace(
        config, data=dataclasses.replace(config.data, path=str(folder), val_path=str(folder),
                                         shuffle_frames=1),
        train=TrainConfig(batch_size=2, epochs=1, steps_per_epoch=2))
    save_config(config, tmp_path / "config.yaml")
    exported = write_threshold_onnx(tmp_path / "model_24x40.onnx", metadata_at_size(
        metadata_for(config, "NCHW"), size))

    evaluate_to_folder(model_path=exported, config_path=tmp_path / "config.yaml",
                       runtime_name="onnxruntime", output=tmp_path / "evaluation", samples=2)
    evaluation = np.concatenate(network_inputs)
    network_inputs.clear()
    predict_files(exported, [folder], tmp_path / "predictions")
    prediction = np.concatenate(network_inputs)
    # The training pipeline's frames at 24x40 (its tf.data wrapping is held to this by the
    # test above).
    at_size = dataclasses.replace(config, data=dataclasses.replace(
        config.data, height=size[0], width=size[1]))
    training, _ = prepare_sequence(frames, [[] for _ in frames],
                                   Preprocessing.from_config(at_size))

    assert training.shape == (4, *size, 1)
    for name, inputs in (("evaluate", evaluation), ("predict", prediction),
                         ("tools/opencv_segment.py", opencv_tool_inputs(exported, folder))):
        np.testing.assert_array_equal(inputs, training, err_msg=name)
    report = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    assert report["frames"] == 4
    assert np.sum(report["confusion_matrix"]) == 4 * MODEL_SIZE[0] * MODEL_SIZE[1]
    assert report["notes"] == ["the model takes 24x40 frames: frames preprocessed at that "
                               "size (as tfseg.predict does) and logits resized to the 32x48 "
                               "labels"]


def test_a_super_resolution_export_at_another_size_gets_the_tiles_predict_gives_it():
    # SR preprocessing resizes nothing at any size: a static export of another size runs
    # whole LR images tile by tile in evaluate exactly as predict runs a frame.
    image = np.random.default_rng(0).uniform(0, 255, (20, 30, 3)).astype(np.float32)
    calls = {"evaluate": [], "predict": []}

    def recording(name):
        def upscale(pixels):
            calls[name].append(pixels.copy())
            return pixels.repeat(2, axis=1).repeat(2, axis=2)

        return runtimes.Runtime("onnxruntime", upscale, version="test", metadata={},
                                input_size=(12, 16), channels=3)

    evaluated = predict_whole_images(recording("evaluate"), image[None], set())[0]
    model = recording("predict")
    predicted = run_model(model, image, choose_tile(model, None, None))
    assert len(calls["evaluate"]) == 1 and calls["evaluate"][0].shape[0] > 1   # tiles
    for got, expected in zip(calls["evaluate"], calls["predict"], strict=True):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(evaluated, predicted)


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
    # An export from before "units" was recorded: 16-bit frames at their own scale.
    Preprocessing(steps=PreprocessConfig(blur=3, background_every=2, clahe_clip_limit=2.0,
                                         clahe_tile_grid=4),
                  colour="gray", resize_to=[24, 40], units="native"),
    Preprocessing(steps=PreprocessConfig(blur=0, background_every=0, phase_gradient=True),
                  colour="gray", resize_to=[32, 48], interpolation="cubic"),
    Preprocessing(steps=PreprocessConfig(blur=0, background_every=0, phase_gradient=True,
                                         fringe_amplitude=True),
                  colour="gray", resize_to=[32, 48], interpolation="cubic"),
], ids=["rgb-16-bit-every-step", "rgb-8-bit-area", "gray-8-bit-upscaled",
        "gray-16-bit-native-units", "gray-phase-gradient", "gray-slopes-and-amplitude"])
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


@pytest.mark.parametrize("clahe", [0.0, 2.0])
def test_grey_files_reach_an_rgb_network_as_their_rgb_copies(clahe, tmp_path):
    """Grey files stay grey until after the resize; the network gets exactly what their RGB
    copies give, in a sequence of grey files and in one mixing grey and colour files."""
    description = Preprocessing(steps=PreprocessConfig(blur=3, background_every=1,
                                                       clahe_clip_limit=clahe),
                                colour="rgb", resize_to=[24, 40], interpolation="area")
    grey = make_frames(3, (44, 60), maximum=250, dtype=np.uint8, seed=3)
    colour = (rgb_frames(1, (44, 60), seed=7)[0] >> 8).astype(np.uint8)
    tool = load_tool()
    steps = tool.preprocessing_steps(
        {"preprocessing": json.dumps(description.to_metadata())}, "model.onnx")
    for name, stored in [("grey", list(grey)), ("mixed", [*grey[:2], colour])]:
        folder = tmp_path / name
        folder.mkdir()
        paths = [folder / f"frame_{index}.png" for index in range(len(stored))]
        for path, frame in zip(paths, stored):
            cv2.imwrite(str(path), frame if frame.ndim == 2 else frame[..., ::-1])
        as_rgb = [cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB) if frame.ndim == 2 else frame
                  for frame in stored]
        background = description.background(enumerate(as_rgb))
        expected = np.stack([description.image(frame, background) for frame in as_rgb])
        assert read_frame(paths[0], "rgb").ndim == 2
        sequence_background = Sequence(images=tuple(paths)).background(description)
        got = np.stack([description.image(read_frame(path, "rgb"), sequence_background)
                        for path in paths])
        np.testing.assert_array_equal(got, expected)
        tool_background = tool.background_of(paths, steps)
        blobs = [tool.network_input(tool.prepare(tool.read_frame(path, steps),
                                                 tool_background, steps)) for path in paths]
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


# Bit depth: every path expresses a frame in 8-bit grey levels (x 255 / its dtype's max).

def paths_inputs(config, folder, export, network_inputs, tmp_path):
    """{path: NHWC network inputs} of the frames of `folder` (a labelled sequence) through the
    training pipeline, evaluate, predict and tools/opencv_segment.py, for `export`."""
    config = dataclasses.replace(
        config, data=dataclasses.replace(config.data, path=str(folder), val_path=str(folder),
                                         shuffle_frames=1),
        train=TrainConfig(batch_size=2, epochs=1, steps_per_epoch=2))
    tmp_path.mkdir()
    save_config(config, tmp_path / "config.yaml")
    inputs = {"training": np.concatenate(
        [images.numpy() for images, _ in make_datasets(config).train])}
    network_inputs.clear()
    evaluate_to_folder(model_path=export, config_path=tmp_path / "config.yaml",
                       runtime_name="onnxruntime", output=tmp_path / "evaluation")
    inputs["evaluate"] = np.concatenate(network_inputs)
    network_inputs.clear()
    predict_files(export, [folder], tmp_path / "predictions")
    inputs["predict"] = np.concatenate(network_inputs)
    inputs["tools/opencv_segment.py"] = opencv_tool_inputs(export, folder)
    return inputs


@pytest.mark.slow
@pytest.mark.parametrize("steps,exact", [
    (dict(blur=0, background_every=2, clahe_clip_limit=0.0, crop=[4, 2, 56, 40]), True),
    (STEPS, False)], ids=["background-crop-resize", "every-step"])
def test_a_16_bit_frame_reaches_the_network_as_its_8_bit_counterpart_in_every_path(
        steps, exact, network_inputs, tmp_path):
    # frame16 = frame8 * 257: every path gives the 16-bit frames' network inputs bit for bit
    # alike, in 8-bit grey levels: those of the 8-bit frames exactly where no step rounds at
    # the native depth. The 16-bit box blur keeps what the 8-bit one rounds away, and
    # OpenCV's CLAHE is not scale-free across depths (65536 per-bin clip limits): there the
    # depths agree in units only (tests/data/test_preprocess.py measures how far).
    frames8 = make_frames(4, FRAME_SIZE)
    frames16 = frames8.astype(np.uint16) * 257
    config = segmentation_config(mean=[90.0], std=[40.0])
    config = dataclasses.replace(config, data=dataclasses.replace(
        config.data, preprocess=PreprocessConfig(**{**STEPS, **steps})))
    export = write_threshold_onnx(tmp_path / "model.onnx", metadata_for(config, "NCHW"))
    inputs = {}
    for depth, frames in ((8, frames8), (16, frames16)):
        folder = labelled_copy(frames, tmp_path / f"sequence{depth}")
        assert cv2.imread(str(folder / "frame_0000.png"), cv2.IMREAD_UNCHANGED).dtype == (
            frames.dtype)
        inputs[depth] = paths_inputs(config, folder, export, network_inputs,
                                     tmp_path / f"paths{depth}")
        for name, values in inputs[depth].items():
            np.testing.assert_array_equal(values, inputs[depth]["training"],
                                          err_msg=f"{depth}-bit frames, {name}")
    assert inputs[8]["training"].shape == (4, *MODEL_SIZE, 1)
    if exact:
        np.testing.assert_array_equal(inputs[16]["training"], inputs[8]["training"])
    else:
        assert np.abs(inputs[16]["training"]).max() < 2 * 255


def test_export_metadata_round_trip_carries_the_units_to_every_reader(tmp_path):
    # units "8bit" goes into the ONNX metadata and back, to tfseg and to the OpenCV tool;
    # an export from before "units" was recorded means frames at their own scale to both.
    config = segmentation_config(mean=[90.0], std=[40.0])
    metadata = metadata_for(config, "NCHW")
    assert metadata["preprocessing"]["units"] == "8bit"
    export = write_threshold_onnx(tmp_path / "model.onnx", metadata)
    read = read_onnx_metadata(export)
    assert read["preprocessing"] == metadata["preprocessing"]
    assert preprocessing_of(read, export) == Preprocessing.from_config(config)
    tool = load_tool()
    steps, _, _ = tool.export_facts(tool.read_onnx_metadata(export), export)
    assert steps["units"] == "8bit"
    frame = np.array([[0, 257, 514, 65535]], np.uint16)
    np.testing.assert_array_equal(tool.in_units(frame, steps), [[0, 1, 2, 255]])

    old = {**metadata, "preprocessing": {key: value for key, value in
                                         metadata["preprocessing"].items() if key != "units"}}
    old_export = write_threshold_onnx(tmp_path / "old.onnx", old)
    assert preprocessing_of(read_onnx_metadata(old_export), old_export).units == "native"
    old_steps, _, _ = tool.export_facts(tool.read_onnx_metadata(old_export), old_export)
    assert old_steps["units"] == "native"
    np.testing.assert_array_equal(tool.in_units(frame, old_steps), frame)
    with pytest.raises(SystemExit, match="units 'centi'"):
        tool.preprocessing_steps({"preprocessing": json.dumps(
            {**metadata["preprocessing"], "units": "centi"})}, "model.onnx")


def test_evaluate_holds_an_old_export_to_8_bit_units_only_where_frames_are_8_bit():
    # An export from before "units" was recorded: on a recipe of 8-bit synthetic frames the
    # units are one preprocessing (and a model trained on 8-bit frames needs 8-bit units for
    # 16-bit ones); frames read from files may be 16-bit: export again.
    default = load_config(recipe_path("default"))
    assert default.data.synthetic.bit_depth == (8, 16)
    synthetic = dataclasses.replace(default, data=dataclasses.replace(
        default.data, synthetic=dataclasses.replace(default.data.synthetic, bit_depth=8)))
    old = metadata_for(synthetic, "NCHW")
    del old["preprocessing"]["units"]
    check_preprocessing(old, synthetic, "old.onnx")
    for config in (dataclasses.replace(synthetic, data=dataclasses.replace(
            synthetic.data, synthetic=dataclasses.replace(synthetic.data.synthetic,
                                                          bit_depth=[8, 16]))),
                   dataclasses.replace(synthetic, data=dataclasses.replace(
                       synthetic.data, source="interferograms", path="frames"))):
        with pytest.raises(TfsegError, match="old.onnx: exported for frames preprocessed with "
                                             "preprocessing.units='native', but the config "
                                             "gives '8bit'"):
            check_preprocessing(old, config, "old.onnx")
