"""Clips of consecutive frames of one sequence, what a recurrent model trains on, and whole
sequences, what it validates on: the tf.data building blocks of `tfseg.data.pipeline`'s clip
mode. Frames come in as (image (H, W, C), mask (H, W)) elements of one sequence, in order.
"""

import functools

import tensorflow as tf


def clip_count(frames, length, shift):
    """How many clips of `length` frames, starting every `shift` frames, a sequence of
    `frames` frames holds (0 when it is shorter than a clip)."""
    return max(0, (frames - length) // shift + 1)


def clips_of(frames, length, shift):
    """tf.data: the frames of ONE sequence, in order -> its clips (images (length, H, W, C),
    masks (length, H, W)), starting at frames 0, shift, 2 x shift, ...; frames after the last
    whole clip are left out."""
    def clip(images, masks):
        return tf.data.Dataset.zip(images.batch(length, drop_remainder=True),
                                   masks.batch(length, drop_remainder=True))

    return frames.window(length, shift, drop_remainder=True).flat_map(clip)


def sequence_clips(sequences, length, shift):
    """tf.data: whole sequences (images (N, H, W, C), masks (N, H, W)) -> their clips
    (`clips_of`), sequence after sequence."""
    return sequences.flat_map(lambda images, masks: clips_of(
        tf.data.Dataset.from_tensor_slices((images, masks)), length, shift))


def mixed_clips(sequences, length, shift, seed):
    """An endless tf.data stream of the clips of several sequences, mixed.

    Each element is the next clip (`clips_of`; a sequence starts over after its last) of a
    sequence drawn with a probability proportional to its number of clips, so that every
    clip is equally likely; a shuffle buffer after it then only needs to span a few clips
    per sequence.

    Args:
        sequences: list of (frames, count): the tf.data frames of one sequence and how many
            there are. Sequences shorter than a clip are left out; one must hold a clip.
        length: int. Frames per clip.
        shift: int. Frames between the starts of consecutive clips of a sequence.
        seed: int. Seed of the draws.
    """
    counts = [clip_count(count, length, shift) for _, count in sequences]
    streams = [clips_of(frames, length, shift).repeat()
               for (frames, _), clips in zip(sequences, counts) if clips]
    weights = [clips / sum(counts) for clips in counts if clips]
    return tf.data.Dataset.sample_from_datasets(streams, weights, seed=seed)


def whole_sequences(sequences):
    """tf.data: one element per sequence, in the given order: images (1, N, H, W, C) and
    masks (1, N, H, W), a batch of one sequence of its N frames (N may differ between them).

    Args:
        sequences: list of (frames, count) as in `mixed_clips`; empty ones are left out.
    """
    elements = [frames.batch(count).map(batch_of_one) for frames, count in sequences if count]
    return functools.reduce(tf.data.Dataset.concatenate, elements)


def batch_of_one(images, masks):
    """A sequence (N, ...) as a batch of one sequence (1, N, ...)."""
    return images[None], masks[None]
