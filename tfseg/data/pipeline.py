"""Training and validation tf.data pipelines for a `Config`.

Sources yield single (image float32 HxWxC, mask uint8 HxW) frames; this module caches,
shuffles, batches and prefetches them. Random augmentation is not here: it runs inside the
training step (`tfseg.data.augment`), on the accelerator.
"""

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from tfseg.data import camvid, interferograms, super_resolution, tfds_source
from tfseg.data.preprocess import Preprocessing
from tfseg.data.sequences import find_sequences
from tfseg.utils.errors import TfsegError

log = logging.getLogger(__name__)


@dataclass
class Datasets:
    """The run's input: `train` (exactly epochs x steps_per_epoch batches) and `validation`
    batches, plus the files of any bad frames skipped so far (`data.bad_frames: skip`)."""

    train: tf.data.Dataset
    validation: tf.data.Dataset
    skipped: list = field(default_factory=list)


def make_datasets(config, input_size=None):
    """Both pipelines of `config`; folder sources are listed and checked here, up front, and
    a TFDS data set is opened and checked against the config (`tfds_source`).

    `input_size` (H, W), of a network made at another size than the config's (an export made
    with `--size`), preprocesses segmentation frames at that size, as `python -m
    tfseg.predict` does for it, and keeps the masks at the config's size
    (`Preprocessing.for_network_at`).

    Raises:
        TfsegError: a data folder is missing, empty or holds badly labelled frames, or a TFDS
            data set is missing or does not fit the config.
    """
    configured = Preprocessing.from_config(config)   # of every frame a network sees
    preprocessing = configured.for_network_at(input_size) if input_size else configured
    if preprocessing is not configured:
        # The config's data.cache files hold frames at the config's size: not these.
        config = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                      cache="none"))
    if config.data.source == "synthetic":
        return Datasets(_synthetic_train(config, preprocessing),
                        _synthetic_validation(config, preprocessing))
    if config.model.task == "super_resolution":   # HR folders or a TFDS data set
        return _super_resolution(config)
    if config.data.source in ("camvid", "tfds"):
        # Frames are used at their stored size, which must be data.height x data.width,
        # unless data.resize_frames resizes them to it.
        shape = (config.data.height, config.data.width)
        resize = config.data.resize_frames
        splits = tfds_source.segmentation_splits(config) if config.data.source == "tfds" else (
            camvid.read_segnet(config.data.path, split, size=None if resize else shape,
                               num_classes=config.model.num_classes,
                               ignore_label=config.data.ignore_label)
            for split in ("train", "val"))
        train, validation = (frames.map(
            lambda image, mask: _frame_of_size(image, mask, preprocessing),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True) for frames in splits)
        return _datasets_from_frames(train, validation, config)
    skipped = []
    train_frames, val_frames, backgrounds = split_interferograms(config.data, preprocessing,
                                                                 skipped)
    runtime_skipped = skipped if config.data.bad_frames == "skip" else None
    train = interferograms.folder_frames(train_frames, backgrounds, preprocessing,
                                         skipped=runtime_skipped)
    validation = interferograms.folder_frames(val_frames, backgrounds, preprocessing,
                                              skipped=runtime_skipped)
    return _datasets_from_frames(train, validation, config, skipped)


def _datasets_from_frames(train, validation, config, skipped=None):
    """Cached, shuffled, repeated training batches and cached validation batches; `skipped`
    is the list the frame readers append bad frames to while they run."""
    train = _cached(train, config.data.cache, "train").shuffle(
        config.data.shuffle_frames, seed=config.train.seed,
        reshuffle_each_iteration=True).repeat()
    return Datasets(_run_batches(train, config),
                    _validation_batches(_cached(validation, config.data.cache, "validation"),
                                        config), [] if skipped is None else skipped)


def _frame_of_size(image, mask, preprocessing):
    """tf: a decoded (image, mask) made by `preprocessing` (in numpy, as every frame a network
    sees), of its static size: frames of another size are resized (area / nearest), which
    the readers allow only with `data.resize_frames`."""
    image, mask = tf.numpy_function(
        lambda image, mask: (preprocessing.image(image), preprocessing.mask(mask)),
        [image, mask], (tf.float32, mask.dtype), stateful=False)
    return (tf.ensure_shape(image, (*preprocessing.resize_to, preprocessing.channels)),
            tf.ensure_shape(mask, preprocessing.mask_size))


def split_interferograms(data, preprocessing, skipped=None):
    """Train and validation frames and each sequence's background (under `preprocessing`).

    With `val_path` the validation frames are that folder's; otherwise `val_fraction` of the
    frames, drawn with `split_seed` (the seed's ICNet split: 10 % with seed 1024). Every frame
    is read once first (`interferograms.frame_problems`): with `bad_frames` "error" a bad one
    fails now, before anything is written; with "skip" it is logged, appended to `skipped`
    and left out as if it were not in its folder (backgrounds included).

    Raises:
        TfsegError: a bad frame ("error"), or a folder without a usable frame left ("skip").
    """
    sequences = find_sequences(data.path)
    val_sequences = find_sequences(data.val_path) if data.val_path else []
    frames = {folder: interferograms.read_sequence(folder, data.labels)
              for folder in sequences + val_sequences}
    problems = interferograms.frame_problems(
        [frame for folder in frames for frame in frames[folder]], preprocessing.steps.crop)
    if problems and data.bad_frames == "error":
        raise TfsegError(problems[0][1])
    for _, message in problems:
        log.warning("tfseg: skipping a bad frame: %s", message)
    if skipped is not None:
        skipped.extend(str(frame.path) for frame, _ in problems)
    bad = {frame.path for frame, _ in problems}
    frames = {folder: [frame for frame in folder_frames if frame.path not in bad]
              for folder, folder_frames in frames.items()}
    for root, folders in ((data.path, sequences), (data.val_path, val_sequences)):
        if folders and not any(frames[folder] for folder in folders):
            first = next(message for frame, message in problems
                         if frame.path.parent in folders)
            raise TfsegError(f"{root}: no usable frame left, every frame is bad and skipped "
                             f"(data.bad_frames: skip); the first: {first}")
    backgrounds = {folder: interferograms.sequence_background(folder_frames, preprocessing)
                   for folder, folder_frames in frames.items() if folder_frames}
    train = [frame for folder in sequences for frame in frames[folder]]
    if val_sequences:
        validation = [frame for folder in val_sequences for frame in frames[folder]]
    else:
        order = np.random.default_rng(data.split_seed).permutation(len(train))
        count = max(1, round(data.val_fraction * len(train)))
        if count >= len(train):
            raise TfsegError(f"{data.path}: {len(train)} frame(s) cannot be split into "
                             f"training and validation (data.val_fraction "
                             f"{data.val_fraction}); add frames or set data.val_path")
        held_out = set(order[:count].tolist())
        validation = [frame for i, frame in enumerate(train) if i in held_out]
        train = [frame for i, frame in enumerate(train) if i not in held_out]
    return train, validation, backgrounds


def _cached(frames, cache, split):
    """Decoded, preprocessed frames kept in memory ("memory"), in files at a path prefix, or
    not at all ("none")."""
    if cache == "none":
        return frames
    return frames.cache("" if cache == "memory" else f"{cache}-{split}")


def _run_batches(frames, config):
    """Exactly the run's epochs x steps_per_epoch batches, prefetched.

    The tf.data autotuner is off for this long-lived stream: its model thread sleeps for up to
    a minute between rounds, and releasing the iterator at the end of training waited for it
    (10-40 s after every run here). AUTOTUNE values then keep their starting values, which
    need no model thread: a parallel map runs min(16, CPU cores) calls at once, and the
    prefetch buffer grows by its own rule whenever the consumer finds it empty.
    """
    train = config.train
    batches = frames.batch(train.batch_size, drop_remainder=True)
    options = tf.data.Options()
    options.autotune.enabled = False
    return batches.take(train.epochs * train.steps_per_epoch).prefetch(
        tf.data.AUTOTUNE).with_options(options)


def _validation_batches(frames, config):
    return frames.batch(config.train.batch_size).prefetch(tf.data.AUTOTUNE)


def _super_resolution(config):
    """Random (LR, HR) training patches of the HR folders or TFDS images, and whole validation
    images (batch 1: sizes differ); images smaller than a patch are listed in `skipped`."""
    options, skipped = config.data.super_resolution, []
    if config.data.source == "tfds":
        train, validation = tfds_source.super_resolution_splits(config, skipped)
    else:
        train = super_resolution.training_pairs(
            options.train, factor=config.model.scale, patch_size=options.patch_size,
            blur_sigma=options.blur_sigma, seed=config.train.seed, skipped=skipped)
        validation = super_resolution.evaluation_pairs(options.validation,
                                                       factor=config.model.scale)
    return Datasets(_run_batches(train, config), validation.cache(), skipped)


def _synthetic_train(config, preprocessing):
    """Synthetic sequences rendered on the fly: every training frame is new. A finite stream
    stops its background workers when training ends, and batch i is always the same batch."""
    train = config.train
    frames_needed = train.epochs * train.steps_per_epoch * train.batch_size
    sequences = -(-(frames_needed + config.data.shuffle_frames)
                  // config.data.synthetic.frames_per_sequence)
    frames = interferograms.synthetic_frames(config.data.synthetic, preprocessing,
                                             seed=train.seed, split="train",
                                             num_sequences=sequences)
    return _run_batches(frames.shuffle(config.data.shuffle_frames, seed=train.seed), config)


def _synthetic_validation(config, preprocessing):
    """The fixed held-out synthetic frames, rendered once and cached in memory.

    Every `val_frame_stride`-th frame of the validation stream is kept; each was preprocessed
    with its whole sequence, as at training time.
    """
    frames = interferograms.synthetic_frames(config.data.synthetic, preprocessing,
                                             seed=config.data.val_seed,
                                             split="validation",
                                             num_sequences=config.data.val_sequences)
    return _validation_batches(frames.shard(config.data.val_frame_stride, 0).cache(), config)
