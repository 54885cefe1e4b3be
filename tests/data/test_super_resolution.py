"""Super-resolution pairs: patch and LR shapes, the LR against a numpy/OpenCV reference, the
Set5 protocol, skipped small images and bad input."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tfseg.data import super_resolution as sr
from tfseg.utils.errors import TfsegError

SHARED = Path(__file__).parents[2].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "sr").is_dir(),
                                  reason=f"real SR images not found at {SHARED / 'sr'}")

# The LR comparisons are float32 chains (7 + 7 blur taps, 4 or 4 * factor resize taps) on
# 0..255 values: rounding differences stay near 255 * 1e-6 per operation, far below both the
# 8-bit step (1) and the gap between tf's bicubic and OpenCV's INTER_CUBIC (several levels).
LR_ATOL = 0.01


def write_images(folder, sizes, suffix=".bmp", seed=0):
    """Random colour images (BGR on disk, as cv2 writes them) of the given (H, W) sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index, size in enumerate(sizes):
        paths.append(folder / f"img_{index:03d}{suffix}")
        cv2.imwrite(str(paths[-1]), rng.integers(0, 256, (*size, 3), np.uint8))
    return paths


def keys_cubic(distance, a):
    """The Keys cubic convolution kernel; a = -0.5 in tf.image.resize, -0.75 in OpenCV."""
    x = np.abs(distance)
    return np.where(x <= 1, (a + 2) * x**3 - (a + 3) * x**2 + 1,
                    np.where(x < 2, a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a, 0.0))


def resize_matrix(size_in, factor, *, a=-0.5, antialias=False):
    """(size_in / factor, size_in) bicubic downscale weights on half-pixel centres; taps
    outside the image are dropped and the rest renormalised. Antialiasing widens the kernel
    by the factor (MATLAB imresize)."""
    width = factor if antialias else 1
    centres = (np.arange(size_in // factor) + 0.5) * factor
    weights = keys_cubic((np.arange(size_in)[None, :] + 0.5 - centres[:, None]) / width, a)
    return weights / weights.sum(axis=1, keepdims=True)


def reference_lr(hr, factor, *, blur_sigma, antialias=False, a=-0.5):
    """numpy/OpenCV LR: cv2.GaussianBlur (7 taps, BORDER_REFLECT_101) + Keys resampling."""
    image = hr.astype(np.float64)
    if blur_sigma:
        image = cv2.GaussianBlur(image, (7, 7), blur_sigma, borderType=cv2.BORDER_REFLECT_101)
    rows = resize_matrix(hr.shape[0], factor, a=a, antialias=antialias)
    columns = resize_matrix(hr.shape[1], factor, a=a, antialias=antialias)
    return np.einsum("ij,jkc,lk->ilc", rows, image, columns)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_training_patches_and_lr_have_the_factor_shapes(tmp_path, factor):
    paths = write_images(tmp_path / "t91", [(40, 48), (33, 35)])
    rgb = [cv2.imread(str(p))[..., ::-1].astype(np.float32) for p in paths]
    for lr, hr in sr.training_pairs(tmp_path / "t91", factor=factor, patch_size=32).take(4):
        assert lr.shape == (32 // factor, 32 // factor, 3) and hr.shape == (32, 32, 3)
        assert lr.dtype == tf.float32 and hr.dtype == tf.float32
        np.testing.assert_array_equal(lr, sr.to_8bit(sr.degrade(hr, factor, blur_sigma=1.0)))
        hr = hr.numpy()   # an RGB window of one of the images
        assert any(np.array_equal(hr, image[y:y + 32, x:x + 32])
                   for image in rgb for y in range(image.shape[0] - 31)
                   for x in range(image.shape[1] - 31))


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_blur_and_bicubic_lr_matches_numpy_opencv_reference(factor):
    hr = np.random.default_rng(factor).uniform(0, 255, (48, 64, 3)).astype(np.float32)
    blurred = sr.gaussian_blur(hr, 1.0).numpy()
    np.testing.assert_allclose(
        blurred, cv2.GaussianBlur(hr, (7, 7), 1.0, borderType=cv2.BORDER_REFLECT_101),
        atol=LR_ATOL)
    for antialias, sigma in ((False, 1.0), (True, 0.0)):
        lr = sr.degrade(hr, factor, blur_sigma=sigma, antialias=antialias).numpy()
        expected = reference_lr(hr, factor, blur_sigma=sigma, antialias=antialias)
        np.testing.assert_allclose(lr, expected, atol=LR_ATOL)
    batch = sr.degrade(np.stack([hr, hr[::-1]]), factor, blur_sigma=1.0).numpy()
    np.testing.assert_allclose(batch[1], reference_lr(hr[::-1], factor, blur_sigma=1.0),
                               atol=LR_ATOL)


def test_reference_is_opencv_inter_cubic_with_its_a_and_tf_is_not():
    """The reference reproduces cv2 INTER_CUBIC with a = -0.75 (so the kernel and centres
    are right), while tf's bicubic (a = -0.5) differs from OpenCV by grey levels."""
    hr = np.random.default_rng(7).uniform(0, 255, (48, 64, 3)).astype(np.float32)
    opencv = cv2.resize(hr, (16, 12), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_allclose(reference_lr(hr, 4, blur_sigma=0, a=-0.75), opencv,
                               atol=LR_ATOL)
    assert np.abs(sr.degrade(hr, 4).numpy() - opencv).max() > 1.0


def test_stream_is_reproducible_and_each_pass_visits_every_image_once(tmp_path):
    folder = tmp_path / "hr"
    folder.mkdir()
    for value in range(5):   # each image one flat grey level, so a patch names its image
        cv2.imwrite(str(folder / f"{value}.png"), np.full((20, 24, 3), value * 40, np.uint8))

    def visited(seed):
        pairs = sr.training_pairs(folder, factor=2, patch_size=16, seed=seed).take(10)
        return [int(hr[0, 0, 0]) // 40 for _, hr in pairs]

    first = visited(0)
    assert first == visited(0)
    assert sorted(first[:5]) == sorted(first[5:]) == list(range(5))
    assert first[:5] != first[5:]      # a new order every pass
    assert visited(1) != first


def test_images_smaller_than_a_patch_are_skipped_and_listed(tmp_path):
    small = write_images(tmp_path / "t91", [(20, 40), (40, 40), (40, 12)])
    skipped = []
    pairs = sr.training_pairs(tmp_path / "t91", factor=4, patch_size=32, skipped=skipped)
    assert skipped == [str(small[0]), str(small[2])]
    assert next(iter(pairs))[1].shape == (32, 32, 3)
    with pytest.raises(TfsegError, match="none of the 3 HR images is as large as patch_size=64"):
        sr.training_pairs(tmp_path / "t91", factor=4, patch_size=64)


def test_evaluation_pairs_crop_to_the_factor_and_use_antialiased_bicubic(tmp_path):
    paths = write_images(tmp_path / "set5", [(50, 37), (16, 16)], suffix=".png")
    pairs = list(sr.evaluation_pairs(tmp_path / "set5", factor=4))
    assert [(lr.shape, hr.shape) for lr, hr in pairs] == [
        ((1, 12, 9, 3), (1, 48, 36, 3)), ((1, 4, 4, 3), (1, 16, 16, 3))]
    hr = cv2.imread(str(paths[0]))[:48, :36, ::-1].astype(np.float32)
    np.testing.assert_array_equal(pairs[0][1][0], hr)
    expected = reference_lr(hr, 4, blur_sigma=0, antialias=True)
    lr = pairs[0][0][0].numpy()
    np.testing.assert_array_equal(lr, np.round(lr))
    assert np.abs(lr - np.clip(expected, 0, 255)).max() <= 0.5 + LR_ATOL


def _y_channel(rgb):
    """ITU-R BT.601 luma of 0..255 RGB, on the 16..235 scale."""
    return 16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255


@needs_shared
def test_set5_bicubic_baseline_matches_the_published_psnr():
    scores = []
    for lr, hr in sr.evaluation_pairs(SHARED / "sr" / "set5", factor=4):
        upscaled = sr.to_8bit(tf.image.resize(lr, tf.shape(hr)[1:3], method="bicubic"))
        error = (_y_channel(upscaled[0].numpy()) - _y_channel(hr[0].numpy()))[4:-4, 4:-4]
        scores.append(10 * np.log10(255**2 / np.mean(error**2)))
    assert abs(np.mean(scores) - 28.42) < 0.05, scores     # data/README.md


@needs_shared
def test_t91_bmp_decodes_as_rgb(tmp_path):
    for path in sorted((SHARED / "sr" / "t91").iterdir())[:2]:
        shutil.copy(path, tmp_path)
    paths = sr.list_hr_images(tmp_path)
    for path, size in zip(paths, sr.image_sizes(paths)):
        bgr = cv2.imread(str(path))
        assert size == bgr.shape[:2]
        np.testing.assert_array_equal(sr.decode_rgb(str(path)), bgr[..., ::-1])


def _empty(folder):
    for path in folder.iterdir():
        path.unlink()
    return folder


def _unreadable(folder):
    (folder / "img_001.bmp").write_bytes(b"BM truncated")
    return folder / "img_001.bmp"


def _unknown_type(folder):
    (folder / "readme.md").write_text("T91")
    return folder / "readme.md"


@pytest.mark.parametrize("break_data", [_empty, _unreadable, _unknown_type])
@pytest.mark.parametrize("reader", ["training_pairs", "evaluation_pairs"])
def test_bad_folders_raise_naming_the_file(tmp_path, break_data, reader):
    write_images(tmp_path / "hr", [(40, 40), (40, 40)])
    bad_path = break_data(tmp_path / "hr")
    with pytest.raises(TfsegError, match=str(bad_path)):
        getattr(sr, reader)(tmp_path / "hr", factor=4)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="patch_size"):
        sr.training_pairs("unused", factor=4, patch_size=30)
    with pytest.raises(ValueError, match="factor"):
        sr.evaluation_pairs("unused", factor=1)
    with pytest.raises(ValueError, match="sigma"):
        sr.gaussian_blur(np.zeros((8, 8, 3)), -1.0)
