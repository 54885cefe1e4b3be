"""Recurrent models (`tfseg.models.from_config.is_recurrent`) in the training run: a clip
batch seen as a batch of frames by the loss and statistics, and a held-out sequence run frame
by frame, in order, for validation.

Training: the clip model returns every output stacked over the T - warmup trained frames,
(B, T - warmup, ...); `trained_frames` folds them, and the masks of the same frames, into a
batch of B x (T - warmup) frames, so every per-frame loss, cascade and statistic applies
unchanged. Validation: `sequence_predictor` runs the step model over a whole sequence in one
tf.function, the state carried from zeros, and returns every frame's logits, which
`tfseg.tasks.validation.validate` scores as any model's.
"""

import numpy as np
import tensorflow as tf

from tfseg.models.clips import STATE


def fold_time(tensor):
    """(B, T, ...) -> (B x T, ...), frame t of clip b at index b x T + t."""
    shape = tf.shape(tensor)
    return tf.reshape(tensor, tf.concat([[shape[0] * shape[1]], shape[2:]], 0))


def trained_frames(masks, outputs, warmup):
    """A clip batch as the batch of its trained frames, for the loss and statistics.

    Args:
        masks: (B, T, H, W) masks of the whole clips, warm-up frames included.
        outputs: dict of the clip model's outputs, each (B, T - warmup, ...), "state" among
            them.
        warmup: int. The clips' warm-up frames (`data.clips.warmup`).

    Returns:
        (masks (B x (T - warmup), H, W), outputs): the outputs folded alike, without the
        state (never trained on); the "logits" tensor itself when no other output is left
        (no cascade), a dict otherwise, as per-frame models return.
    """
    outputs = {key: fold_time(value) for key, value in outputs.items() if key != STATE}
    return fold_time(masks[:, warmup:]), (outputs if len(outputs) > 1 else outputs["logits"])


def sequence_predictor(step_model, *, jit_compile=False):
    """`predict(frames)`: a step model run over the frames of ONE sequence, in order.

    The state starts at zeros and each frame's new state feeds the next frame, inside one
    tf.function (a `tf.while_loop` over the frames, traced once for any sequence length).

    Args:
        step_model: keras.Model. Inputs pixels (B, H, W, C) and state, in that order, and a
            dict of outputs with "logits" and the new "state" (`build_model(config)` of a
            recurrent config).
        jit_compile: bool. Compiles each step with XLA. Defaults to False.

    Returns:
        A callable float32 (N, H, W, C) raw pixels, frames 0..N-1 of a sequence -> numpy
        float32 (N, H, W, K) logits, frame by frame.
    """
    frame_shape, state_shape = (tuple(tensor.shape[1:]) for tensor in step_model.inputs)

    def step(frame, state):
        outputs = step_model([frame, state], training=False)
        return (tf.cast(outputs["logits"][0], tf.float32),
                tf.cast(outputs[STATE], tf.float32))

    if jit_compile:
        step = tf.function(step, jit_compile=True)

    @tf.function(input_signature=[tf.TensorSpec((None, *frame_shape), tf.float32)])
    def run(frames):
        count = tf.shape(frames)[0]

        def body(index, state, logits):
            frame_logits, state = step(frames[index][None], state)
            return index + 1, state, logits.write(index, frame_logits)

        _, _, logits = tf.while_loop(
            lambda index, *_: index < count, body,
            (0, tf.zeros((1, *state_shape), tf.float32), tf.TensorArray(tf.float32, count)))
        return logits.stack()

    return lambda frames: run(np.asarray(frames, np.float32)).numpy()
