"""The `data.synthetic` section: parameters of the synthetic interferogram sequences that
`tfseg.data.synthetic` renders."""

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of a synthetic interferogram sequence.

    Args:
        height: frame height in pixels (>= 16).
        width: frame width in pixels (>= 16).
        frames_per_sequence: number of frames T (>= 1).
        max_samples: most samples (cells/particles) per sequence; each frame shows 0..max_samples.
        fringes: carrier fringes across the frame (along min(height, width)), at most
            min(height, width) / 4 so a fringe spans at least 4 pixels.
        sample_size: (low, high) sample diameter as a fraction of min(height, width).
        sample_phase: (low, high) peak optical phase of a sample, radians.
        noise: camera read noise std relative to full scale; shot noise of the same std at full
            scale is added on top (std grows with sqrt(intensity)).
        bit_depth: 8 for uint8 frames, 16 for uint16 frames.
        vibration: rms global phase jitter between frames, radians; a slow wander of the same
            amplitude is added.
        dust: number of static dust artefacts (specks and diffraction rings) per sequence.
    """

    height: int = 256
    width: int = 256
    frames_per_sequence: int = 16
    max_samples: int = 3
    fringes: float = 24.0
    sample_size: tuple[float, float] = (0.06, 0.18)
    sample_phase: tuple[float, float] = (1.5, 4.0)
    noise: float = 0.02
    bit_depth: int = 8
    vibration: float = 0.15
    dust: int = 4

    def __post_init__(self):
        _check_int("height", self.height, 16)
        _check_int("width", self.width, 16)
        _check_int("frames_per_sequence", self.frames_per_sequence, 1)
        _check_int("max_samples", self.max_samples, 0)
        _check_int("dust", self.dust, 0)
        _check_float("fringes", self.fringes, 0.0, min(self.height, self.width) / 4,
                     " (min(height, width) / 4: a fringe must span at least 4 pixels)")
        _check_range("sample_size", self.sample_size, 1.0)
        _check_range("sample_phase", self.sample_phase, 100.0)
        _check_float("noise", self.noise, 0.0, 0.5)
        _check_float("vibration", self.vibration, 0.0, math.pi)
        if self.bit_depth not in (8, 16) or isinstance(self.bit_depth, bool):
            raise ValueError(f"SyntheticSpec.bit_depth must be 8 or 16, got {self.bit_depth!r}")


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"SyntheticSpec.{name} must be an integer >= {minimum}, got {value!r}")


def _check_float(name, value, minimum, maximum, why=""):
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not minimum <= value <= maximum:  # also rejects NaN
        raise ValueError(f"SyntheticSpec.{name} must be a number in [{minimum:g}, {maximum:g}]"
                         f"{why}, got {value!r}")


def _check_range(name, value, maximum):
    message = (f"SyntheticSpec.{name} must be a pair (low, high) with "
               f"0 < low <= high <= {maximum:g}, got {value!r}")
    if isinstance(value, (str, bytes)):
        raise ValueError(message)
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if not 0 < low <= high <= maximum:
        raise ValueError(message)
