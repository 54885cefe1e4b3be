"""Synthetic off-axis interferogram sequences with bounding-box labels.

No public interferogram data set exists, so this module renders stand-ins for what an
interferometric microscope records: intensity I = A + B cos(phi) with a background (carrier
fringes, low-order aberrations, uneven illumination, vignetting, dust) shared by every frame of a
sequence, and moving samples whose phase bumps bend the fringes locally, seen through a
defocused camera with read, shot and fixed-pattern noise. Each visible sample is labelled by its
axis-aligned box (x, y, w, h), the cv2.selectROI convention used for real data.

Every factor is drawn per sequence (or per sample) from a range of the `SyntheticSpec`
(domain randomisation: carrier density and direction, aberration strength, falloff, vignetting,
visibility, exposure and saturation, noise, blur, dust, sample size, phase, outline, clusters,
empty sequences, samples staying in view or crossing it); tests/data/test_synthetic_factors.py
measures each back from the frames.
Rendering is vectorised numpy and deterministic for a given (spec, seed), fast enough to build
training sets on the fly.
"""

import math
from dataclasses import dataclass

import cv2
import numpy as np

from tfseg.config.synthetic import SyntheticSpec

# Slowly varying fields (aberrations, illumination, vignetting) are evaluated on at most this
# many points per side and upsampled bilinearly: exact enough and far cheaper on 3072^2 frames.
_COARSE_SIDE = 256
# A sample's box covers the pixels where its phase exceeds this fraction of its peak.
_BOX_LEVEL = 0.1
# Low-order aberration coefficient stds (radians) at `aberration` 1: defocus, 2x astigmatism,
# 2x coma, spherical.
_ABERRATION_STD = np.array([4.0, 1.5, 1.5, 1.0, 1.0, 1.0])
# Outline harmonics of an irregular sample (2 would only change the ellipse's elongation).
_HARMONICS = np.arange(3, 6, dtype=np.float32)
# The factors drawn per sequence from the spec's ranges, in this order (one uniform each).
_SEQUENCE_FACTORS = ("fringes", "fringe_angle", "aberration", "falloff", "vignetting",
                     "visibility", "exposure", "read_noise", "shot_noise", "fixed_pattern",
                     "blur", "dust", "vibration", "flicker")


def _draw_factors(spec, rng):
    """The sequence's factors, {name: value}, each drawn uniformly from its range,
    "empty": whether the sequence holds no sample, and "bit_depth": one of the pair. Always
    the same draws, so pinning one factor changes no other."""
    values = {}
    for name in _SEQUENCE_FACTORS:
        low, high = getattr(spec, name)
        draw = rng.random()
        values[name] = (min(high, low + int(draw * (high - low + 1))) if name == "dust"
                        else low + (high - low) * draw)
    values["empty"] = bool(rng.random() < spec.empty_probability)
    # Drawn last, so a pair leaves every draw above as a pinned depth has it.
    low, high = spec.bit_depth
    values["bit_depth"] = low if rng.random() < 0.5 else high
    return values


@dataclass(frozen=True)
class _Background:
    """Static per-sequence fields, float32 (H, W), intensities in full-scale units."""

    phase: np.ndarray       # carrier + aberrations (+ dust in the object beam), radians
    offset: np.ndarray      # A = V (I_ref + I_obj)
    modulation: np.ndarray  # B = 2 gamma V sqrt(I_ref I_obj)
    object_beam: np.ndarray  # V I_obj, needed to apply sample absorption


class _Sample:
    """One moving sample: a smooth, irregular, cell-like phase bump with a nucleus. With a
    `leader`, a neighbour touching or overlapping it that moves with it (a cluster)."""

    def __init__(self, spec, rng, leader=None):
        h, w, t = spec.height, spec.width, spec.frames_per_sequence
        short = min(h, w)
        self.semi_major = 0.5 * short * rng.uniform(*spec.sample_size)
        self.semi_minor = self.semi_major * rng.uniform(0.6, 1.0)
        self.peak_phase = rng.uniform(*spec.sample_phase)
        self.absorption = rng.uniform(0.0, 0.12)
        # Irregular outline: radius modulated by harmonics 3..5 (in ellipse-normalised units)
        # whose rms relative deviation is the drawn irregularity.
        weights = rng.uniform(0.2, 1.0, len(_HARMONICS))
        self.harmonic_amp = (rng.uniform(*spec.irregularity) * math.sqrt(2.0) * weights
                             / np.linalg.norm(weights)).astype(np.float32)
        self.harmonic_phase = rng.uniform(0.0, 2 * np.pi, 3).astype(np.float32)
        self.edge_power = rng.uniform(0.5, 1.5)  # 0.5: sphere-like, steep rim; 1.5: flat, soft
        self.nucleus_centre = rng.uniform(-0.3, 0.3, 2)
        self.nucleus_width = rng.uniform(0.15, 0.35)
        self.nucleus_amp = rng.uniform(0.0, 0.8)
        self.reach = self.semi_major * (1.0 + self.harmonic_amp.sum()) + 2.0
        self.angle = rng.uniform(0.0, np.pi)
        self.spin = rng.uniform(-0.05, 0.05)
        direction = rng.uniform(0.0, 2 * np.pi)
        unit = np.array([np.cos(direction), np.sin(direction)])
        if leader is not None:  # beside the leader, along `direction`, moving with it
            gap = rng.uniform(0.6, 1.0)  # 1: the ellipses touch; below: they overlap
            distance = gap * (leader.radius_towards(direction) + self.radius_towards(direction))
            self.start = leader.start + unit * distance
            self.velocity = leader.velocity
        elif rng.random() < spec.resident_probability:   # stays in view, drifting slowly
            self.start = rng.uniform(0.15, 0.85, 2) * (w, h)
            self.velocity = unit * short * rng.uniform(0.003, 0.012)
        else:  # crosses the frame in 0.5..1.5 sequence lengths, passing a central point,
            # which is what leaves some frames without any sample
            path = math.hypot(h, w) + 2 * self.reach
            self.velocity = unit * path / max(1.0, t * rng.uniform(0.5, 1.5))
            t_pass = rng.uniform(-0.3, 1.3) * (t - 1)
            self.start = rng.uniform(0.2, 0.8, 2) * (w, h) - self.velocity * t_pass
        self.wobble_amp = rng.uniform(0.0, 0.015, 2) * short
        self.wobble_freq = rng.uniform(0.3, 1.0, 2)
        self.wobble_phase = rng.uniform(0.0, 2 * np.pi, 2)
        if leader is not None:
            self.wobble_amp, self.wobble_freq, self.wobble_phase = (
                leader.wobble_amp, leader.wobble_freq, leader.wobble_phase)
        grid = np.linspace(-1.3, 1.3, 97, dtype=np.float32)
        self.inverse_peak = np.float32(1.0 / self._shape(grid[None, :], grid[:, None]).max())

    def radius_towards(self, direction):
        """The ellipse's radius (no harmonics) along `direction`, radians, in pixels."""
        along = direction - self.angle
        return 1.0 / math.hypot(math.cos(along) / self.semi_major,
                                math.sin(along) / self.semi_minor)

    def _shape(self, u, v):
        """Unnormalised phase profile at ellipse-normalised coordinates (outline near 1)."""
        rho2 = u * u + v * v
        theta = np.arctan2(v, u)[..., None]
        edge = 1.0 + (self.harmonic_amp * np.cos(_HARMONICS * theta - self.harmonic_phase)
                      ).sum(-1)
        dome = np.clip(1.0 - rho2 / (edge * edge), 0.0, None) ** self.edge_power
        du, dv = u - self.nucleus_centre[0], v - self.nucleus_centre[1]
        nucleus = np.exp((du * du + dv * dv) * (-0.5 / self.nucleus_width**2))
        return dome * (1.0 + self.nucleus_amp * nucleus)

    def render(self, t, height, width):
        """Profile at frame t on the in-frame part of its patch: (rows, cols, profile) or None."""
        cx, cy = (self.start + self.velocity * t
                  + self.wobble_amp * np.sin(self.wobble_freq * t + self.wobble_phase))
        x0, x1 = max(0, math.floor(cx - self.reach)), min(width, math.ceil(cx + self.reach) + 1)
        y0, y1 = max(0, math.floor(cy - self.reach)), min(height, math.ceil(cy + self.reach) + 1)
        if x0 >= x1 or y0 >= y1:
            return None
        x = (np.arange(x0, x1, dtype=np.float32) - np.float32(cx))[None, :]
        y = (np.arange(y0, y1, dtype=np.float32) - np.float32(cy))[:, None]
        angle = self.angle + self.spin * t
        cos, sin = np.float32(math.cos(angle)), np.float32(math.sin(angle))
        u = (x * cos + y * sin) * np.float32(1.0 / self.semi_major)
        v = (y * cos - x * sin) * np.float32(1.0 / self.semi_minor)
        profile = (self._shape(u, v) * self.inverse_peak).astype(np.float32)
        return slice(y0, y1), slice(x0, x1), profile


def _upsample(field, height, width):
    field = field.astype(np.float32)
    if field.shape == (height, width):
        return field
    return cv2.resize(field, (width, height), interpolation=cv2.INTER_LINEAR)


def _render_background(spec, factors, rng, dust_rng):
    h, w = spec.height, spec.width
    # Coarse grid at the pixel centres cv2.resize maps to; u, v in a unit disc whose radius is
    # the half-diagonal, so the corners' pixel centres are at r = 1.
    gh, gw = min(h, _COARSE_SIDE), min(w, _COARSE_SIDE)
    radius = 0.5 * math.hypot(h - 1, w - 1)
    u = (((np.arange(gw) + 0.5) * (w / gw) - 0.5 - (w - 1) / 2) / radius)[None, :]
    v = (((np.arange(gh) + 0.5) * (h / gh) - 0.5 - (h - 1) / 2) / radius)[:, None]
    u, v = u.astype(np.float32), v.astype(np.float32)
    r2 = u * u + v * v

    # Zernike-like aberrations, radians: defocus, 2x astigmatism, 2x coma, spherical.
    c = rng.normal(0.0, _ABERRATION_STD) * factors["aberration"]
    aberration = (c[0] * (2 * r2 - 1) + c[1] * (u * u - v * v) + c[2] * 2 * u * v
                  + (3 * r2 - 2) * (c[3] * u + c[4] * v) + c[5] * (6 * r2 * r2 - 6 * r2 + 1))

    # Gaussian beams losing `falloff` of their intensity one half-diagonal from their centre.
    steepness = np.float32(-math.log1p(-factors["falloff"]))

    def beam():
        cu, cv = rng.normal(0.0, 0.1, 2)
        return np.exp(-steepness * ((u - cu) ** 2 + (v - cv) ** 2))

    reference = beam() * rng.uniform(0.6, 1.4)
    ripple = sum(a * np.cos(kx * u + ky * v + p) for a, kx, ky, p in zip(
        rng.uniform(0.0, 0.04, 3), rng.normal(0.0, 4.0, 3), rng.normal(0.0, 4.0, 3),
        rng.uniform(0.0, 2 * np.pi, 3)))
    obj = beam() * (1.0 + ripple)
    # Vignetting: a transmission (1 + a r^2)^-2 that is 1 - vignetting at the corners.
    vignette = (1.0 + r2 * np.float32((1.0 - factors["vignetting"]) ** -0.5 - 1.0)) ** -2
    visibility = factors["visibility"]

    offset = _upsample(vignette * (reference + obj), h, w)
    modulation = _upsample(2 * visibility * vignette * np.sqrt(reference * obj), h, w)
    object_beam = _upsample(vignette * obj, h, w)

    k = 2 * np.pi * factors["fringes"] / min(h, w)
    tilt = math.radians(factors["fringe_angle"])
    phase = _upsample(aberration + rng.uniform(0.0, 2 * np.pi), h, w)
    phase += (np.float32(k * math.cos(tilt)) * np.arange(w, dtype=np.float32))[None, :]
    phase += (np.float32(k * math.sin(tilt)) * np.arange(h, dtype=np.float32))[:, None]

    # Exposure: the brightest pixel of the dust-free background at `exposure` x full scale.
    brightest = np.cos(phase)
    brightest *= modulation
    brightest += offset
    scale = np.float32(factors["exposure"] / brightest.max())
    for field in (offset, modulation, object_beam):
        field *= scale
    background = _Background(phase, offset, modulation, object_beam)
    for _ in range(factors["dust"]):
        _add_dust(background, dust_rng, spec.object_dust_probability)
    return background


def _add_dust(background, rng, object_probability):
    """Adds one static dust artefact to `background`'s fields, in place: an in-focus speck or
    the diffraction rings of an out-of-focus particle, half each. A particle near the camera
    dims both beams' recorded intensity; one in the object beam (`object_probability` of the
    rings), whose scattered wave changes that beam's amplitude and phase, bends the fringes
    along its rings as a holography model's dust bends them (`tfseg.data.holography`)."""
    h, w = background.phase.shape
    short = min(h, w)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    kind = rng.random()   # < 0.5: rings, < 0.5 x object_probability: in the object beam
    in_object_beam = kind < 0.5 * object_probability
    if kind < 0.5:   # a chirp whose outer period stays >= ~3 px
        size = short * (rng.uniform(0.04, 0.25) if in_object_beam else rng.uniform(0.03, 0.08))
        count = rng.uniform(2.0, max(2.0, min(12.0, size / 3)))
        contrast = rng.uniform(0.05, 0.35) if in_object_beam else rng.uniform(0.15, 0.45)
        reach = size
    else:
        size = max(1.0, short * rng.uniform(0.004, 0.015))
        depth = rng.uniform(0.3, 0.8) if rng.random() < 0.8 else -rng.uniform(0.1, 0.4)
        reach = 3 * size
    x0, x1 = max(0, math.floor(cx - reach)), min(w, math.ceil(cx + reach) + 1)
    y0, y1 = max(0, math.floor(cy - reach)), min(h, math.ceil(cy + reach) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    x = (np.arange(x0, x1, dtype=np.float32) - np.float32(cx))[None, :] / np.float32(size)
    y = (np.arange(y0, y1, dtype=np.float32) - np.float32(cy))[:, None] / np.float32(size)
    d2 = x * x + y * y
    region = slice(y0, y1), slice(x0, x1)
    if in_object_beam:   # the object wave times 1 + its scattered part
        wave = 1.0 - contrast * np.clip(1.0 - d2, 0.0, None) ** 2 * np.exp(
            1j * np.pi * count * d2)
        intensity = np.abs(wave).astype(np.float32) ** 2
        background.phase[region] += np.angle(wave).astype(np.float32)
        background.modulation[region] *= np.sqrt(intensity)
        background.offset[region] += background.object_beam[region] * (intensity - 1.0)
        background.object_beam[region] *= intensity
        return
    factor = (1.0 - contrast * np.cos(np.pi * count * d2) * np.clip(1.0 - d2, 0.0, None) ** 2
              if kind < 0.5 else 1.0 - depth * np.exp(-d2)).astype(np.float32)
    for field in (background.offset, background.modulation, background.object_beam):
        field[region] *= factor


def generate_sequence(
        spec: SyntheticSpec, seed: int) -> tuple[np.ndarray, list[list[tuple[int, int, int, int]]]]:
    """Renders one interferogram sequence and its per-frame sample boxes.

    The background, the samples and the camera noise use independent random streams derived
    from `seed`, so the same seed with a different `max_samples` (e.g. 0) keeps the background.

    Args:
        spec: a `SyntheticSpec`.
        seed: non-negative integer; the same (spec, seed) always gives identical output.

    Returns:
        `(frames, boxes)`: frames of shape (T, H, W), uint8 for bit depth 8 or uint16 for 16
        (the sequence's draw where `spec.bit_depth` is the pair (8, 16));
        boxes[t] is a list of (x, y, w, h) integer boxes (top-left corner, cv2.selectROI
        convention) of the samples visible in frame t, inside the frame with w, h >= 1.
    """
    if not isinstance(spec, SyntheticSpec):
        raise ValueError(f"spec must be a SyntheticSpec, got {type(spec).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    factor_rng, background_rng, sample_rng, noise_rng, pattern_rng, dust_rng = (
        np.random.default_rng(seed).spawn(6))
    h, w, n_frames = spec.height, spec.width, spec.frames_per_sequence
    factors = _draw_factors(spec, factor_rng)

    background = _render_background(spec, factors, background_rng, dust_rng)
    # Vibration: jitter plus a slow, bounded wander of the same amplitude.
    wander = np.sin(2 * np.pi * np.arange(n_frames) / background_rng.uniform(20.0, 200.0)
                    + background_rng.uniform(0.0, 2 * np.pi))
    drift = factors["vibration"] * (background_rng.standard_normal(n_frames) + wander)
    gain = 1.0 + factors["flicker"] * background_rng.standard_normal(n_frames)
    samples = _samples(spec, sample_rng, empty=factors["empty"])
    # Photo-response non-uniformity: one per-pixel gain map for the sequence.
    pattern = (1.0 + np.float32(factors["fixed_pattern"])
               * pattern_rng.standard_normal((h, w), dtype=np.float32)
               if factors["fixed_pattern"] else None)
    blur = factors["blur"]
    read2 = np.float32(factors["read_noise"] ** 2)
    shot2 = np.float32(factors["shot_noise"] ** 2)

    dtype = np.uint8 if factors["bit_depth"] == 8 else np.uint16
    full_scale = np.float32(2**factors["bit_depth"] - 1)
    frames = np.empty((n_frames, h, w), dtype)
    all_boxes = []
    image = np.empty((h, w), np.float32)
    noise = np.empty((h, w), np.float32)
    spread = np.empty((h, w), np.float32)
    for t in range(n_frames):
        np.add(background.phase, np.float32(drift[t]), out=image)
        hits, boxes = [], []
        for sample in samples:
            hit = sample.render(t, h, w)
            if hit is None:
                continue
            rows, cols, profile = hit
            image[rows, cols] += np.float32(sample.peak_phase) * profile
            hits.append((sample, hit))
            box = _bounding_box(profile > _BOX_LEVEL, rows.start, cols.start)
            if box is not None:
                boxes.append(box)
        all_boxes.append(boxes)
        np.cos(image, out=image)
        absorbed = _absorbed_patch(background, image, hits)
        np.multiply(image, background.modulation, out=image)
        image += background.offset
        if absorbed is not None:
            region, values = absorbed
            image[region] = values
        image *= np.float32(gain[t])
        if blur > 0:  # defocus: the optics blur the intensity the camera records
            cv2.GaussianBlur(image, (0, 0), blur, dst=image, borderType=cv2.BORDER_REFLECT)
        if pattern is not None:
            image *= pattern
        if read2 or shot2:
            # Read noise std `read_noise`, shot noise std `shot_noise * sqrt(I)` (I in
            # full-scale units).
            noise_rng.standard_normal(dtype=np.float32, out=noise)
            np.maximum(image, 0.0, out=spread)
            spread *= shot2
            spread += read2
            np.sqrt(spread, out=spread)
            noise *= spread
            image += noise
        image *= full_scale
        np.rint(image, out=image)
        np.clip(image, 0, full_scale, out=image)
        frames[t] = image
    return frames, all_boxes


def _samples(spec, rng, *, empty):
    """The sequence's samples: 1..max_samples of them unless `empty`, some in clusters."""
    count = int(rng.integers(1, spec.max_samples + 1)) if spec.max_samples else 0
    if empty:
        return []
    samples = []
    while len(samples) < count:
        leader = _Sample(spec, rng)
        samples.append(leader)
        if rng.random() < spec.cluster_probability:
            neighbours = min(int(rng.integers(1, 3)), count - len(samples))
            samples.extend(_Sample(spec, rng, leader) for _ in range(neighbours))
    return samples


def _absorbed_patch(background, cos_phase, hits):
    """Intensity of the region holding the samples, with their amplitude absorption applied,
    as (region, values); None without samples."""
    if not hits:
        return None
    y0 = min(hit[0].start for _, hit in hits)
    y1 = max(hit[0].stop for _, hit in hits)
    x0 = min(hit[1].start for _, hit in hits)
    x1 = max(hit[1].stop for _, hit in hits)
    transmission = np.ones((y1 - y0, x1 - x0), np.float32)
    for sample, (rows, cols, profile) in hits:
        local = (slice(rows.start - y0, rows.stop - y0), slice(cols.start - x0, cols.stop - x0))
        transmission[local] *= 1.0 - np.float32(sample.absorption) * profile
    region = (slice(y0, y1), slice(x0, x1))
    values = (background.offset[region] - background.object_beam[region] * (1.0 - transmission)
              + background.modulation[region] * np.sqrt(transmission) * cos_phase[region])
    return region, values


def _bounding_box(mask, top, left):
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return (int(left + cols[0]), int(top + rows[0]), int(cols[-1] - cols[0] + 1),
            int(rows[-1] - rows[0] + 1))
