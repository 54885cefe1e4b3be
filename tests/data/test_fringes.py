"""Fourier demodulation of the carrier (`tfseg.data.fringes.fringe_channels`): the slopes of
known phase maps and the amplitude of known fringe visibilities, on carriers of every
direction and density."""

import warnings

import numpy as np
import pytest

from tfseg.data.fringes import fringe_channels

SIZE = 128


def phase_gradient(image):
    return fringe_channels(image, slopes=True, amplitude=False)


def log_amplitude(image):
    return fringe_channels(image, slopes=False, amplitude=True)[..., 0]


def interferogram(cycles, degrees, phase=0.0, visibility=0.8):
    """8-bit-like frame 100 + 80 v cos(carrier + phase) with `cycles` carrier periods across
    the frame at `degrees` from the x axis."""
    y, x = np.mgrid[:SIZE, :SIZE].astype(np.float64)
    angle = np.deg2rad(degrees)
    carrier = 2 * np.pi * cycles / SIZE * (x * np.cos(angle) + y * np.sin(angle))
    return 100 + 80 * visibility * np.cos(carrier + phase)


def bump(height, sigma, centre=(64, 64)):
    """A Gaussian phase bump and its exact slopes (d/dx, d/dy)."""
    y, x = np.mgrid[:SIZE, :SIZE].astype(np.float64)
    phase = height * np.exp(-((x - centre[1]) ** 2 + (y - centre[0]) ** 2) / (2 * sigma ** 2))
    return phase, -(x - centre[1]) / sigma ** 2 * phase, -(y - centre[0]) / sigma ** 2 * phase


INTERIOR = np.s_[16:-16, 16:-16]


@pytest.mark.parametrize("cycles, degrees", [(16, 0), (10, 90), (22, 37), (16, 135)])
def test_a_bare_carrier_has_no_slope_on_or_off_the_frequency_grid(cycles, degrees):
    """The spectrum finds a carrier to its nearest frequency bin; the median subtracted
    removes the rest (a uniform slope of up to pi / size), leaving only the leakage of an
    off-grid carrier at the frame's edges."""
    slopes = phase_gradient(interferogram(cycles, degrees))
    assert slopes.shape == (SIZE, SIZE, 2) and slopes.dtype == np.float32
    assert np.abs(slopes[INTERIOR]).max() < 2e-3
    if degrees in (0, 90):   # a carrier on the grid: exact everywhere (float32 rounding)
        assert np.abs(slopes).max() < 1e-5


@pytest.mark.parametrize("cycles, degrees", [(16, 0), (12, 60), (20, 150), (10, 100)])
def test_a_phase_bump_shows_as_its_slopes_on_any_carrier(cycles, degrees):
    phase, slope_x, slope_y = bump(height=3.0, sigma=10.0)
    slopes = (phase_gradient(interferogram(cycles, degrees, phase))
              - phase_gradient(interferogram(cycles, degrees)))
    exact = np.stack([slope_x, slope_y], axis=-1)
    # phi on carrier f and -phi on -f are the same interferogram: the sign is the sideband's.
    sign = np.sign(np.sum(slopes * exact))
    # The window around the carrier (a third of its frequency wide) smooths the slopes over
    # a few pixels, the more so the fewer the fringes: they follow the exact ones closely
    # in shape, their peak lowered by 10-30 %.
    assert np.corrcoef(sign * slopes[INTERIOR].ravel(), exact[INTERIOR].ravel())[0, 1] > 0.97
    assert 0.65 < np.abs(slopes).max() / np.abs(exact).max() < 1.0


@pytest.mark.parametrize("cycles, degrees", [(16, 0), (12, 60), (20, 150)])
def test_the_amplitude_shows_where_the_fringes_fade_whatever_their_contrast(cycles, degrees):
    y, x = np.mgrid[:SIZE, :SIZE].astype(np.float64)
    # Fringes at half their visibility over a wide, smooth patch (a dimming particle's).
    fade = 1 - 0.5 * np.exp(-((x - 64) ** 2 + (y - 64) ** 2) / (2 * 14.0 ** 2))
    faded = {}
    for visibility in (0.3, 0.9):
        plain = log_amplitude(interferogram(cycles, degrees, visibility=visibility))
        assert plain.dtype == np.float32 and np.abs(plain[INTERIOR]).max() < 0.02
        faded[visibility] = log_amplitude(100 + 80 * visibility * fade * (
            interferogram(cycles, degrees, visibility=1.0) - 100) / 80)
    np.testing.assert_allclose(faded[0.3], faded[0.9], atol=1e-3)
    # The window around the carrier smooths the amplitude over a few pixels, the more so
    # the fewer the fringes: the patch keeps its shape, its centre log(1/2) within 0.15.
    assert np.corrcoef(faded[0.9][INTERIOR].ravel(),
                       np.log(fade[INTERIOR]).ravel())[0, 1] > 0.99
    assert faded[0.9][64, 64] == pytest.approx(np.log(0.5), abs=0.15)


def test_both_channels_come_from_one_demodulation():
    frame = interferogram(14, 20, bump(height=2.0, sigma=8.0)[0])
    both = fringe_channels(frame, slopes=True, amplitude=True)
    assert both.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(both[..., :2], phase_gradient(frame))
    np.testing.assert_array_equal(both[..., 2], log_amplitude(frame))


def test_a_frame_without_fringes_gives_zeros_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for frame in (np.zeros((SIZE, SIZE)), np.full((40, 60), 200.0)):
            channels = fringe_channels(frame, slopes=True, amplitude=True)
            assert channels.shape == (*frame.shape, 3) and not channels.any()
