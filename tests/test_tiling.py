"""Tiled inference equals one whole-frame pass where both apply, blends without seams, pads
small frames and scales super-resolution outputs."""

import itertools

import keras
import numpy as np
import pytest

from tfseg.deploy.tiling import blend_window, predict_tiled, tile_starts


def fully_convolutional(channels_out, *, upscale=1, seed=0):
    """A tiny fully convolutional model (receptive field radius 3) on frames of any size."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    if upscale > 1:
        x = keras.layers.UpSampling2D(upscale, interpolation="bilinear")(x)
    outputs = keras.layers.Conv2D(channels_out, 3, padding="same")(x)
    model = keras.Model(inputs, outputs)
    return lambda batch: np.asarray(model(batch, training=False))


@pytest.fixture(scope="module")
def segmenter():
    return fully_convolutional(3)


def frame(height, width, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (height, width, 1)).astype(np.float32)


@pytest.mark.parametrize("length,tile,overlap", [(64, 64, 16), (100, 48, 16), (257, 64, 0),
                                                 (130, 64, 40)])
def test_tiles_cover_the_axis_evenly_with_at_least_the_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    shared = [a + tile - b for a, b in itertools.pairwise(starts)]
    assert all(s >= overlap for s in shared)
    assert not shared or max(shared) - min(shared) <= 1


def test_window_ramps_over_the_overlap_and_never_reaches_zero():
    window = blend_window(32, 8)
    assert window.min() > 0 and (window[8:24] == 1).all()
    assert (np.diff(window[:8]) > 0).all()
    np.testing.assert_array_equal(window, window[::-1])
    # An end on the frame border is flat: no other tile covers it.
    border = blend_window(32, 8, ramp_start=False)
    assert (border[:24] == 1).all() and (border[24:] == window[24:]).all()


def test_tile_equal_to_the_frame_is_exactly_one_pass(segmenter):
    image = frame(48, 64)
    np.testing.assert_array_equal(predict_tiled(segmenter, image, (48, 64)),
                                  segmenter(image[None])[0])


def test_identity_model_is_reproduced_exactly_everywhere():
    # Blending weights sum to one at every pixel, whatever the number of covering tiles.
    image = frame(101, 77)
    out = predict_tiled(lambda batch: batch, image, (32, 24), overlap=9)
    np.testing.assert_allclose(out, image, rtol=1e-6)


def test_larger_frame_agrees_with_one_whole_frame_pass(segmenter):
    image = frame(150, 190, seed=1)
    whole = segmenter(image[None])[0]
    tiled = predict_tiled(segmenter, image, (48, 64), overlap=24)
    assert tiled.shape == whole.shape
    # Only pixels within 3 (the receptive field) of an inner tile edge differ in a tile, and
    # the ramp gives them at most 6 % of the weight: measured 1.0 % of the logit range.
    difference = np.abs(tiled - whole)
    assert difference.max() <= 0.02 * np.abs(whole).max()
    assert difference.mean() <= 1e-3 * np.abs(whole).max()
    assert np.mean(tiled.argmax(-1) == whole.argmax(-1)) >= 0.999
    # The corner only the first tile covers is that tile's output, exactly as in one pass.
    np.testing.assert_allclose(tiled[:16, :16], whole[:16, :16], atol=1e-4)


def test_tiles_are_batched_per_call(segmenter):
    calls = []

    def counting(batch):
        calls.append(len(batch))
        return segmenter(batch)

    predict_tiled(counting, frame(100, 100), (40, 40), overlap=10, batch_size=4)
    assert calls == [4, 4, 1]   # 3 x 3 tiles


def test_smaller_frame_is_padded_and_cropped_back(segmenter):
    image = frame(30, 50, seed=2)
    out = predict_tiled(segmenter, image, (48, 64))
    assert out.shape == (30, 50, 3)
    whole = segmenter(image[None])[0]
    # Reflect padding changes only what the receptive field sees past the bottom/right edge.
    np.testing.assert_allclose(out[:-3, :-3], whole[:-3, :-3], atol=1e-4)


def test_super_resolution_output_is_scaled_and_agrees_with_one_pass():
    upscaler = fully_convolutional(1, upscale=2)
    image = frame(70, 90, seed=3)
    whole = upscaler(image[None])[0]
    tiled = predict_tiled(upscaler, image, (32, 32), overlap=16)
    assert tiled.shape == (140, 180, 1)
    assert np.abs(tiled - whole).max() <= 0.02 * np.abs(whole).max()


def test_bad_overlap_and_non_integer_scale_are_refused(segmenter):
    with pytest.raises(ValueError, match="overlap 48"):
        predict_tiled(segmenter, frame(64, 64), (48, 48), overlap=48)
    with pytest.raises(ValueError, match="not an integer multiple"):
        predict_tiled(lambda batch: batch[:, :, :-1], frame(64, 64), (32, 32))
