"""Streaming export of a recurrent model (issue 21): a static ONNX and a SavedModel taking
(frame, state) and returning (logits, state), whose state each runtime carries frame by frame
and keeps with Keras over a whole sequence; metadata saying so; predict, evaluate and
tools/opencv_segment.py resetting the state at each sequence; old exports unchanged."""

import json
from types import SimpleNamespace

import keras
import numpy as np
import onnx
import pytest
import tensorflow as tf
from conftest import assert_parity_results, available_opencv_runtimes
from test_opencv_segment import run_tool
from test_predict import make_frames, read_mask, write_frames

from tfseg.config import Config, DataConfig, ModelConfig
from tfseg.data.preprocess import Preprocessing
from tfseg.deploy import evaluation, inference, runtimes
from tfseg.deploy.exports import SEQUENCE_FRAMES, export_model, parity_sequence
from tfseg.deploy.metadata import (
    check_metadata,
    decode_metadata,
    encode_metadata,
    make_metadata,
    metadata_for,
    read_onnx_metadata,
    read_saved_model_metadata,
    recurrent_state,
    state_metadata,
)
from tfseg.models import randomize_batch_norm
from tfseg.models.from_config import build_model
from tfseg.utils.errors import TfsegError

SIZE = (64, 64)
STATE_SHAPE = (2, 2, 128)   # icnet_temporal's state at 64x64, width 0.5
FRAMES = 60                 # > 50: a state that drifts apart shows by the last frame
TOLERANCE = 1e-3


def recurrent_config(path):
    return Config(model=ModelConfig(name="icnet_temporal", num_classes=2,
                                    options={"width": 0.5}),
                  data=DataConfig(source="interferograms", path=str(path), height=SIZE[0],
                                  width=SIZE[1], mean=[90.0], std=[40.0]))


@pytest.fixture(scope="module")
def streaming_export(tmp_path_factory):
    """A tiny icnet_temporal step model exported (SavedModel, NCHW ONNX) and checked by
    `export_model` over one sequence of FRAMES frames in every runtime here."""
    folder = tmp_path_factory.mktemp("streaming")
    config = recurrent_config(folder / "frames")
    keras.utils.set_random_seed(0)
    model = build_model(config)
    randomize_batch_norm(model)
    frames = make_frames(FRAMES, SIZE)
    exported = export_model(model, metadata_for(config, "NCHW"), folder / "export",
                            frames[..., None].astype(np.float32),
                            runtimes=["onnxruntime", *available_opencv_runtimes()])
    return SimpleNamespace(model=model, config=config, exported=exported, frames=frames,
                           folder=folder)


@pytest.mark.slow
def test_recurrent_onnx_and_saved_model_match_keras_over_a_sequence(streaming_export):
    parity = streaming_export.exported["parity"]
    assert_parity_results(parity, ["savedmodel", "onnxruntime", *available_opencv_runtimes()])
    for label, result in parity.items():
        assert result["frames"] == FRAMES, label
        for figure in ("max_abs_diff", "last_frame_max_abs_diff", "state_max_abs_diff",
                       "last_state_max_abs_diff"):
            assert result[figure] <= TOLERANCE, (label, figure, result)
    report = json.loads((streaming_export.folder / "export" / "parity.json").read_text())
    assert report["recurrent"] and report["samples"] == FRAMES


@pytest.mark.slow
def test_recurrent_onnx_names_its_state_and_describes_it_in_its_metadata(streaming_export):
    path = streaming_export.exported["onnx"][0]
    graph = onnx.load(str(path)).graph
    shapes = {tensor.name: [d.dim_value for d in tensor.type.tensor_type.shape.dim]
              for tensor in [*graph.input, *graph.output]}
    height, width, channels = STATE_SHAPE
    assert [t.name for t in graph.input] == ["pixels", "state_in"]
    assert [t.name for t in graph.output] == ["logits", "state"]
    assert shapes["state_in"] == shapes["state"] == [1, channels, height, width]   # NCHW
    onnx_state = recurrent_state(read_onnx_metadata(path))
    assert onnx_state == state_metadata(STATE_SHAPE, "NCHW")["state"]
    saved = read_saved_model_metadata(streaming_export.exported["saved_model"])
    assert saved["recurrent"] and saved["state"]["shape"] == [1, *STATE_SHAPE]   # NHWC
    with runtimes.load(path) as loaded:
        assert loaded.recurrent and loaded.state_shape == STATE_SHAPE


def test_recurrent_metadata_round_trips_and_old_metadata_is_not_recurrent():
    metadata = {**metadata_for(recurrent_config("frames"), "NCHW"),
                **state_metadata(STATE_SHAPE, "NCHW")}
    assert metadata["recurrent"] is True
    assert metadata["state"]["input"] == "state_in" and metadata["state"]["output"] == "state"
    assert metadata["state"]["initial"] == "zeros" and metadata["state"]["shape"] == [1, 128, 2, 2]
    decoded = decode_metadata(encode_metadata(metadata))
    assert decoded == metadata and check_metadata(decoded, "x.onnx") == metadata
    assert recurrent_state(decoded) == metadata["state"]
    old = {key: value for key, value in metadata.items() if key not in ("recurrent", "state")}
    assert recurrent_state(old) is None
    assert metadata_for(Config(), "NCHW")["recurrent"] is False
    with pytest.raises(TfsegError, match=r"x.onnx: tfseg metadata state="):
        check_metadata({**metadata, "state": {"input": "state_in"}}, "x.onnx")
    with pytest.raises(TfsegError, match=r"tfseg metadata recurrent='yes'; expected true or false"):
        check_metadata({**metadata, "recurrent": "yes"}, "x.onnx")


def write_old_export(path):
    """A tfseg ONNX export from before "recurrent" was written: a 1x1 convolution (2 classes,
    logits = (x, -x)) with the metadata of its time."""
    config = Config(data=DataConfig(height=8, width=8))
    metadata = make_metadata(model="linknet", task="segmentation", input_size=(8, 8),
                             input_channels=1, layout="NCHW", mean=[0.0], std=[1.0],
                             preprocessing=Preprocessing.from_config(config),
                             class_names=["background", "sample"])
    del metadata["recurrent"]
    weights = onnx.numpy_helper.from_array(np.array([1.0, -1.0], np.float32).reshape(2, 1, 1, 1),
                                           "w")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Conv", ["pixels", "w"], ["logits"])], "old",
        [onnx.helper.make_tensor_value_info("pixels", onnx.TensorProto.FLOAT, [1, 1, 8, 8])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 2, 8, 8])],
        [weights])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.helper.set_model_props(proto, {**encode_metadata(metadata), "input_name": "pixels"})
    onnx.save(proto, str(path))
    return path


def test_an_old_export_without_the_recurrent_key_still_runs_frame_by_frame(tmp_path):
    path = write_old_export(tmp_path / "old.onnx")
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 8, 8, 1)).astype(np.float32)
    with inference.load_model(path, "onnxruntime") as model:
        assert not model.recurrent and model.state is None
        np.testing.assert_allclose(model(pixels), np.concatenate([pixels, -pixels], -1))
        with pytest.raises(TfsegError, match="carries no state"):
            model.advance(pixels)


def counting_runtime(log):
    """A recurrent Runtime whose state counts the frames seen since the last reset; its
    logits are (0, state) per pixel; `log` gets the state each frame starts from."""
    def step(frame, state):
        log.append(float(state.max()))
        logits = np.concatenate([np.zeros_like(frame), np.full_like(frame, state.max())], -1)
        return logits, state + 1

    return runtimes.Runtime("fake", lambda pixels, state: runtimes.run_frames(step, pixels,
                                                                              state),
                            version="fake", metadata={}, input_size=(8, 8), channels=1,
                            state_shape=(1, 1, 1))


def test_a_recurrent_runtime_carries_its_state_across_calls_until_reset():
    log = []
    runtime = counting_runtime(log)
    runtime(np.zeros((2, 8, 8, 1)))
    outputs, states = runtime.advance(np.zeros((1, 8, 8, 1)))
    assert log == [0, 1, 2] and states.shape == (1, 1, 1, 1) and runtime.state.max() == 3
    runtime.reset()
    _, states = runtime.run_sequence(np.zeros((3, 8, 8, 1)))
    assert log[3:] == [0, 1, 2] and states[:, 0, 0, 0].tolist() == [1, 2, 3]


def test_evaluation_scores_each_sequence_from_a_zero_state():
    log = []
    config = Config(data=DataConfig(height=8, width=8))
    sequences = np.zeros((2, 3, 8, 8, 1), np.float32), np.ones((2, 3, 8, 8), np.uint8)
    report = evaluation.score(counting_runtime(log), config, [sequences])
    assert log == [0, 1, 2, 0, 1, 2]   # two sequences of 3 frames, each from zeros
    assert report["frames"] == 6 and any("recurrent" in note for note in report["notes"])


def test_parity_sequence_runs_the_validation_frames_back_and_forth():
    sequences = np.arange(2 * 3, dtype=np.float32).reshape(2, 3, 1, 1, 1) * np.ones(
        (1, 1, 2, 2, 1), np.float32)
    validation = tf.data.Dataset.from_tensor_slices((sequences, sequences[..., 0])).batch(1)
    frames = parity_sequence(validation, 9, (2, 2))
    assert frames[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5, 4, 3, 2]
    assert SEQUENCE_FRAMES >= 50


def two_sequences(root):
    """Folders root/a and root/b of 6 raw 64x64 frames each (b: another seed)."""
    write_frames(root / "a", make_frames(6, SIZE, seed=1))
    write_frames(root / "b", make_frames(6, SIZE, seed=2))
    return root


def masks_of(folder):
    """{file name: mask} of the masks in `folder`, as bytes (comparable with ==)."""
    return {path.name: read_mask(path).tobytes() for path in sorted(folder.glob("*_mask.png"))}


@pytest.mark.slow
def test_predict_resets_the_state_at_each_sequence_onnx(streaming_export, tmp_path):
    root = two_sequences(tmp_path / "frames")
    onnx_path = streaming_export.exported["onnx"][0]
    assert inference.predict_files(onnx_path, [root], tmp_path / "both") == 12
    inference.predict_files(onnx_path, [root / "b"], tmp_path / "alone")
    alone = masks_of(tmp_path / "alone")
    assert len(alone) == 6 and masks_of(tmp_path / "both" / "b") == alone
    # The state matters: sequence b run on from a's state gives other logits.
    frames = {name: make_frames(6, SIZE, seed=seed)[..., None].astype(np.float32)
              for name, seed in (("a", 1), ("b", 2))}
    with runtimes.load(onnx_path) as model:
        fresh = model.run_sequence(frames["b"])[0]
        model.run_sequence(frames["a"])
        carried = model(frames["b"])
    assert np.abs(fresh - carried).max() > 1e-3


@pytest.mark.slow
def test_opencv_segment_tool_equals_predict_on_a_recurrent_export(streaming_export, tmp_path):
    root = two_sequences(tmp_path / "frames")
    onnx_path = streaming_export.exported["onnx"][0]
    inference.predict_files(onnx_path, [root / "b"], tmp_path / "predicted")
    result = run_tool(onnx_path, *sorted((root / "b").glob("*.png")), "--output",
                      tmp_path / "tool")
    assert result.returncode == 0, result.stderr[-2000:]
    assert masks_of(tmp_path / "tool") == masks_of(tmp_path / "predicted")
