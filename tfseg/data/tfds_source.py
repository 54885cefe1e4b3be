"""`data.source: tfds`: a TensorFlow Datasets data set as a run's frames.

The data set is opened with `tfds.builder(name, data_dir=...)` and read with
`builder.as_dataset(split=...)`. It must already be prepared in `data_dir`: nothing is
downloaded, and a missing data set is one error naming it and the data_dir. Any prepared data
set is found, registered or not (TFDS reads its files), and importing this module registers the
project's own builders (`tfseg.data.tfds_builders`), so a recipe reads CamVid built by
`camvid_segnet` with

    data:
      source: tfds
      resize_frames: true   # its images have no fixed size in TFDS's description
      tfds: {name: camvid_segnet, data_dir: ~/tensorflow_datasets, ignore_ids: [11]}

Segmentation frames are (image float32 (H, W, C) 0..255, mask uint8 (H, W)), the other sources'
format, from the `image_key` feature and the `mask_key` one: class ids at the image's size, or
(N, 4) pixel boxes (x, y, w, h) drawn as class 1, as in interferogram folders (the
`interferograms` builder's `boxes`). Mask ids in `ignore_ids` become `data.ignore_label`.
Super-resolution reads the images only: random training patches and whole validation images,
as from HR folders (`tfseg.data.super_resolution`).

What the data set's description tells is checked when it is opened, before anything is
written: the splits, the features, the image channels against `model.input_channels`, a fixed
frame size against `data.height` x `data.width` (frames of any size need
`data.resize_frames: true`), and declared mask labels against `model.num_classes`.
"""

import os

import tensorflow as tf
import tensorflow_datasets as tfds

from tfseg.data import camvid, super_resolution
from tfseg.data import tfds_builders  # noqa: F401  (registers the project's builders by name)
from tfseg.data.preprocess import boxes_to_mask
from tfseg.utils.errors import TfsegError


def open_builder(options):
    """The TFDS builder of `options` (a `TfdsDataConfig`), prepared, with both splits.

    Raises:
        TfsegError: no such data set, a data set not prepared in the data_dir, or an unknown
            split, in one line naming the data set and the data_dir.
    """
    data_dir = os.path.expanduser(options.data_dir) if options.data_dir else None
    where = f"data_dir {data_dir or tfds.core.constants.DATA_DIR}"
    try:
        builder = tfds.builder(options.name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        raise TfsegError(f"data.tfds.name {options.name!r}: no such TFDS data set, neither "
                         f"registered nor prepared in {where}") from None
    except (ValueError, AssertionError) as error:   # a malformed name, config or version
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise TfsegError(f"data.tfds.name {options.name!r} ({where}): {reason}") from None
    # is_prepared() warns about a missing folder before saying so: ask only if there is one.
    if not builder.data_path.exists() or not builder.is_prepared():
        raise TfsegError(f"data.tfds.name {options.name!r}: not prepared in {where}; tfseg "
                         f"never downloads: build it there first (tfds build, or "
                         f"tfseg.data.tfds_builders.prepare for the project's builders)")
    for key in ("train_split", "val_split"):
        split = getattr(options, key)
        try:
            builder.info.splits[split]
        except (KeyError, ValueError):
            raise TfsegError(f"data.tfds.{key} {split!r}: not a split of {options.name} "
                             f"(it has {', '.join(sorted(builder.info.splits))}; slices such "
                             f"as 'train[:90%]' work too)") from None
    return builder


def segmentation_splits(config):
    """Training and validation frames of `config`'s TFDS data set.

    Returns:
        Two tf.data sets of single (image float32 (H, W, C) 0..255, mask uint8 (H, W))
        frames, in the data set's order, at their stored size.

    Raises:
        TfsegError: as `open_builder`, or a feature that does not fit the config.
    """
    options, data = config.data.tfds, config.data
    builder = open_builder(options)
    image_shape = _image_shape(builder, options, config.model.input_channels)
    if not data.resize_frames and image_shape[:2] != (data.height, data.width):
        size = ("of no fixed size" if None in image_shape[:2]
                else f"{image_shape[0]}x{image_shape[1]} (HxW)")
        raise TfsegError(f"data.tfds: {options.name}'s frames are {size}, not "
                         f"{data.height}x{data.width} (data.height x data.width); "
                         f"data.resize_frames: true resizes them")
    mask = _feature(builder, options, "mask_key")
    boxes = tuple(mask.shape) == (None, 4)
    if not boxes and len(mask.shape) not in (2, 3):
        raise TfsegError(f"data.tfds.mask_key {options.mask_key!r}: a feature of shape "
                         f"{tuple(mask.shape)} is neither a mask (H, W) or (H, W, 1) nor "
                         f"(N, 4) boxes")
    declared = getattr(mask, "num_classes", None)   # LabeledImage and ClassLabel say
    if declared is not None:
        extra = sorted(set(range(config.model.num_classes, declared)) - set(options.ignore_ids))
        if extra:
            raise TfsegError(f"data.tfds: {options.name}'s {options.mask_key} has {declared} "
                             f"labels but model.num_classes is {config.model.num_classes}: "
                             f"list ids {extra} in data.tfds.ignore_ids if they are not "
                             f"classes")

    def frame(example):
        image = tf.cast(example[options.image_key], tf.float32)
        if boxes:
            labels = tf.numpy_function(
                lambda pixel_boxes, shape: boxes_to_mask(pixel_boxes, *shape),
                [example[options.mask_key], tf.shape(image)[:2]], tf.uint8, stateful=False)
            labels.set_shape(image.shape[:2])
        else:
            labels = example[options.mask_key]
            labels = labels[..., 0] if labels.shape.rank == 3 else labels
            for void in options.ignore_ids:
                labels = camvid.void_to_ignore(labels, void, data.ignore_label)
        return image, tf.cast(labels, tf.uint8)

    return tuple(builder.as_dataset(split=split).map(
        frame, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        for split in (options.train_split, options.val_split))


def super_resolution_splits(config, skipped):
    """Random (LR, HR) training patches and whole-image validation pairs (batch 1) of the
    images of `config`'s TFDS data set, as `super_resolution.training_pairs` and
    `evaluation_pairs` make them from folders. Images smaller than a patch are skipped and
    listed in `skipped`.

    Raises:
        TfsegError: as `open_builder`, a feature that does not fit the config, no training
            image as large as a patch, or a validation image smaller than the scale.
    """
    options, factor = config.data.tfds, config.model.scale
    patch_size = config.data.super_resolution.patch_size
    super_resolution.check_patch_size(patch_size, factor)
    builder = open_builder(options)
    _image_shape(builder, options, config.model.input_channels)
    (train, train_names, train_sizes), (validation, val_names, val_sizes) = (
        _images_and_sizes(builder, options, split)
        for split in (options.train_split, options.val_split))
    usable = super_resolution.usable_for_patches(
        train_names, train_sizes, patch_size, skipped=skipped,
        source=f"{options.name} {options.train_split}")
    keep = tf.constant(usable)
    train = train.enumerate().filter(lambda index, image: keep[index]).map(
        lambda index, image: image)
    super_resolution.check_at_least_factor(val_names, val_sizes, factor)
    return (super_resolution.random_patches(
                train, sum(usable), factor=factor, patch_size=patch_size,
                blur_sigma=config.data.super_resolution.blur_sigma, seed=config.train.seed),
            super_resolution.whole_image_pairs(validation, factor=factor))


def _feature(builder, options, key):
    """The feature that `options.<key>` names; TfsegError listing the features."""
    name = getattr(options, key)
    features = builder.info.features
    if name not in features:
        raise TfsegError(f"data.tfds.{key} {name!r}: {options.name} has no such feature "
                         f"(it has {', '.join(sorted(features))})")
    return features[name]


def _image_shape(builder, options, channels):
    """The image feature's (H, W, C) shape (H, W None for any size); TfsegError unless it
    holds images of `channels` channels (`model.input_channels`)."""
    shape = tuple(_feature(builder, options, "image_key").shape)
    if len(shape) != 3 or shape[-1] != channels:
        raise TfsegError(f"data.tfds.image_key {options.image_key!r}: {options.name}'s "
                         f"images have shape {shape}, not (H, W, {channels}) "
                         f"(model.input_channels {channels})")
    return shape


def _images_and_sizes(builder, options, split):
    """The uint8 images of `split`, a name for each (for messages) and their (H, W) sizes,
    read once to measure them."""
    images = builder.as_dataset(split=split).map(
        lambda example: example[options.image_key], num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)
    sizes = [tuple(int(v) for v in size) for size in images.map(
        lambda image: tf.shape(image)[:2]).as_numpy_iterator()]
    names = [f"{options.name} {split} example {index}" for index in range(len(sizes))]
    return images, names, sizes
