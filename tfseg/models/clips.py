"""Unrolls a recurrent step model over a clip of frames, for training on sequences with
truncated back-propagation through time.

A step model is cut where its state enters (`RecurrentParts`): a frame-wise encoder, one
recurrent cell, a frame-wise decoder. The clip model runs the encoder ONCE on every frame of
the batch of clips folded into one batch, the cell alone frame after frame, and the decoder
once on the trained frames, so each batch normalisation layer computes its training
statistics over all the clips' frames at once, as per-frame training does (issue 21: batch
statistics of only the B frames of one time step disagree with the moving statistics used at
inference), and the convolutions run batched.

Model-agnostic: any step model built by `build_step_model` (`tfseg.models.icnet_temporal`).
"""

import dataclasses

import keras

STATE = "state"


@keras.saving.register_keras_serializable(package="tfseg")
class ZeroState(keras.layers.Layer):
    """Zeros of shape (batch, *`shape`), the batch size read from the input: the initial
    state of a recurrent model, inside the graph (no extra model input).

    Args:
        shape: tuple of ints. The state's shape without the batch.
    """

    def __init__(self, shape, **kwargs):
        super().__init__(**kwargs)
        self.state_shape = tuple(shape)

    def call(self, inputs):
        batch = keras.ops.shape(inputs)[0]
        return keras.ops.zeros((batch, *self.state_shape), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.state_shape)

    def get_config(self):
        return {**super().get_config(), "shape": self.state_shape}


@dataclasses.dataclass(frozen=True)
class RecurrentParts:
    """A step model cut at its recurrence, three parts sharing the step model's layers.

    Attributes:
        encoder: keras.Model. Frames (N, H, W, C) -> a dict of frame-wise features.
        cell: keras.layers.Layer. `cell(features[cell_input], state)` -> the new state.
        decoder: keras.Model. The other features and `"state"`, the new state, as a dict ->
            a dict of outputs (without the state).
        cell_input: str. The encoder's output the cell reads.
    """

    encoder: keras.Model
    cell: keras.layers.Layer
    decoder: keras.Model
    cell_input: str


def build_step_model(parts, state, name):
    """The step model of `parts`, one frame per call: frame and state in, the decoder's
    outputs and the new `"state"` out. `parts` is kept as its `recurrent_parts` attribute
    (untracked: the weights belong to the layers the model holds), for `build_clip_model`.

    Args:
        parts: RecurrentParts.
        state: tuple. The state's shape without the batch.
        name: str. Model name.

    Returns:
        A `keras.Model` with inputs (the encoder's input's name, e.g. `image`) and `state`,
        in that order.
    """
    frame = keras.Input(shape=parts.encoder.input_shape[1:], name=parts.encoder.inputs[0].name)
    state_input = keras.Input(shape=state, name=STATE)
    features = parts.encoder(frame)
    new_state = parts.cell(features[parts.cell_input], state_input)
    outputs = parts.decoder(decoder_inputs(parts, features, new_state))
    model = keras.Model([frame, state_input], {**outputs, STATE: new_state}, name=name)
    model.recurrent_parts = parts
    return model


def with_preprocessing(parts, frame, preprocessed):
    """`parts` whose encoder first applies the frame-wise layers from input `frame` to
    tensor `preprocessed` (e.g. the input normalisation of `tfseg.models.build`)."""
    encoder = keras.Model(frame, parts.encoder(preprocessed),
                          name=f"{parts.encoder.name}_preprocessed")
    return dataclasses.replace(parts, encoder=encoder)


def decoder_inputs(parts, features, new_state):
    """The decoder's input dict: the encoder's features but the cell's, and the new state."""
    return {**{key: value for key, value in features.items() if key != parts.cell_input},
            STATE: new_state}


def fold(x):
    """(B, T, ...) -> (B x T, ...) in a functional graph; frame t of clip b at b x T + t."""
    return keras.ops.reshape(x, (-1, *x.shape[2:]))


def unfold(x, length):
    """(B x T, ...) -> (B, T, ...), the inverse of `fold` for T = `length`."""
    return keras.ops.reshape(x, (-1, length, *x.shape[1:]))


def build_clip_model(step_model, clip_length, warmup=0):
    """The step model run over every frame of a clip, the state carried from frame to frame.

    The state starts at zeros. The first `warmup` frames only set the state: the state
    leaving them passes through `stop_gradient`, so no gradient reaches them (truncated
    back-propagation through time over the other frames), and their outputs are not
    computed. The encoder runs once on all B x T frames, the decoder once on the
    B x (T - warmup) trained frames, the cell T times; in inference mode the outputs equal
    stepping the step model frame by frame. The clip model's weights are the step model's,
    in the same order (`clip_model.get_weights()` loads into the step model).

    Args:
        step_model: a `keras.Model` with a `recurrent_parts` attribute (`build_step_model`)
            and two inputs, a frame (B, H, W, C) with static H, W, C and `"state"` (B, ...).
        clip_length: int. Frames per clip, T (static).
        warmup: int. Leading frames that only set the state, 0 <= warmup < T. Defaults to 0.

    Returns:
        A `keras.Model` named f"{step_model.name}_clip" from input `clip` (B, T, H, W, C) to
        a dict with every output of the step model (`"state"` included), each over the
        T - warmup trained frames on axis 1: (B, T - warmup, ...).

    Raises:
        ValueError: the step model or an argument is unsuitable.
    """
    parts = getattr(step_model, "recurrent_parts", None)
    names = [tensor.name for tensor in step_model.inputs]
    if not isinstance(parts, RecurrentParts) or len(names) != 2 or names[1] != STATE:
        raise ValueError(f"{step_model.name}: a step model needs two inputs, a frame and "
                         f"{STATE!r}, and its `recurrent_parts` (build_step_model); received "
                         f"inputs {names}")
    if not isinstance(clip_length, int) or isinstance(clip_length, bool) or clip_length < 1:
        raise ValueError(f"`clip_length` must be a positive integer; received "
                         f"clip_length={clip_length!r}")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or not 0 <= warmup < clip_length:
        raise ValueError(f"`warmup` must be an integer in [0, clip_length={clip_length}); "
                         f"received warmup={warmup!r}")
    frame_shape, state_shape = (tuple(tensor.shape[1:]) for tensor in step_model.inputs)
    clip = keras.Input(shape=(clip_length, *frame_shape), name="clip")
    features = {key: unfold(value, clip_length)
                for key, value in parts.encoder(fold(clip)).items()}
    state = ZeroState(state_shape, name=f"{step_model.name}_zero_state")(clip)
    states = []
    for t in range(clip_length):
        if t == warmup and warmup:
            state = keras.ops.stop_gradient(state)
        state = parts.cell(features[parts.cell_input][:, t], state)
        if t >= warmup:
            states.append(state)
    states = keras.ops.stack(states, axis=1)
    trained = {key: fold(value[:, warmup:]) for key, value in features.items()}
    outputs = parts.decoder(decoder_inputs(parts, trained, fold(states)))
    outputs = {key: unfold(value, clip_length - warmup) for key, value in outputs.items()}
    return keras.Model(clip, {**outputs, STATE: states}, name=f"{step_model.name}_clip")
