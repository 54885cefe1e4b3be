"""Training and validation tf.data pipelines for a `Config`.

Sources yield single (image float32 HxWxC, mask uint8 HxW) frames; this module caches,
shuffles, batches and prefetches them. Random augmentation is not here: it runs inside the
training step (`tfseg.data.augment`), on the accelerator.

Clip mode, for recurrent models (`RECURRENT_MODELS`; sources "synthetic" and
"interferograms"), built from `tfseg.data.clips`; frames are preprocessed exactly as above:

- train: exactly epochs x steps_per_epoch batches of clips, images (B, T, H, W, C) float32
  and masks (B, T, H, W) uint8, T = data.clips.length consecutive frames of one sequence in
  order. Synthetic sequences are rendered on the fly and cut into clips side by side (frames
  0..T-1, T..2T-1, ...: every training frame is new, as for single frames; a sequence needs
  at least T frames). Folder sequences give a clip at every start 0..N-T (they are reused
  epoch after epoch), drawn across all sequences at once (`clips.mixed_clips`) so that
  clips of one sequence, which look alike, are spread out. The shuffle buffer holds
  data.shuffle_frames // T clips. Folders shorter than T frames are not trained on.
- validation: whole held-out sequences in order, one per element, images (1, N, H, W, C)
  and masks (1, N, H, W), N the sequence's frames (it may differ between folders, so the
  spec's N is None). Synthetic: data.val_sequences sequences of frames_per_sequence frames
  (data.val_frame_stride does not apply: the frames must stay consecutive). Folders: the
  sequences of data.val_path, else the last ceil(data.val_fraction x count) sequence
  folders of data.path (at least one, and one left to train on): a random split of frames
  would cut sequences apart. Cached in memory (synthetic) or per data.cache (folders).
- A frame skipped as bad (data.bad_frames: skip) is left out of its sequence, so a clip may
  step over it.
"""

import dataclasses
import logging
import math
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from tfseg.config.schema import RECURRENT_MODELS
from tfseg.data import camvid, clips, interferograms, super_resolution, tfds_source
from tfseg.data.preprocess import Preprocessing
from tfseg.data.sequences import find_sequences
from tfseg.utils.errors import TfsegError

log = logging.getLogger(__name__)


@dataclass
class Datasets:
    """The run's input: `train` (exactly epochs x steps_per_epoch batches) and `validation`
    batches (of clips and of whole sequences for recurrent models: module docstring), plus
    the files of any bad frames skipped so far (`data.bad_frames: skip`)."""

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
    if config.model.name in RECURRENT_MODELS:
        return _clip_datasets(config, preprocessing)
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
    sequences, val_sequences, frames, backgrounds = _read_sequences(data, preprocessing,
                                                                    skipped)
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


def split_sequences(data, preprocessing, skipped=None):
    """Training and validation sequences, each the list of its usable frames in file order,
    and each sequence's background: `split_interferograms` for recurrent models, which
    validate on whole held-out sequences.

    With `val_path` the validation sequences are its folders; otherwise the last
    ceil(`val_fraction` x count) sequence folders of `path`, at least one, and at least one
    left for training. Folders without a usable frame are left out.

    Raises:
        TfsegError: as `split_interferograms`, or `path` holds one sequence folder and
            `val_path` is not set.
    """
    sequences, val_sequences, frames, backgrounds = _read_sequences(data, preprocessing,
                                                                    skipped)
    if not val_sequences:
        if len(sequences) < 2:
            raise TfsegError(f"{data.path}: recurrent models validate on whole held-out "
                             f"sequences: set data.val_path or give at least 2 sequence "
                             f"folders")
        # Rounded first: 0.3 x 10 is 3.0000000000000004 in floating point.
        count = min(len(sequences) - 1,
                    max(1, math.ceil(round(data.val_fraction * len(sequences), 9))))
        sequences, val_sequences = sequences[:-count], sequences[-count:]
    validation = [frames[folder] for folder in val_sequences if frames[folder]]
    if not validation:
        raise TfsegError(f"{data.val_path or data.path}: no usable frame left in the held-out "
                         f"sequence(s) {', '.join(folder.name for folder in val_sequences)}")
    return [frames[folder] for folder in sequences if frames[folder]], validation, backgrounds


def _read_sequences(data, preprocessing, skipped):
    """The training and validation sequence folders, {folder: its usable frames} and
    {folder: background}, every frame checked once (`split_interferograms`)."""
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
    return sequences, val_sequences, frames, backgrounds


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
    """The fixed held-out synthetic frames, rendered once and cached as `data.cache` says.

    Every `val_frame_stride`-th frame of the validation stream is kept; each was preprocessed
    with its whole sequence, as at training time.
    """
    frames = interferograms.synthetic_frames(config.data.synthetic, preprocessing,
                                             seed=config.data.val_seed,
                                             split="validation",
                                             num_sequences=config.data.val_sequences)
    return _validation_batches(_cached(frames.shard(config.data.val_frame_stride, 0),
                                       config.data.cache, "validation"), config)


def _clip_datasets(config, preprocessing):
    """Clips to train a recurrent model on and whole sequences to validate it on (module
    docstring)."""
    data, length = config.data, config.data.clips.length
    shuffle_clips = max(1, data.shuffle_frames // length)
    if data.source == "synthetic":
        return Datasets(_synthetic_train_clips(config, preprocessing, shuffle_clips),
                        interferograms.synthetic_sequences(
                            data.synthetic, preprocessing, seed=data.val_seed,
                            split="validation", num_sequences=data.val_sequences,
                        ).map(clips.batch_of_one).cache().prefetch(tf.data.AUTOTUNE))
    skipped = []
    train, validation, backgrounds = split_sequences(data, preprocessing, skipped)
    runtime_skipped = skipped if data.bad_frames == "skip" else None

    def frames_of(sequence):
        return interferograms.folder_frames(sequence, backgrounds, preprocessing,
                                            skipped=runtime_skipped)

    too_short = [sequence[0].path.parent.name for sequence in train if len(sequence) < length]
    if len(too_short) == len(train):
        raise TfsegError(f"{data.path}: no training sequence holds a clip of data.clips.length "
                         f"{length} frames (the longest has {max(map(len, train), default=0)})")
    if too_short:
        log.warning("tfseg: sequence folder(s) %s hold fewer than data.clips.length %d frames: "
                    "not trained on", ", ".join(too_short), length)
    train = clips.mixed_clips(
        [(_cached(frames_of(sequence), data.cache, f"train-{index}"), len(sequence))
         for index, sequence in enumerate(train)], length, 1, config.train.seed)
    validation = _cached(clips.whole_sequences(
        [(frames_of(sequence), len(sequence)) for sequence in validation]), data.cache,
        "validation-sequences")
    return Datasets(_run_batches(train.shuffle(shuffle_clips, seed=config.train.seed), config),
                    validation.prefetch(tf.data.AUTOTUNE), skipped)


def _synthetic_train_clips(config, preprocessing, shuffle_clips):
    """Synthetic sequences rendered on the fly, cut into clips side by side: every training
    frame is new, and batch i is always the same batch (`_synthetic_train`)."""
    train, length = config.train, config.data.clips.length
    spec = config.data.synthetic
    per_sequence = clips.clip_count(spec.frames_per_sequence, length, length)
    if not per_sequence:
        raise TfsegError(f"data.clips.length {length} is longer than "
                         f"data.synthetic.frames_per_sequence {spec.frames_per_sequence}: a "
                         f"clip is consecutive frames of one sequence")
    clips_needed = train.epochs * train.steps_per_epoch * train.batch_size + shuffle_clips
    sequences = interferograms.synthetic_sequences(spec, preprocessing, seed=train.seed,
                                                   split="train",
                                                   num_sequences=-(-clips_needed // per_sequence))
    return _run_batches(clips.sequence_clips(sequences, length, length).shuffle(
        shuffle_clips, seed=train.seed), config)
