"""The `data.synthetic` section: parameters of the synthetic interferogram sequences that
`tfseg.data.synthetic` renders.

Every factor of the rendering is a range `[low, high]`, drawn uniformly per sequence (per
sample for the sample's own factors), so one configuration covers the variety of real
microscopes (domain randomisation); a single number pins a factor (`fringes: 16` is
`fringes: [16, 16]`). Values are stored as `(low, high)` tuples.
"""

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

# A factor: a number, or a pair [low, high] drawn uniformly per sequence. Checked and turned
# into a (low, high) tuple by `SyntheticSpec`, so the YAML loader passes it through as is.
Range = Any


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of a synthetic interferogram sequence.

    Fields marked "range" take a number or a pair (low, high), drawn uniformly per sequence
    (per sample for `sample_size`, `sample_phase` and `irregularity`); the spec stores them
    as (low, high) tuples. Every range is measured back from rendered frames by a test
    (tests/data/test_synthetic_factors.py).

    Args:
        height: frame height in pixels (>= 16).
        width: frame width in pixels (>= 16).
        frames_per_sequence: number of frames T (>= 1).
        max_samples: most samples (cells/particles) per sequence, clusters included; a
            non-empty sequence holds 1..max_samples of them.
        fringes: range; carrier fringes across the short side (min(height, width)), at most
            min(height, width) / 4 so a fringe spans at least 4 pixels; 0: no carrier.
        fringe_angle: range; direction of the carrier's wave vector, degrees (0: vertical
            fringes, 90: horizontal ones).
        aberration: range; scale of the low-order aberrations (defocus, astigmatism, coma,
            spherical; 1 = coefficient stds of 4, 1.5, 1.5, 1, 1, 1 rad), which curve the
            fringes: 2 bends them by several fringes across the frame.
        falloff: range; illumination falloff of the two Gaussian beams: the fraction of the
            intensity lost one half-diagonal away from a beam's centre (which lies near the
            frame's centre), 0: flat illumination.
        vignetting: range; the fraction of light the optics lose at the frame's corners.
        visibility: range; fringe visibility (Imax - Imin) / (Imax + Imin) of the background
            (the coherence; unequal beams lower it by at most 2 %).
        exposure: range; the background's brightest fringe as a fraction of full scale; above
            1 part of the frame saturates.
        read_noise: range; camera read noise std, as a fraction of full scale.
        shot_noise: range; shot noise std at full scale (it grows with sqrt(intensity)).
        fixed_pattern: range; per-pixel gain std (photo-response non-uniformity), one gain
            map per sequence.
        blur: range; defocus blur: sigma in pixels of the rendered frame of a Gaussian blur
            of the recorded intensity.
        dust: range of integers; static dust artefacts per sequence: half in-focus specks,
            half the diffraction rings of out-of-focus particles.
        object_dust_probability: probability that an out-of-focus particle sits in the
            object beam, where its scattered wave bends the fringes along its rings as a
            sample bends them; otherwise it is near the camera and dims both beams only.
            0 renders the dust of tfseg 0.15 and before, draw for draw.
        sample_size: range, per sample; sample diameter as a fraction of min(height, width).
        sample_phase: range, per sample; peak optical phase of a sample, radians (above
            2 pi the fringes wrap inside it).
        irregularity: range, per sample; rms radial deviation of the outline from an ellipse
            (harmonics 3..5), relative to its radius.
        cluster_probability: probability that a sample arrives with 1 or 2 touching or
            overlapping neighbours that move with it (within max_samples).
        empty_probability: probability that a sequence holds no sample at all.
        resident_probability: probability that a sample (a cluster's leader, with its
            neighbours) stays in view, drifting slowly from where it starts (0.3 % to 1.2 %
            of the short side per frame, plus a small wobble); otherwise it crosses the
            frame in 0.5 to 1.5 sequence lengths, entering and leaving. 1: still samples
            only, which subtracting the sequence's mean frame erases; 0: none.
        vibration: range; rms global phase jitter between frames, radians; a slow wander of
            the same amplitude is added.
        flicker: range; relative rms frame-to-frame laser power fluctuation.
        bit_depth: 8 for uint8 frames, 16 for uint16 frames; the pair [8, 16]: either,
            drawn per sequence (half of them each). Stored as a (low, high) tuple. The
            preprocessing expresses both in 8-bit grey levels, so one data.mean / data.std
            serves them.
    """

    height: int = 256
    width: int = 256
    frames_per_sequence: int = 16
    max_samples: int = 3
    fringes: Range = (10.0, 22.0)
    fringe_angle: Range = (0.0, 180.0)
    aberration: Range = (0.0, 2.0)
    falloff: Range = (0.0, 0.6)
    vignetting: Range = (0.0, 0.5)
    visibility: Range = (0.3, 0.95)
    exposure: Range = (0.5, 1.1)
    read_noise: Range = (0.0, 0.02)
    shot_noise: Range = (0.0, 0.03)
    fixed_pattern: Range = (0.0, 0.02)
    blur: Range = (0.0, 1.0)
    dust: Range = (0, 8)
    object_dust_probability: float = 0.5
    sample_size: Range = (0.06, 0.18)
    sample_phase: Range = (0.5, 8.0)
    irregularity: Range = (0.0, 0.15)
    cluster_probability: float = 0.2
    empty_probability: float = 0.1
    resident_probability: float = 0.3
    vibration: Range = (0.0, 0.3)
    flicker: Range = (0.0, 0.01)
    bit_depth: Any = (8, 8)   # not a Range: either end of the pair, never between

    def __post_init__(self):
        _check_int("height", self.height, 16)
        _check_int("width", self.width, 16)
        _check_int("frames_per_sequence", self.frames_per_sequence, 1)
        _check_int("max_samples", self.max_samples, 0)
        object.__setattr__(self, "bit_depth", _bit_depths(self.bit_depth))
        for name in ("object_dust_probability", "cluster_probability", "empty_probability",
                     "resident_probability"):
            _check_number(name, getattr(self, name), 0.0, 1.0)
        short = min(self.height, self.width)
        limits = {  # name: (minimum, maximum, low must exceed the minimum, why)
            "fringes": (0.0, short / 4, False,
                        " (min(height, width) / 4: a fringe must span at least 4 pixels)"),
            "fringe_angle": (-360.0, 360.0, False, ""),
            "aberration": (0.0, 10.0, False, ""),
            "falloff": (0.0, 0.95, False, ""),
            "vignetting": (0.0, 0.95, False, ""),
            "visibility": (0.0, 1.0, False, ""),
            "exposure": (0.0, 2.0, True, ""),
            "read_noise": (0.0, 0.5, False, ""),
            "shot_noise": (0.0, 0.5, False, ""),
            "fixed_pattern": (0.0, 0.5, False, ""),
            "blur": (0.0, 20.0, False, ""),
            "dust": (0, 1000, False, ""),
            "sample_size": (0.0, 1.0, True, ""),
            "sample_phase": (0.0, 100.0, True, ""),
            "irregularity": (0.0, 0.3, False, ""),
            "vibration": (0.0, math.pi, False, ""),
            "flicker": (0.0, 0.2, False, ""),
        }
        for name, (minimum, maximum, open_low, why) in limits.items():
            value = _range(name, getattr(self, name), minimum, maximum, open_low, why,
                           integer=name == "dust")
            object.__setattr__(self, name, value)

    def ranges(self):
        """{field: (low, high)} of every range field (the bit-depth pair is not one)."""
        return {item.name: getattr(self, item.name) for item in fields(self)
                if (item.type is Range or item.type == "Range") and item.name != "bit_depth"}


def _bit_depths(value):
    """`bit_depth` (8, 16 or a pair of them) as a checked (low, high) tuple."""
    pair = value if isinstance(value, (list, tuple)) and len(value) == 2 else (value, value)
    if not (all(v in (8, 16) and not isinstance(v, bool) for v in pair)
            and pair[0] <= pair[1]):
        raise ValueError(f"data.synthetic.bit_depth must be 8 or 16, or the pair [8, 16] "
                         f"(either, drawn per sequence), got {value!r}")
    return (int(pair[0]), int(pair[1]))


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"data.synthetic.{name} must be an integer >= {minimum}, got {value!r}")


def _check_number(name, value, minimum, maximum):
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not minimum <= value <= maximum:  # also rejects NaN
        raise ValueError(f"data.synthetic.{name} must be a number in [{minimum:g}, "
                         f"{maximum:g}], got {value!r}")


def _range(name, value, minimum, maximum, open_low, why, integer=False):
    """`value` (a number or a pair) as a checked (low, high) tuple."""
    kind = "an integer" if integer else "a number"
    bound = f"{minimum:g} {'<' if open_low else '<='} low <= high <= {maximum:g}"
    message = (f"data.synthetic.{name} must be {kind} or a pair [low, high] with {bound}"
               f"{why}, got {value!r}")

    def number(item):
        if isinstance(item, bool) or not isinstance(
                item, (int, float, np.integer, np.floating)):
            raise ValueError(message)
        if integer and not float(item).is_integer():
            raise ValueError(message)
        return int(item) if integer else float(item)

    if isinstance(value, (list, tuple)) and len(value) == 2:
        low, high = (number(item) for item in value)
    elif isinstance(value, (list, tuple, str, bytes)) or value is None:
        raise ValueError(message)
    else:
        low = high = number(value)
    if not ((minimum < low) if open_low else (minimum <= low)) or not low <= high <= maximum:
        raise ValueError(message)  # also NaN
    return (low, high)
