"""Super-resolution (LR, HR) pairs from HR images, the LR computed in the tf graph: from
folders here, from a TFDS data set through `tfseg.data.tfds_source`.

HR images are BMP (T91 is 24-bit BMP), PNG or JPEG files, decoded as 3-channel RGB. Every pair is
(lr float32 (h, w, 3), hr float32 (h * factor, w * factor, 3)), pixels 0..255.

Two degradations, each the published one for its use:

- Training (Johnson et al. 2016, MODELS.md): LR = bicubic downscale (no antialiasing) of the HR
  patch after a Gaussian blur of sigma 1. The blur is separable, truncated at 3 sigma (7 taps
  for sigma 1, the size OpenCV picks for 8-bit images) and pads by reflection without repeating
  the edge pixel (`tf.pad` "REFLECT" = OpenCV's default BORDER_REFLECT_101).
- Evaluation (the standard x4 protocol of data/README.md): LR = bicubic downscale of the whole
  HR image cropped to a multiple of the factor, antialiased as MATLAB's `imresize` does, with no
  extra blur. This reproduces the published bicubic baseline: Set5 x4 gives 28.43 dB on Y after
  bicubic upscaling (published 28.42); without antialiasing it would give 28.00 dB.

`tf.image.resize(method="bicubic")` is the Keys cubic with a = -0.5 on half-pixel centres, the
weights of taps outside the image dropped and the rest renormalised; OpenCV's INTER_CUBIC uses
a = -0.75 and repeats edge pixels, so the two differ by up to several grey levels. LR pixels are
clipped to 0..255 and rounded, as 8-bit LR images are.

Training patches are `patch_size` (288) squares at random positions. Images smaller than a patch
are skipped, not padded (padding would teach the network mirrored or flat borders), and logged
with their count: 75 of the 91 T91 images are smaller than 288 pixels, so T91 adds little at
that size (pass a smaller `patch_size` to use it; BSD200's 481x321 images all fit).
"""

import logging
import math

import numpy as np
import tensorflow as tf

from tfseg.data.camvid import decode_rgb, list_files, scan_files
from tfseg.utils.errors import TfsegError

HR_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg")

logger = logging.getLogger(__name__)


def list_hr_images(folders):
    """Image files of each folder (sorted by name), folders in the given order.

    Raises TfsegError for a missing or empty folder or a file of another type.
    """
    if isinstance(folders, (str, bytes)) or not hasattr(folders, "__iter__"):
        folders = [folders]
    if not folders:
        raise ValueError("folders must name at least one HR image folder; received none")
    return [path for folder in folders for path in list_files(folder, HR_SUFFIXES)]


def image_sizes(paths):
    """(height, width) of each image, decoding all in parallel; TfsegError naming an
    unreadable file."""
    return [tuple(int(v) for v in size)
            for (size,) in scan_files(paths, lambda path: (tf.shape(decode_rgb(path))[:2],))]


def gaussian_blur(images, sigma):
    """tf: separable Gaussian blur of float images (H, W, C) or (B, H, W, C).

    The kernel is truncated at ceil(3 sigma) and the border is padded by reflection without
    repeating the edge pixel (OpenCV's BORDER_REFLECT_101), so H and W must exceed that
    radius; sigma 0 returns the images.
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0; received sigma={sigma!r}")
    images = tf.convert_to_tensor(images, tf.float32)
    if sigma == 0:
        return images
    radius = math.ceil(3 * sigma)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = tf.constant(taps / taps.sum(), tf.float32)
    batch = images if images.shape.rank == 4 else images[None]
    channels = batch.shape[-1]
    padded = tf.pad(batch, [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
    rows = tf.tile(tf.reshape(taps, [-1, 1, 1, 1]), [1, 1, channels, 1])
    columns = tf.reshape(rows, [1, -1, channels, 1])
    blurred = tf.nn.depthwise_conv2d(padded, rows, [1, 1, 1, 1], "VALID")
    blurred = tf.nn.depthwise_conv2d(blurred, columns, [1, 1, 1, 1], "VALID")
    return blurred if images.shape.rank == 4 else blurred[0]


def degrade(hr, factor, *, blur_sigma=0.0, antialias=False):
    """tf: LR = bicubic downscale by `factor` of `hr` blurred with `blur_sigma`; not rounded.

    Args:
        hr: float (H, W, 3) or (B, H, W, 3), H and W multiples of `factor`.
        factor: int. Downscale factor, >= 2.
        blur_sigma: float. Gaussian blur sigma before downscaling; 0 for none. Defaults to 0.
        antialias: bool. Widen the bicubic kernel by `factor` (MATLAB `imresize`). Defaults
            to False.

    Returns:
        float32 (H / factor, W / factor, 3) (with the batch axis if `hr` has one).
    """
    _check_factor(factor)
    hr = tf.convert_to_tensor(hr, tf.float32)
    size = tf.shape(hr)[-3:-1] // factor
    return tf.image.resize(gaussian_blur(hr, blur_sigma), size, method="bicubic",
                           antialias=antialias)


def to_8bit(images):
    """tf: float pixels clipped to 0..255 and rounded (still float32), as in an 8-bit file."""
    return tf.round(tf.clip_by_value(images, 0.0, 255.0))


def training_pairs(folders, *, factor=4, patch_size=288, blur_sigma=1.0, seed=0,
                   skipped=None):
    """Endless tf.data stream of random (LR, HR) training patches of the HR image folders
    (`random_patches`); images smaller than a patch are skipped (`usable_for_patches`).

    Args:
        folders: path or list of paths. HR image folders (e.g. T91 and BSD200).
        factor: int. Downscale factor (2, 4, 8...). Defaults to 4.
        patch_size: int. HR patch side, a multiple of `factor`. Defaults to 288.
        blur_sigma: float. Gaussian blur before downscaling. Defaults to 1.0.
        seed: int. Seed of the visiting order and the crop positions. Defaults to 0.
        skipped: list or None. When a list, the paths of images smaller than a patch are
            appended to it (they are always skipped and logged).

    Returns:
        tf.data.Dataset of (lr float32 (patch_size / factor,) * 2 + (3,),
        hr float32 (patch_size, patch_size, 3)); take as many as the run needs.

    Raises:
        TfsegError: empty or missing folder, unreadable image (named), or no image as large
            as a patch.
    """
    check_patch_size(patch_size, factor)
    paths = list_hr_images(folders)
    usable = usable_for_patches(paths, image_sizes(paths), patch_size, skipped=skipped,
                                source=", ".join(sorted({str(p.parent) for p in paths})))
    images = tf.data.Dataset.from_tensor_slices(
        [str(path) for path, keep in zip(paths, usable) if keep]).map(
        decode_rgb, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return random_patches(images, sum(usable), factor=factor, patch_size=patch_size,
                          blur_sigma=blur_sigma, seed=seed)


def check_patch_size(patch_size, factor):
    """ValueError unless `factor` is an integer >= 2 and `patch_size` a positive multiple."""
    _check_factor(factor)
    if (isinstance(patch_size, bool) or not isinstance(patch_size, int)
            or patch_size < factor or patch_size % factor):
        raise ValueError(f"patch_size must be a positive multiple of factor={factor}; "
                         f"received patch_size={patch_size!r}")


def usable_for_patches(names, sizes, patch_size, *, skipped, source):
    """Which images are at least `patch_size` on both sides, as a list of bools.

    Smaller images are skipped, not padded (padding would teach the network mirrored or flat
    borders): they are logged with their count and, when `skipped` is a list, their `names`
    appended to it.

    Raises:
        TfsegError naming `source` when no image is as large as a patch.
    """
    usable = [min(size) >= patch_size for size in sizes]
    small = [str(name) for name, keep in zip(names, usable) if not keep]
    if not any(usable):
        raise TfsegError(f"{source}: none of the {len(sizes)} HR images is as large as "
                         f"patch_size={patch_size} (largest: {max(sizes, key=min)}, HxW); use a "
                         f"smaller patch_size")
    if small:
        logger.warning("skipping %d of %d HR images smaller than the %d-pixel patch (e.g. %s)",
                       len(small), len(sizes), patch_size, small[0])
        if skipped is not None:
            skipped.extend(small)
    return usable


def random_patches(images, count, *, factor, patch_size, blur_sigma, seed):
    """Endless tf.data stream of random (LR, HR) patches of `images`.

    Each pass visits every image once, in an order shuffled anew per pass; example k is
    cropped at a position drawn from the stateless seed (seed, k), so the stream is the same
    on every run. LR = to_8bit(degrade(hr, factor, blur_sigma=blur_sigma)). The decoded HR
    images are cached in memory after the first pass (8-bit: about 100 MB for T91 + BSD200),
    so later passes only crop and degrade.

    Args:
        images: tf.data.Dataset of `count` uint8 (H, W, 3) images, each at least
            `patch_size` on both sides.
        count: int. The number of images.
        factor, patch_size, blur_sigma, seed: as in `training_pairs`.
    """
    def crop(index, image):
        hr = tf.cast(tf.image.stateless_random_crop(
            image, [patch_size, patch_size, 3],
            seed=tf.stack([tf.constant(seed, tf.int64), index])), tf.float32)
        return to_8bit(degrade(hr, factor, blur_sigma=blur_sigma)), hr

    order = images.cache().shuffle(count, seed=seed, reshuffle_each_iteration=True).repeat()
    return order.enumerate().map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def evaluation_pairs(folders, *, factor=4):
    """Whole-image (LR, HR) pairs of the standard protocol (Set5, Set14, BSD100) from HR
    image folders, batch 1 (`whole_image_pairs`).

    Returns:
        tf.data.Dataset of (lr float32 (1, h, w, 3), hr float32 (1, h * factor, w * factor,
        3)) in file-name order, one image per batch since sizes differ.

    Raises:
        TfsegError: empty or missing folder, or an unreadable image or one smaller than
            `factor` pixels (named).
    """
    _check_factor(factor)
    paths = list_hr_images(folders)
    check_at_least_factor(paths, image_sizes(paths), factor)
    images = tf.data.Dataset.from_tensor_slices([str(p) for p in paths]).map(
        decode_rgb, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return whole_image_pairs(images, factor=factor)


def check_at_least_factor(names, sizes, factor):
    """TfsegError naming the first image (of `names`, with `sizes`) smaller than `factor`."""
    for name, size in zip(names, sizes):
        if min(size) < factor:
            raise TfsegError(f"{name}: {size[0]}x{size[1]} image is smaller than factor={factor}")


def whole_image_pairs(images, *, factor):
    """(LR, HR) pairs of whole uint8 (H, W, 3) `images`, batch 1: HR is the image cropped
    (bottom and right) to a multiple of `factor`; LR = to_8bit(degrade(hr, factor,
    antialias=True)), the standard evaluation protocol."""
    def pair(image):
        hr = tf.cast(image, tf.float32)
        size = tf.shape(hr)[:2] // factor * factor
        hr = hr[:size[0], :size[1]]
        return to_8bit(degrade(hr, factor, antialias=True)), hr

    return images.map(pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(1)


def _check_factor(factor):
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 2:
        raise ValueError(f"factor must be an integer >= 2; received factor={factor!r}")
