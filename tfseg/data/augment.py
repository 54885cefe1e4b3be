"""Random augmentation run inside the training step (so on the accelerator when there is one),
transforming image and mask together.

Keras 3.15 preprocessing layers do most of it; where they are subtly wrong for segmentation
(checked in tests/data/test_augment.py; TOOLCHAIN.md trap 6) this module works around them:

- `RandomFlip("horizontal_and_vertical")` draws ONE coin for both axes, so it only ever
  yields the identity or a 180-degree rotation: two independent single-axis flips are used.
- `RandomCrop` takes one window for the whole batch, is not random at all along an axis
  whose crop size equals the input size (it centre-crops instead: 480x320 out of 480x360
  frames is always the middle rows) and bilinearly resizes masks when the input is smaller:
  the crop is written here, one window per image.
- `RandomContrast(factor)` with one number draws the contrast factor in [1, 1 + factor]
  (its docstring promises [1 - factor, 1 + factor]): the factor is passed as a pair.
- Masks come back as float32 and get the image's fill value where a zoom-out pads: masks are
  shifted by +1 before the geometric layers so that the fill value 0 marks padding, which
  becomes the ignore label, and are cast back to their integer dtype.

Clips of a recurrent model (images (B, T, H, W, C), masks (B, T, H, W)) take ONE transform
per clip, the same for each of its frames: the frames are folded into the channel axis
((B, H, W, T x C) and (B, H, W, T)), where every transform above is drawn per image and
applied to all channels alike (contrast uses each channel's own mean, as for single frames).
"""

import itertools
import math

import keras
import tensorflow as tf

FLIP_MODES = ("none", "horizontal", "vertical", "horizontal_and_vertical")


class SegmentationAugmentation:
    """Applies the configured random transforms to a batch of (images, masks).

    Order: random crop, brightness and contrast (images only), flips, zoom. Every transform
    is drawn per image, or per clip for clips (5-D images, 4-D masks): all frames of a clip
    get the same one. The output spatial size is static: `crop_size`, or the input size.
    Masks keep their integer dtype and hold only their input ids or `ignore_label` (for
    areas a zoom-out pads). Build it inside `strategy.scope()` under tf.distribute: the
    random generators' state is then mirrored, so runs are deterministic under `seed` (each
    replica draws the same parameters for its slice of the batch).

    Args:
        flip: str. "none", "horizontal", "vertical" or "horizontal_and_vertical" (each axis
            flipped independently with probability 0.5).
        seed: int. Seed of all random draws; the same seed gives the same augmentations.
        transpose: bool. Swap rows and columns with probability 0.5 (square images only):
            with both flips, each of the square's 8 symmetries is equally likely. Defaults
            to False.
        crop_size: tuple of 2 ints or None. (height, width) of a random window cut from each
            image; it may equal the input size along either axis. Defaults to None (no crop).
        scale: tuple of 2 floats or None. (min, max) magnification of a random zoom about the
            image centre, min >= 0.5: 1.25 enlarges the content by 25 %, 0.8 shrinks it and
            pads the border (mask: `ignore_label`, image: 0). The sampling step 1 / scale is
            drawn uniformly. Defaults to None (no zoom).
        brightness: float. Largest offset, in pixel units of `value_range`, added to a whole
            image (all channels alike): 20 draws an offset in [-20, 20]. Defaults to 0 (off).
        contrast: float in [0, 1). Images are scaled about their per-channel mean by a
            factor drawn in [1 - contrast, 1 + contrast]. Defaults to 0 (off).
        value_range: tuple of 2 floats. Range of the incoming pixels (0..255: 8-bit frames,
            and interferogram frames of any depth, which reach the network in 8-bit grey
            levels); brightness and contrast clip their output to it. Defaults to (0, 255).
        ignore_label: int. Mask value for padded areas (and kept where it already is).
            Defaults to 255.
        derivative_channels: None or (x channel, y channel): channels that hold a derivative
            along x and along y (the fringe phase's slopes, `data.preprocess.
            phase_gradient`). A flip along an axis negates its derivative, so that flipped
            slopes are the slopes of the flipped phase, not a field no phase has. Defaults to
            None.

    Example:

    >>> augment = SegmentationAugmentation(flip="horizontal", seed=0, crop_size=(32, 48))
    >>> images, masks = augment(tf.zeros((2, 40, 64, 1)), tf.zeros((2, 40, 64), tf.uint8))
    >>> images.shape, masks.shape, masks.dtype
    (TensorShape([2, 32, 48, 1]), TensorShape([2, 32, 48]), tf.uint8)
    """

    def __init__(self, *, flip, seed, transpose=False, crop_size=None, scale=None,
                 brightness=0.0, contrast=0.0, value_range=(0.0, 255.0), ignore_label=255,
                 derivative_channels=None):
        if flip not in FLIP_MODES:
            raise ValueError(f"Invalid value for argument `flip`: expected one of "
                             f"{FLIP_MODES}. Received: flip={flip!r}")
        if not _is_int(seed):
            raise ValueError(f"Invalid value for argument `seed`: expected an integer. "
                             f"Received: seed={seed!r}")
        if crop_size is not None and not (
                _is_pair(crop_size) and all(_is_int(v) and v >= 1 for v in crop_size)):
            raise ValueError(f"Invalid value for argument `crop_size`: expected None or "
                             f"(height, width), two integers >= 1. "
                             f"Received: crop_size={crop_size!r}")
        if scale is not None and not (
                _is_pair(scale) and all(_is_real(v) for v in scale)
                and 0.5 <= scale[0] <= scale[1]):
            raise ValueError(f"Invalid value for argument `scale`: expected None or "
                             f"(min, max) with 0.5 <= min <= max. Received: scale={scale!r}")
        if not (_is_pair(value_range) and all(_is_real(v) for v in value_range)
                and value_range[0] < value_range[1]):
            raise ValueError(f"Invalid value for argument `value_range`: expected (low, high) "
                             f"with low < high. Received: value_range={value_range!r}")
        span = value_range[1] - value_range[0]
        if not (_is_real(brightness) and 0 <= brightness <= span):
            raise ValueError(f"Invalid value for argument `brightness`: expected a pixel "
                             f"offset in [0, {span:g}] (the width of value_range). "
                             f"Received: brightness={brightness!r}")
        if not (_is_real(contrast) and 0 <= contrast < 1):
            raise ValueError(f"Invalid value for argument `contrast`: expected a float in "
                             f"[0, 1). Received: contrast={contrast!r}")
        if derivative_channels is not None and not (
                _is_pair(derivative_channels)
                and all(_is_int(v) and v >= 0 for v in derivative_channels)):
            raise ValueError(f"Invalid value for argument `derivative_channels`: expected "
                             f"None or (x channel, y channel), two integers >= 0. "
                             f"Received: derivative_channels={derivative_channels!r}")
        if not (_is_int(ignore_label) and ignore_label >= 0):
            raise ValueError(f"Invalid value for argument `ignore_label`: expected an "
                             f"integer >= 0. Received: ignore_label={ignore_label!r}")
        self.flip = flip
        self.transpose = bool(transpose)
        self.seed = seed
        self.crop_size = None if crop_size is None else tuple(crop_size)
        self.scale = None if scale is None else tuple(scale)
        self.brightness = brightness
        self.contrast = contrast
        self.value_range = tuple(value_range)
        self.ignore_label = ignore_label
        self.derivative_channels = (None if derivative_channels is None
                                    else tuple(derivative_channels))

        # Each random source gets its own seed: equal seeds would draw equal numbers.
        seeds = itertools.count(seed)
        # float32 whatever the global dtype policy: bfloat16 would round pixels above 256.
        options = {"dtype": "float32"}
        self.crop_seed = keras.random.SeedGenerator(next(seeds)) if crop_size else None
        self.transpose_seed = keras.random.SeedGenerator(next(seeds)) if transpose else None
        self.photometric_layers = []
        if brightness:
            self.photometric_layers.append(keras.layers.RandomBrightness(
                brightness / span, value_range=self.value_range, seed=next(seeds),
                name="augment_brightness", **options))
        if contrast:
            self.photometric_layers.append(keras.layers.RandomContrast(
                (contrast, contrast), value_range=self.value_range, seed=next(seeds),
                name="augment_contrast", **options))
        self.geometric_layers = [
            keras.layers.RandomFlip(mode, seed=next(seeds), name=f"augment_flip_{mode}",
                                    **options)
            for mode in ("horizontal", "vertical") if mode in flip]
        if scale:
            # Keras zooms by a sampling step 1 + factor, factor in (-1, 1]: step = 1 / scale.
            factor = (1.0 / scale[1] - 1.0, 1.0 / scale[0] - 1.0)
            self.geometric_layers.append(keras.layers.RandomZoom(
                factor, fill_mode="constant", fill_value=0.0, interpolation="bilinear",
                seed=next(seeds), name="augment_zoom", **options))

    def seed_states(self):
        """The state variables of every random generator (to checkpoint and restore)."""
        generators = [seed for seed in (self.crop_seed, self.transpose_seed) if seed]
        generators += [layer.generator for layer in
                       self.photometric_layers + self.geometric_layers]
        return [generator.state for generator in generators]

    def __call__(self, images, masks):
        """images (B, H, W, C) float, masks (B, H, W) integer -> both transformed alike; or
        clips: images (B, T, H, W, C), masks (B, T, H, W), one transform per clip."""
        if self.ignore_label > tf.as_dtype(masks.dtype).max:
            raise ValueError(f"Invalid value for argument `ignore_label`: does not fit the "
                             f"masks' dtype {tf.as_dtype(masks.dtype).name}. "
                             f"Received: ignore_label={self.ignore_label}")
        if not (self.crop_size or self.transpose or self.photometric_layers
                or self.geometric_layers):
            return images, masks
        if len(images.shape) != 5:   # numpy arrays too
            images, masks = self._transform(images, masks[..., None], images.shape[-1])
            return images, masks[..., 0]
        # Clips: frames folded into channels, (B, T, H, W, C) -> (B, H, W, T x C).
        frames = _sizes(images)[1::3]   # T, C
        images = tf.transpose(images, (0, 2, 3, 1, 4))
        images, masks = self._transform(
            tf.reshape(images, _sizes(images)[:3] + [frames[0] * frames[1]]),
            tf.transpose(masks, (0, 2, 3, 1)), frames[1])
        images = tf.reshape(images, _sizes(images)[:3] + frames)
        return tf.transpose(images, (0, 3, 1, 2, 4)), tf.transpose(masks, (0, 3, 1, 2))

    def _transform(self, images, masks, frame_channels):
        """images (B, H, W, C), masks (B, H, W, K): one transform per image, for all of its
        channels and mask channels; C holds frames of `frame_channels` channels each."""
        if self.crop_size:
            images, masks = self._random_crop(images, masks)
        for layer in self.photometric_layers:
            images = layer(images, training=True)
        if self.transpose:
            images, masks = self._random_transpose(images, masks, frame_channels)
        if not self.geometric_layers:
            return images, masks
        derivatives = self.derivative_channels is not None and self.flip != "none"
        if derivatives:   # ramps along x and y: which way each image was flipped
            images = tf.concat([images, _ramps(images)], axis=-1)
        # Shifted by one: the zoom's fill value 0 then marks padding.
        data = {"images": images, "segmentation_masks": tf.cast(masks, tf.float32) + 1.0}
        for layer in self.geometric_layers:
            data = layer(data, training=True)
        shifted = tf.cast(tf.round(data["segmentation_masks"]), tf.int32)
        out_masks = tf.where(shifted == 0, self.ignore_label, shifted - 1)
        images = data["images"]
        if derivatives:
            images = self._derivatives_flipped(images[..., :-2], images[..., -2:],
                                               frame_channels)
        return images, tf.cast(out_masks, masks.dtype)

    def _derivatives_flipped(self, images, ramps, frame_channels):
        """`images` with each derivative channel negated where its axis was flipped, as the
        transformed `ramps` (`_ramps`) show: read either side of the centre, which a zoom
        about it keeps."""
        height, width = _sizes(images)[1:3]
        row, column = height // 2, width // 2
        flipped_x = ramps[:, row, column + 1, 0] < ramps[:, row, column - 1, 0]
        flipped_y = ramps[:, row + 1, column, 1] < ramps[:, row - 1, column, 1]
        channel = tf.range(_sizes(images)[3]) % frame_channels
        x_channel, y_channel = self.derivative_channels
        factor = (1.0 - 2.0 * tf.cast(flipped_x[:, None] & (channel == x_channel)[None],
                                      images.dtype)
                  - 2.0 * tf.cast(flipped_y[:, None] & (channel == y_channel)[None],
                                  images.dtype))
        return images * factor[:, None, None, :]

    def _random_transpose(self, images, masks, frame_channels):
        """Rows and columns swapped in a random half of the images and their masks; the
        x and y derivative channels swap with them (the slopes of the transposed phase)."""
        height, width = images.shape[1], images.shape[2]
        if height != width or height is None:
            raise ValueError(f"A random transpose needs square images with a static size. "
                             f"Received: images.shape={images.shape}")
        swap = keras.random.uniform(tf.shape(images)[:1], seed=self.transpose_seed) < 0.5
        channels = list(range(_sizes(images)[3]))
        if self.derivative_channels is not None:
            x_channel, y_channel = self.derivative_channels
            pairs = {x_channel: y_channel, y_channel: x_channel}
            channels = [c - c % frame_channels + pairs.get(c % frame_channels, c % frame_channels)
                        for c in channels]
        transposed = tf.gather(tf.transpose(images, (0, 2, 1, 3)), channels, axis=3)
        images = tf.where(swap[:, None, None, None], transposed, images)
        # int32: oneDNN's transpose logs an error line for uint8 on CPUs without AVX-512.
        transposed = tf.cast(tf.transpose(tf.cast(masks, tf.int32), (0, 2, 1, 3)), masks.dtype)
        masks = tf.where(swap[:, None, None, None], transposed, masks)
        return images, masks

    def _random_crop(self, images, masks):
        """One random `crop_size` window per image, the same for its mask (exact gather)."""
        height, width = images.shape[1], images.shape[2]
        crop_height, crop_width = self.crop_size
        if height is None or width is None:
            raise ValueError(f"Random crop needs images with a static height and width "
                             f"(use tf.ensure_shape). Received: images.shape={images.shape}")
        if crop_height > height or crop_width > width:
            raise ValueError(f"Invalid value for argument `crop_size`: larger than the "
                             f"images (height, width) = ({height}, {width}). "
                             f"Received: crop_size={self.crop_size}")
        if (crop_height, crop_width) == (height, width):
            return images, masks
        batch = tf.shape(images)[0]
        top = keras.random.randint((batch, 1), 0, height - crop_height + 1,
                                   seed=self.crop_seed)
        left = keras.random.randint((batch, 1), 0, width - crop_width + 1,
                                    seed=self.crop_seed)
        rows = top + tf.range(crop_height)
        columns = left + tf.range(crop_width)

        def crop(tensor):
            tensor = tf.gather(tensor, rows, axis=1, batch_dims=1)
            return tf.gather(tensor, columns, axis=2, batch_dims=1)

        return crop(images), crop(masks)


def _ramps(images):
    """(B, H, W, 2) of `images`' dtype: x and y from -1 to 1 across each image."""
    batch, height, width = _sizes(images)[:3]
    x = tf.linspace(-1.0, 1.0, width)[None, :] + tf.zeros((height, 1))
    y = tf.linspace(-1.0, 1.0, height)[:, None] + tf.zeros((1, width))
    ramps = tf.cast(tf.stack([x, y], axis=-1), images.dtype)
    return tf.broadcast_to(ramps[None], tf.stack([batch, height, width, 2]))


def _sizes(tensor):
    """`tensor`'s sizes: static where known (so reshapes keep them), else dynamic."""
    return [size if size is not None else tf.shape(tensor)[axis]
            for axis, size in enumerate(tensor.shape)]


def _is_pair(value):
    return isinstance(value, (tuple, list)) and len(value) == 2


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))
