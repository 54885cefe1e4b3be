"""Each interferogram preprocessing step, and their assembly into (image, mask) frames."""

import cv2
import numpy as np
import pytest

from tfseg.config import DataConfig, PreprocessConfig, SyntheticSpec
from tfseg.data import preprocess
from tfseg.data.interferograms import prepare_sequence
from tfseg.data.synthetic import generate_sequence


def test_box_blur_matches_opencv_and_zero_disables():
    frame = np.random.default_rng(0).integers(0, 256, (9, 11), dtype=np.uint8)
    np.testing.assert_array_equal(preprocess.box_blur(frame, 3), cv2.blur(frame, (3, 3)))
    assert preprocess.box_blur(frame, 0) is frame


def test_background_is_the_mean_of_the_blurred_frames_and_result_is_clipped():
    frames = [np.full((4, 4), v, np.uint8) for v in (10, 50, 30, 90)]
    background = preprocess.estimate_background(frames[::2], blur=3)   # (10 + 30) / 2
    np.testing.assert_allclose(background, 20.0)
    out = [preprocess.subtract_background(f, background, alpha=0.5)[0, 0] for f in frames]
    np.testing.assert_allclose(out, [0.0, 40.0, 20.0, 80.0])
    assert (preprocess.subtract_background(frames[0], background, 2.0) >= 0).all()
    np.testing.assert_array_equal(preprocess.subtract_background(frames[1], None, 0.9),
                                  frames[1])


def test_crop_takes_the_region_and_refuses_one_outside_the_frame():
    frame = np.arange(30 * 40).reshape(30, 40)
    np.testing.assert_array_equal(preprocess.crop(frame, [5, 2, 10, 20]), frame[2:22, 5:15])
    assert preprocess.crop(frame, []) is frame
    with pytest.raises(ValueError, match=r"reaches outside the 30x40"):
        preprocess.crop(frame, [35, 0, 10, 10])


def test_clahe_spreads_a_narrow_histogram_and_zero_disables():
    frame = np.random.default_rng(0).integers(100, 120, (64, 64)).astype(np.float32)
    out = preprocess.equalize(frame, clip_limit=5.0, tile_grid=4, max_value=255)
    assert out.std() > 2 * frame.std()
    assert preprocess.equalize(frame, 0.0, 4, 255) is frame


def test_boxes_become_a_binary_mask():
    mask = preprocess.boxes_to_mask([(1, 2, 3, 2), (0, 0, 1, 1)], height=5, width=6)
    assert mask.dtype == np.uint8 and mask.sum() == 7
    assert mask[2:4, 1:4].all() and mask[0, 0] == 1 and mask[4].sum() == 0


def test_boxes_reaching_outside_the_frame_are_clipped():
    mask = preprocess.boxes_to_mask([(-2, -3, 4, 5), (4, 3, 10, 10)], height=5, width=6)
    assert mask[:2, :2].all() and mask[2:, :2].sum() == 0
    assert mask[3:, 4:].all() and mask.sum() == 4 + 4


def test_resize_keeps_mask_ids_exact():
    image = np.random.default_rng(0).uniform(0, 255, (30, 40)).astype(np.float32)
    mask = np.zeros((30, 40), np.uint8)
    mask[5:20, 10:30] = 1
    mask[0, 0] = 255
    small_image, small_mask = preprocess.resize_pair(image, mask, 15, 20)
    assert small_image.shape == (15, 20) and set(np.unique(small_mask)) <= {0, 1, 255}


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_prepared_sequence_matches_network_size_and_boxes(bit_depth):
    spec = SyntheticSpec(height=96, width=128, frames_per_sequence=5, fringes=12,
                         bit_depth=bit_depth)
    frames, boxes = generate_sequence(spec, seed=3)
    config = DataConfig(height=48, width=64, synthetic=spec,
                        preprocess=PreprocessConfig(clahe_clip_limit=2.0, clahe_tile_grid=4))
    images, masks = prepare_sequence(frames, boxes, config)
    assert images.shape == (5, 48, 64, 1) and images.dtype == np.float32
    assert masks.shape == (5, 48, 64) and masks.dtype == np.uint8
    full = [preprocess.boxes_to_mask(b, 96, 128).mean() for b in boxes]
    np.testing.assert_allclose(masks.reshape(5, -1).mean(1), full, atol=0.02)
