"""Training and validation tf.data pipelines for a `Config`.

Sources yield single (image float32 HxWxC, mask uint8 HxW) frames; this module shuffles,
batches and prefetches them. Random augmentation is not here: it runs inside the training step
(`tfseg.data.augment`), on the accelerator.
"""

import tensorflow as tf

from tfseg.data.interferograms import synthetic_frames


def train_dataset(config):
    """Shuffled (images, masks) batches for the whole run: epochs x steps_per_epoch of them.

    A finite stream stops its background workers when training ends, and batch i is always
    the same batch, whatever happened before it.
    """
    train = config.train
    frames_needed = train.epochs * train.steps_per_epoch * train.batch_size
    sequences = -(-(frames_needed + config.data.shuffle_frames)
                 // config.data.synthetic.frames_per_sequence)
    frames = synthetic_frames(config.data, seed=train.seed, split="train",
                              num_sequences=sequences)
    frames = frames.shuffle(config.data.shuffle_frames, seed=train.seed)
    batches = frames.batch(train.batch_size, drop_remainder=True)
    return batches.take(train.epochs * train.steps_per_epoch).prefetch(tf.data.AUTOTUNE)


def validation_dataset(config):
    """The fixed held-out validation frames, decoded once and cached in memory.

    Every `val_frame_stride`-th frame of the validation stream is kept; each was preprocessed
    with its whole sequence, as at training time.
    """
    frames = synthetic_frames(config.data, seed=config.data.val_seed, split="validation",
                              num_sequences=config.data.val_sequences)
    frames = frames.shard(config.data.val_frame_stride, 0).cache()
    return frames.batch(config.train.batch_size).prefetch(tf.data.AUTOTUNE)
