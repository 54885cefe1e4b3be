"""Fourier demodulation of an interferogram's carrier fringes (Takeda's method), the classic
first step of off-axis interferometry: the local slope of the fringe phase, with the carrier
removed, shows a sample as a local disturbance on a smooth background, whatever the carrier's
density and direction, the illumination or the fringe visibility. A network given these
slopes next to the frame learns in minutes what it needs the whole default run to find in raw
fringes (docs/benchmarks.md); the fringes' amplitude beside them tells a particle that dims
and rings the fringes from a sample that bends them. numpy alone, in float32, so that
`tools/opencv_segment.py` can follow it to the bit (under numpy 1, whose FFTs compute in
float64, within 1e-6).
"""

from functools import lru_cache

import numpy as np

# The carrier is the strongest frequency beyond this many cycles across the frame: slower
# variations are the illumination's, never fringes a camera resolves as a carrier.
LOWEST_CARRIER_CYCLES = 4
# The Gaussian window kept around the carrier has a width of its frequency divided by this:
# wide enough for a sample's fringe bend, narrow enough to exclude the zero order.
WINDOW_DIVISOR = 3
# Added to the fringes' amplitude (in the frame's units: 8-bit grey levels in training)
# before its log is taken.
AMPLITUDE_FLOOR = 1e-3


def fringe_channels(image, *, slopes=True, amplitude=False):
    """float32 (H, W, C) of an (H, W) interferogram (H, W >= 2): the fringe phase's slope along
    x and along y, in radians per pixel, carrier removed (if `slopes`), then the log of the
    fringes' amplitude less its median (if `amplitude`); C = 2 slopes + 1 amplitude.

    The carrier is the strongest frequency of one half-plane of the spectrum (beyond
    `LOWEST_CARRIER_CYCLES`); a Gaussian window around it gives the complex fringe field.
    Slopes: its phase differences between neighbouring pixels, less the carrier's, wrapped
    into (-pi, pi], less the frame's median slope (the spectrum finds the carrier to its
    nearest frequency bin only, and the remainder, up to pi / size, would differ from frame
    to frame). Their sign is the sideband's: phi on carrier f and -phi on -f are the same
    interferogram. Amplitude: where the fringes fade or dim (dust, absorption, the
    illumination's falloff) apart from where they bend; its median removed, any exposure
    and visibility read the same. A frame without fringes gives zeros.
    """
    image = np.asarray(image, np.float32)
    height, width = image.shape
    channels = np.zeros((height, width, 2 * slopes + amplitude), np.float32)
    spectrum = np.fft.fft2(image - image.mean())
    freq_y, freq_x, candidates = _frequencies(height, width)
    strength = np.where(candidates, np.abs(spectrum), 0.0)
    if not strength.any():   # a uniform frame
        return channels
    row, column = np.unravel_index(np.argmax(strength), strength.shape)
    carrier_y, carrier_x = freq_y[row, 0], freq_x[0, column]
    sigma = np.hypot(carrier_y, carrier_x) / WINDOW_DIVISOR
    window = (np.exp(-(freq_y - carrier_y) ** 2 / (2 * sigma ** 2)).astype(np.float32)
              * np.exp(-(freq_x - carrier_x) ** 2 / (2 * sigma ** 2)).astype(np.float32))
    field = np.fft.ifft2(spectrum * window)
    if slopes:
        channels[:, :-1, 0] = np.angle(field[:, 1:] * np.conj(field[:, :-1])
                                       * np.complex64(np.exp(-2j * np.pi * carrier_x)))
        channels[:-1, :, 1] = np.angle(field[1:, :] * np.conj(field[:-1, :])
                                       * np.complex64(np.exp(-2j * np.pi * carrier_y)))
        channels[:, -1, 0], channels[-1, :, 1] = channels[:, -2, 0], channels[-2, :, 1]
        channels[..., :2] -= np.median(channels[..., :2], axis=(0, 1))
    if amplitude:
        # A floor far below any fringe a camera records keeps the log finite.
        log_amplitude = np.log(np.abs(field) + np.float32(AMPLITUDE_FLOOR))
        channels[..., -1] = log_amplitude - np.median(log_amplitude)
    return channels


@lru_cache(maxsize=8)
def _frequencies(height, width):
    """The spectrum's frequencies (cycles per pixel) along y (H, 1) and x (1, W), and where
    the carrier may be: one half-plane, beyond `LOWEST_CARRIER_CYCLES`."""
    freq_y = np.fft.fftfreq(height)[:, None]
    freq_x = np.fft.fftfreq(width)[None, :]
    half_plane = (freq_x > 0) | ((freq_x == 0) & (freq_y > 0))
    return freq_y, freq_x, half_plane & (
        np.hypot(freq_y, freq_x) > LOWEST_CARRIER_CYCLES / max(height, width))
