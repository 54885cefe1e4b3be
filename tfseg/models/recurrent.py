"""A convolutional GRU cell (Ballas et al., https://arxiv.org/abs/1511.06432): one step,
(input, state) -> new state, for models that carry a state from frame to frame.

Keras has `ConvLSTM2D`, but only as a whole-sequence layer, and no public step-wise cell and
no convolutional GRU. A streaming export (ONNX, OpenCV DNN) runs one frame per call and feeds
the state back in, so it needs the single step. GRU rather than LSTM: one state tensor instead
of two (a single extra input and output of the exported graph) and three gate convolutions
instead of four.

The step uses only Conv, Sigmoid, Tanh, Mul, Add, Sub and Concat, which tf2onnx converts and
OpenCV DNN 4.x and 5.x run.
"""

import keras


@keras.saving.register_keras_serializable(package="tfseg")
class ConvGRUCell(keras.layers.Layer):
    """One convolutional GRU step: `cell(inputs, state)` -> new state.

        z = sigmoid(conv_update([inputs, state]))          update gate
        r = sigmoid(conv_reset([inputs, state]))           reset gate
        c = tanh(conv_candidate([inputs, r * state]))      candidate
        new_state = state + z * (c - state)                = (1 - z) * state + z * c

    Each gate is a `kernel_size` x `kernel_size` "same" convolution with bias over the
    concatenated channels, so `inputs` and `state` share height and width; the state has
    `filters` channels and the new state lies in (-1, 1) once a zero state has been updated.

    Args:
        filters: int. Channels of the state (and of the new state).
        kernel_size: int. Odd size of the gate convolutions. Defaults to 3.
        **kwargs: base `Layer` arguments (`name`, `dtype`).

    Example:
        >>> cell = ConvGRUCell(8)
        >>> cell(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4, 8))).shape
        TensorShape([1, 4, 4, 8])
    """

    def __init__(self, filters, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(filters, int) or isinstance(filters, bool) or filters < 1:
            raise ValueError(f"`filters` must be a positive integer; received filters={filters!r}")
        if (not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 1
                or kernel_size % 2 == 0):
            raise ValueError(f"`kernel_size` must be a positive odd integer; received "
                             f"kernel_size={kernel_size!r}")
        self.filters = filters
        self.kernel_size = kernel_size
        self.update_gate, self.reset_gate, self.candidate = (
            keras.layers.Conv2D(filters, kernel_size, padding="same", activation=activation,
                                dtype=self.dtype_policy, name=gate)
            for gate, activation in (("update", "sigmoid"), ("reset", "sigmoid"),
                                     ("candidate", "tanh")))

    def build(self, inputs_shape, state_shape):
        if len(inputs_shape) != 4 or len(state_shape) != 4 or state_shape[-1] != self.filters:
            raise ValueError(f"{self.name}: expected inputs (batch, H, W, C) and a state "
                             f"(batch, H, W, {self.filters}); received {tuple(inputs_shape)} "
                             f"and {tuple(state_shape)}")
        joint = (*inputs_shape[:-1], inputs_shape[-1] + self.filters)
        for gate in (self.update_gate, self.reset_gate, self.candidate):
            gate.build(joint)

    def call(self, inputs, state):
        joint = keras.ops.concatenate([inputs, state], axis=-1)
        update = self.update_gate(joint)
        reset = self.reset_gate(joint)
        candidate = self.candidate(keras.ops.concatenate([inputs, reset * state], axis=-1))
        return state + update * (candidate - state)

    def compute_output_shape(self, inputs_shape, state_shape):
        return tuple(state_shape)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size}
