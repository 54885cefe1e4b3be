"""The recurrent ICNet (issue 21): the GRU step's equations and serialisation, ICNet's layers
plus exactly three gate convolutions, state shapes, a clip model equal to stepping frame by
frame whose batch norms see all its frames at once, the state used, no gradient into the
warm-up frames, weights copied from a per-frame ICNet, and the model a config describes for
training (clips) and for inference (one step)."""

import copy

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_CONFIG

from tfseg import models
from tfseg.config.loading import from_dict
from tfseg.config.schema import Config
from tfseg.models import randomize_batch_norm
from tfseg.models.clips import RecurrentParts, build_clip_model, build_step_model
from tfseg.models.from_config import (
    build_model,
    copy_weights,
    float32_copy,
    is_recurrent,
    uses_cascade,
)
from tfseg.models.icnet_temporal import build_icnet_temporal, state_shape
from tfseg.models.recurrent import ConvGRUCell

SIZE = (45, 77)   # odd: padded to 64 x 96 inside, a 2 x 3 state grid
WIDTH = 0.5
OPTIONS = {"input_shape": SIZE, "input_channels": 1, "num_classes": 3, "mean": [10.0],
           "std": [5.0], "width": WIDTH, "cascade_outputs": True}
# Trainable parameters of ICNet at 2 classes (tests/models/test_icnet.py, README).
ICNET_PARAMETERS = {1.0: 24_727_778, 0.5: 6_431_234}


def trainable_parameters(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def gru_parameters(channels, kernel=3):
    """Three gate convolutions (update, reset, candidate), each k x k over the input and the
    state concatenated (2S channels) to S channels, with bias."""
    return 3 * (kernel * kernel * 2 * channels * channels + channels)


def pixels(batch=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 40, (batch, *SIZE, 1)).astype(np.float32)


def zero_state(batch=2):
    return np.zeros((batch, *state_shape(SIZE, WIDTH)), np.float32)


@pytest.fixture(scope="module")
def step():
    """The normalised step model at width 0.5 with cascade outputs, batch norm randomised."""
    model = models.build("icnet_temporal", **OPTIONS)
    randomize_batch_norm(model)
    model([pixels(batch=1), zero_state(batch=1)], training=False)   # first-call overheads
    return model


def build_tiny_step():
    """A generic step model in milliseconds: 8 x 8 frames (a batch norm first, its moving
    mean the last batch's mean), a 4 x 4 x 3 state, a batch norm in the decoder."""
    image = keras.Input((8, 8, 1), name="image")
    x = keras.layers.BatchNormalization(momentum=0.0, name="tiny_norm")(image)
    x = keras.layers.Conv2D(3, 3, strides=2, padding="same")(x)
    encoder = keras.Model(image, {"x": x, "skip": image}, name="tiny_encoder")
    inputs = {"state": keras.Input((4, 4, 3), name="state"),
              "skip": keras.Input((8, 8, 1), name="skip")}
    y = keras.layers.Concatenate()([keras.layers.UpSampling2D(2)(inputs["state"]),
                                    inputs["skip"]])
    y = keras.layers.BatchNormalization()(keras.layers.Conv2D(2, 1)(y))
    decoder = keras.Model(inputs, {"logits": y}, name="tiny_decoder")
    parts = RecurrentParts(encoder, ConvGRUCell(3), decoder, cell_input="x")
    return build_step_model(parts, (4, 4, 3), "tiny")


@pytest.fixture(scope="module", params=["tiny", pytest.param("icnet_temporal",
                                                             marks=pytest.mark.slow)])
def step_and_clip(request):
    """A step model and a clip model of three frames, the first a warm-up frame, around it
    (shared weights): the generic tiny step (fast) and the recurrent ICNet (slow)."""
    if request.param == "tiny":
        step = build_tiny_step()
    else:
        step = request.getfixturevalue("step")
    return step, build_clip_model(step, 3, warmup=1)


def frames_for(step, batch=2):
    """Three frames of `step`'s size and its zero state."""
    frame, state = (tuple(tensor.shape[1:]) for tensor in step.inputs)
    rng = np.random.default_rng(0)
    return (rng.uniform(0, 40, (batch, 3, *frame)).astype(np.float32),
            np.zeros((batch, *state), np.float32))


def test_state_shape_is_the_one_32nd_grid_of_the_padded_input():
    assert state_shape((45, 77), 0.5) == (2, 3, 128)
    assert state_shape((64, 64, 1), 1.0) == (2, 2, 256)
    assert state_shape((1024, 1024)) == (32, 32, 256)


def test_gru_cell_computes_the_gru_equations():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)
    h = rng.uniform(-1, 1, (2, 3, 5, 6)).astype(np.float32)
    cell = ConvGRUCell(6, kernel_size=1)
    new = cell(x, h).numpy()
    (wz, bz), (wr, br), (wc, bc) = ((g.kernel.numpy()[0, 0], g.bias.numpy())
                                    for g in (cell.update_gate, cell.reset_gate,
                                              cell.candidate))
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    xh = np.concatenate([x, h], -1)
    z, r = sigmoid(xh @ wz + bz), sigmoid(xh @ wr + br)
    c = np.tanh(np.concatenate([x, r * h], -1) @ wc + bc)
    np.testing.assert_allclose(new, (1 - z) * h + z * c, atol=1e-5)


def test_gru_cell_round_trips_through_its_config():
    cell = ConvGRUCell(6, kernel_size=5, name="gru")
    x, h = np.ones((1, 4, 4, 3), np.float32), np.full((1, 4, 4, 6), 0.5, np.float32)
    expected = cell(x, h).numpy()
    config = keras.saving.serialize_keras_object(cell)
    assert config["registered_name"] == "tfseg>ConvGRUCell"
    clone = keras.saving.deserialize_keras_object(config)
    assert (clone.filters, clone.kernel_size, clone.name) == (6, 5, "gru")
    clone.set_weights(cell.get_weights())
    np.testing.assert_allclose(clone(x, h).numpy(), expected, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("width,expected", [
    # 24,727,778 + 3 x (9 x 512 x 256 + 256) = 24,727,778 + 3,539,712 = 28,267,490
    (1.0, 28_267_490),
    # 6,431,234 + 3 x (9 x 256 x 128 + 128) = 6,431,234 + 885,120 = 7,316,354
    (0.5, 7_316_354),
])
def test_parameter_count(width, expected):
    model = build_icnet_temporal(num_classes=2, input_shape=(64, 64, 1), width=width)
    assert expected == ICNET_PARAMETERS[width] + gru_parameters(int(256 * width))
    assert trainable_parameters(model) == expected


def test_step_model_inputs_and_outputs(step):
    assert [tensor.name for tensor in step.inputs] == ["pixels", "state"]
    outputs = step([pixels(), zero_state()], training=False)
    assert {key: tuple(value.shape) for key, value in outputs.items()} == {
        "logits": (2, *SIZE, 3), "logits_4": (2, 12, 20, 3), "logits_8": (2, 6, 10, 3),
        "logits_16": (2, 3, 5, 3), "state": (2, 2, 3, 128)}


@pytest.mark.slow
def test_call_without_training_flag_is_inference(step):
    inputs = [pixels(), zero_state()]
    inference = step(inputs, training=False)["logits"].numpy()
    np.testing.assert_allclose(step(inputs)["logits"].numpy(), inference, atol=1e-4)
    assert np.abs(step(inputs, training=True)["logits"].numpy() - inference).max() > 1e-3


def test_the_state_changes_the_output(step):
    # One frame twice in a batch, with a zero and a random state (batch norm in inference
    # mode: the two samples are independent).
    x = np.repeat(pixels(batch=1), 2, axis=0)
    state = zero_state()
    state[1] = np.random.default_rng(1).uniform(-1, 1, state.shape[1:])
    outputs = step([x, state], training=False)
    for key in ("logits", "state"):
        assert np.abs(outputs[key][0] - outputs[key][1]).max() > 1e-3, key


def test_clip_model_equals_stepping_frame_by_frame(step_and_clip):
    step, clip = step_and_clip
    frames, state = frames_for(step)
    outputs = clip(frames, training=False)
    assert set(outputs) == set(step.output)
    assert all(value.shape[:2] == (2, 2) for value in outputs.values())   # T - warmup frames
    for t in range(3):
        expected = step([frames[:, t], state], training=False)
        state = expected["state"].numpy()
        if t >= 1:
            for key, value in expected.items():
                np.testing.assert_allclose(outputs[key][:, t - 1], value, atol=1e-5,
                                           err_msg=f"{key} at frame {t}")


def test_clip_model_normalises_each_batch_norm_over_all_frames_of_the_batch(step_and_clip,
                                                                            monkeypatch):
    """Training mode: each batch norm runs once per clip-model call, on the B x T frames
    (encoder) or the B x (T - warmup) trained frames (decoder), not T times on B frames."""
    step, clip = step_and_clip
    frames = frames_for(step)[0]
    norms = [layer for layer in models.all_layers(step)
             if isinstance(layer, keras.layers.BatchNormalization)]
    calls = {}
    for kind in {type(layer) for layer in norms}:
        def spy(layer, inputs, *args, kind=kind, call=kind.call, **kwargs):
            if type(layer) is kind:   # not again in a subclass's super().call
                calls.setdefault(layer.name, []).append(inputs.shape[0])
            return call(layer, inputs, *args, **kwargs)
        monkeypatch.setattr(kind, "call", spy)
    clip(frames, training=True)
    parts = step.recurrent_parts
    for model, batch in ((parts.encoder, 2 * 3), (parts.decoder, 2 * 2)):
        names = [layer.name for layer in models.all_layers(model)
                 if isinstance(layer, keras.layers.BatchNormalization)]
        assert names and all(calls[name] == [batch] for name in names), (model.name, calls)


def test_clip_model_batch_norm_statistics_are_those_of_all_frames():
    step = build_tiny_step()
    frames = frames_for(step)[0]
    build_clip_model(step, 3, warmup=1)(frames, training=True)
    # momentum 0: the moving mean is the one batch's mean, every frame of every clip.
    norm = step.recurrent_parts.encoder.get_layer("tiny_norm")
    np.testing.assert_allclose(norm.moving_mean.numpy(), [frames.mean()], rtol=1e-5)


def test_clip_model_weights_are_the_step_models_in_order(step_and_clip):
    step, clip = step_and_clip
    assert [w.path for w in clip.weights] == [w.path for w in step.weights]
    assert all(ours is theirs for ours, theirs in zip(clip.weights, step.weights))


def test_no_gradient_reaches_the_warmup_frames(step_and_clip):
    step, clip = step_and_clip
    frames = tf.constant(frames_for(step, batch=1)[0])
    with tf.GradientTape() as tape:
        tape.watch(frames)
        loss = tf.reduce_sum(clip(frames, training=False)["logits"])
    gradient = np.abs(tape.gradient(loss, frames).numpy()).sum(axis=(0, 2, 3, 4))
    assert gradient[0] == 0.0 and gradient[1] > 0 and gradient[2] > 0, gradient


@pytest.mark.slow
def test_copy_weights_from_icnet_leaves_only_the_gru_new():
    icnet = models.build("icnet", **OPTIONS)
    temporal = models.build("icnet_temporal", **OPTIONS)
    randomize_batch_norm(icnet, seed=3)
    with pytest.raises(ValueError, match="lacks layers of icnet_temporal_model: "
                                         r"\['icnet_temporal_gru'\]"):
        copy_weights(icnet, temporal)
    assert copy_weights(icnet, temporal, partial=True) == ["icnet_temporal_gru"]
    source = {layer.name: layer for layer in models.all_layers(icnet)}
    for layer in models.all_layers(temporal):
        if layer.weights and not isinstance(layer, keras.Model) and layer.name in source:
            for ours, theirs in zip(layer.get_weights(), source[layer.name].get_weights()):
                np.testing.assert_array_equal(ours, theirs, err_msg=layer.name)


@pytest.mark.parametrize("call,message", [
    (lambda: build_icnet_temporal(num_classes=2, input_shape=(64, 64, 1), gru_kernel=2),
     "`gru_kernel` must be a positive odd integer; received gru_kernel=2"),
    (lambda: build_icnet_temporal(num_classes=2, input_shape=(64, 64, 1), width=0.3),
     "`width` must be one of"),
    (lambda: ConvGRUCell(0), "`filters` must be a positive integer"),
    (lambda: build_clip_model(keras.Sequential([keras.Input((4, 4, 1)),
                                                keras.layers.Conv2D(1, 1)]), 3),
     "a step model needs two inputs, a frame and 'state', and its `recurrent_parts`"),
])
def test_bad_arguments_raise_one_line_value_errors(call, message):
    with pytest.raises(ValueError, match=message) as error:
        call()
    assert "\n" not in str(error.value)


def test_clip_arguments_are_checked():
    step = build_tiny_step()
    for length, warmup, message in ((0, 0, "`clip_length` must be a positive integer"),
                                     (3, 3, r"`warmup` must be an integer in \[0, clip_")):
        with pytest.raises(ValueError, match=message):
            build_clip_model(step, length, warmup)


@pytest.mark.slow
def test_config_builds_clips_for_training_and_the_step_for_inference():
    raw = copy.deepcopy(TINY_CONFIG)
    raw["model"] = {"name": "icnet_temporal", "num_classes": 2, "input_channels": 1,
                    "options": {"width": 0.5}}
    raw["data"]["clips"] = {"length": 3, "warmup": 1}
    config = from_dict(Config, raw, source="test")
    assert is_recurrent(config) and uses_cascade(config)
    trained = build_model(config, for_training=True)
    assert trained.input_shape == (None, 3, 64, 64, 1)
    shapes = {key: tuple(value.shape) for key, value in trained.output.items()}
    assert shapes == {"logits": (None, 2, 64, 64, 2), "logits_4": (None, 2, 16, 16, 2),
                      "logits_8": (None, 2, 8, 8, 2), "logits_16": (None, 2, 4, 4, 2),
                      "state": (None, 2, 2, 2, 128)}
    randomize_batch_norm(trained)
    step = build_model(config)
    copy_weights(trained, step)   # training model -> evaluation model, as the trainer does
    inference = float32_copy(step, config)
    assert [tensor.name for tensor in inference.inputs] == ["pixels", "state"]
    assert set(inference.output) == {"logits", "state"}
    frames = np.random.default_rng(0).uniform(0, 40, (1, 3, 64, 64, 1)).astype(np.float32)
    state = np.zeros((1, *state_shape((64, 64), 0.5)), np.float32)
    for t in range(3):
        expected = inference([frames[:, t], state], training=False)
        state = expected["state"].numpy()
    np.testing.assert_allclose(trained(frames, training=False)["logits"][:, -1],
                               expected["logits"], atol=1e-4)
