"""Recurrent models (`tfseg.models.from_config.is_recurrent`) in the training run: a clip
batch seen as a batch of frames by the loss and statistics.

Training: the clip model returns every output stacked over the T - warmup trained frames,
(B, T - warmup, ...); `trained_frames` folds them, and the masks of the same frames, into a
batch of B x (T - warmup) frames, so every per-frame loss, cascade and statistic applies
unchanged.
"""

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

