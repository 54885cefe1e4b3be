"""Unrolls a recurrent step model over a clip of frames, for training on sequences with
truncated back-propagation through time.

Model-agnostic: any functional step model with two inputs, the frame and one named "state",
and a dict of outputs holding the new "state" (`tfseg.models.icnet_temporal` builds one).
"""

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


def build_clip_model(step_model, clip_length, warmup=0):
    """The step model run over every frame of a clip, the state carried from frame to frame.

    The state starts at zeros. The first `warmup` frames only set the state: their outputs
    are dropped and the state leaving them passes through `stop_gradient`, so no gradient
    reaches them (truncated back-propagation through time over the other frames). Every frame
    calls the same `step_model`: the clip model's weights are the step model's, in the same
    order (`clip_model.get_weights()` loads into the step model).

    Args:
        step_model: a functional `keras.Model` with two inputs, a frame (B, H, W, C) with
            static H, W, C and `"state"` (B, ...), returning a dict with the new `"state"`.
        clip_length: int. Frames per clip, T (static).
        warmup: int. Leading frames that only set the state, 0 <= warmup < T. Defaults to 0.

    Returns:
        A `keras.Model` named f"{step_model.name}_clip" from input `clip` (B, T, H, W, C) to
        a dict with every output of the step model (`"state"` included), each stacked over
        the T - warmup trained frames on axis 1: (B, T - warmup, ...).

    Raises:
        ValueError: the step model or an argument is unsuitable.
    """
    names = [tensor.name for tensor in step_model.inputs]
    if len(names) != 2 or STATE not in names:
        raise ValueError(f"{step_model.name}: a step model needs two inputs, a frame and "
                         f"{STATE!r}; received inputs {names}")
    if not isinstance(step_model.output, dict) or STATE not in step_model.output:
        raise ValueError(f"{step_model.name}: a step model must return a dict with the new "
                         f"{STATE!r}")
    if not isinstance(clip_length, int) or isinstance(clip_length, bool) or clip_length < 1:
        raise ValueError(f"`clip_length` must be a positive integer; received "
                         f"clip_length={clip_length!r}")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or not 0 <= warmup < clip_length:
        raise ValueError(f"`warmup` must be an integer in [0, clip_length={clip_length}); "
                         f"received warmup={warmup!r}")
    frame_index = 1 - names.index(STATE)
    frame_shape = tuple(step_model.inputs[frame_index].shape[1:])
    state_shape = tuple(step_model.inputs[1 - frame_index].shape[1:])
    clip = keras.Input(shape=(clip_length, *frame_shape), name="clip")
    state = ZeroState(state_shape, name=f"{step_model.name}_zero_state")(clip)
    trained = []
    for t in range(clip_length):
        if t == warmup and warmup:
            state = keras.ops.stop_gradient(state)
        step_inputs = [None, None]
        step_inputs[frame_index], step_inputs[1 - frame_index] = clip[:, t], state
        outputs = step_model(step_inputs)
        state = outputs[STATE]
        if t >= warmup:
            trained.append(outputs)
    stacked = {key: keras.ops.stack([outputs[key] for outputs in trained], axis=1)
               for key in trained[0]}
    return keras.Model(clip, stacked, name=f"{step_model.name}_clip")
