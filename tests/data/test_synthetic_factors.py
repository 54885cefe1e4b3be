"""Every randomised factor of the synthetic interferogram generator, measured back from the
rendered frames and labels: the measurement lies in the configured range, and pinning the
factor (a single number) pins the measurement.

Each test renders small frames with every other factor pinned to a neutral value (`quiet`),
so the measured quantity comes from the factor alone.
"""

import dataclasses
import hashlib
import math

import cv2
import numpy as np
import pytest

from tfseg.config import SyntheticSpec
from tfseg.data import synthetic
from tfseg.data.synthetic import generate_sequence

SIZE = 128
NEUTRAL = dict(height=SIZE, width=SIZE, frames_per_sequence=2, max_samples=0, fringes=16,
               fringe_angle=0, aberration=0, falloff=0, vignetting=0, visibility=0.8,
               exposure=0.8, read_noise=0, shot_noise=0, fixed_pattern=0, blur=0, dust=0,
               vibration=0, flicker=0, cluster_probability=0, empty_probability=0,
               irregularity=0, bit_depth=16)
FULL = 65535.0
DEFAULT = SyntheticSpec()


def quiet(**changes):
    """A 16-bit, noise-free spec with every factor pinned to a neutral value but `changes`."""
    return SyntheticSpec(**{**NEUTRAL, **changes})


def render(spec, seed=0):
    frames, boxes = generate_sequence(spec, seed)
    return frames.astype(np.float64), boxes


def carrier(frame):
    """(fringes across the frame, angle in degrees in [0, 180)) of the FFT peak of a square
    frame, refined on a 4x zero-padded spectrum."""
    size = frame.shape[0]
    window = np.outer(np.hanning(size), np.hanning(size))
    spectrum = np.abs(np.fft.fft2((frame - frame.mean()) * window, s=(4 * size, 4 * size)))
    spectrum[0, 0] = 0
    ky, kx = np.unravel_index(np.argmax(spectrum), spectrum.shape)
    ky, kx = [(k + 2 * size) % (4 * size) - 2 * size for k in (ky, kx)]  # signed
    return math.hypot(kx, ky) / 4, math.degrees(math.atan2(ky, kx)) % 180


def demodulated(frame, fringes, angle=0.0):
    """The complex fringe field (its angle: the phase without the carrier) of a frame."""
    h, w = frame.shape
    k = 2 * math.pi * fringes / min(h, w)
    y, x = np.mgrid[0:h, 0:w]
    carrier_phase = k * (x * math.cos(math.radians(angle)) + y * math.sin(math.radians(angle)))
    shifted = (frame - frame.mean()) * np.exp(-1j * carrier_phase)
    sigma = 0.5 * min(h, w) / fringes  # half a period: the other lobes vanish
    return (cv2.GaussianBlur(shifted.real, (0, 0), sigma)
            + 1j * cv2.GaussianBlur(shifted.imag, (0, 0), sigma))


def unwrapped(phase):
    """2D phase unwrapped from the centre column outwards (smooth fields only)."""
    centre = phase.shape[1] // 2
    column = np.unwrap(phase[:, centre])
    rows = np.unwrap(phase, axis=1)
    return rows - rows[:, centre:centre + 1] + column[:, None]


# Carrier frequency and direction

@pytest.mark.parametrize("fringes, angle", [(12.5, 0.0), (12.5, 30.0), (20.0, 120.0)])
def test_pinned_carrier_is_the_fft_peak(fringes, angle):
    for seed in range(2):
        frames, _ = render(quiet(fringes=fringes, fringe_angle=angle), seed)
        measured, direction = carrier(frames[0])
        assert measured == pytest.approx(fringes, abs=0.4)
        assert min(abs(direction - angle), 180 - abs(direction - angle)) < 2.5


def test_carrier_ranges_cover_the_default_ranges():
    spec = quiet(fringes=DEFAULT.fringes, fringe_angle=DEFAULT.fringe_angle, frames_per_sequence=1)
    measured = np.array([carrier(render(spec, seed)[0][0]) for seed in range(24)])
    low, high = DEFAULT.fringes
    assert np.all((measured[:, 0] > low - 0.4) & (measured[:, 0] < high + 0.4))
    assert np.ptp(measured[:, 0]) > 0.5 * (high - low)
    assert np.ptp(measured[:, 1]) > 90   # directions all round


# Aberrations: the fringes' bend, from the demodulated phase

def bend(spec, seed):
    """Peak-to-valley of the phase the aberrations add, in fringes (against a render of the
    same seed without aberrations)."""
    frame = render(spec, seed)[0][0]
    flat = render(quiet(), seed)[0][0]
    difference = np.angle(demodulated(frame, 16) * np.conj(demodulated(flat, 16)))
    margin = 12  # the low-pass's border
    inner = unwrapped(difference)[margin:-margin, margin:-margin]
    return np.ptp(inner) / (2 * math.pi)


def test_aberration_scales_the_fringe_curvature():
    for seed in range(3):
        bends = [bend(quiet(aberration=scale), seed) for scale in (0.0, 0.5, 1.0)]
        assert bends[0] < 0.02
        assert bends[2] == pytest.approx(2 * bends[1], rel=0.15)
    # The default's strongest aberrations bend the fringes by several fringes.
    strong = [bend(quiet(aberration=DEFAULT.aberration[1]), seed) for seed in range(6)]
    assert np.median(strong) > 1.2 and max(strong) > 3


# Illumination: falloff and vignetting, on fringe-free frames (visibility 0)

def corner_ratio(spec, seed=0):
    """Mean of the four corner pixels over the central ones, of a fringe-free frame, against
    the same of a flat render of the seed (which keeps the beams' faint ripple)."""
    ratios = []
    for frame in (render(spec, seed)[0][0], render(quiet(visibility=0), seed)[0][0]):
        centre = frame[SIZE // 2 - 1:SIZE // 2 + 1, SIZE // 2 - 1:SIZE // 2 + 1].mean()
        ratios.append(frame[[0, 0, -1, -1], [0, -1, 0, -1]].mean() / centre)
    return ratios[0] / ratios[1]


@pytest.mark.parametrize("vignetting", [0.0, 0.25, 0.5])
def test_pinned_vignetting_darkens_the_corners_by_its_value(vignetting):
    for seed in range(3):
        ratio = corner_ratio(quiet(visibility=0, vignetting=vignetting), seed)
        assert ratio == pytest.approx(1 - vignetting, abs=0.02)


@pytest.mark.parametrize("falloff", [0.0, 0.3, 0.6])
def test_pinned_falloff_darkens_the_corners_by_its_value(falloff):
    # The two beams are centred near, not at, the frame's centre, and carry a faint ripple.
    ratios = [corner_ratio(quiet(visibility=0, falloff=falloff), seed) for seed in range(6)]
    assert np.mean(ratios) == pytest.approx(1 - falloff, abs=0.04)
    assert np.ptp(ratios) < 0.12


def test_illumination_ranges_cover_the_default_ranges():
    spec = quiet(visibility=0, falloff=DEFAULT.falloff, vignetting=DEFAULT.vignetting,
                 frames_per_sequence=1)
    darkening = np.array([1 - corner_ratio(spec, seed) for seed in range(24)])
    most = 1 - (1 - DEFAULT.falloff[1]) * (1 - DEFAULT.vignetting[1])
    assert np.all(darkening > -0.1) and np.all(darkening < most + 0.1)
    assert darkening.min() < 0.3 and darkening.max() > 0.5


# Fringe visibility and exposure

def visibility_of(frame):
    """(Imax - Imin) / (Imax + Imin) over the central 48 x 48 pixels (1.5 periods of 4
    fringes: the extremes are sampled within 0.5 %)."""
    centre = frame[40:88, 40:88]
    return (centre.max() - centre.min()) / (centre.max() + centre.min())


@pytest.mark.parametrize("visibility", [0.3, 0.6, 0.95])
def test_pinned_visibility_is_the_fringe_contrast(visibility):
    for seed in range(3):
        measured = visibility_of(render(quiet(visibility=visibility, fringes=4), seed)[0][0])
        # Unequal beams lower it by up to 2 %, their faint ripple moves the extremes' mean.
        assert 0.97 * visibility - 0.01 < measured < visibility + 0.02


def test_visibility_range_covers_the_default_range():
    spec = quiet(visibility=DEFAULT.visibility, fringes=4, frames_per_sequence=1)
    measured = np.array([visibility_of(render(spec, seed)[0][0]) for seed in range(24)])
    low, high = DEFAULT.visibility
    assert np.all((measured > 0.97 * low - 0.01) & (measured < high + 0.02))
    assert np.ptp(measured) > 0.5 * (high - low)


@pytest.mark.parametrize("exposure", [0.5, 0.7, 1.0])
def test_pinned_exposure_is_the_brightest_fringe(exposure):
    # 2 fringes across the frame: the brightest one's crest is sampled within 0.1 %.
    for seed in range(3):
        frame = render(quiet(exposure=exposure, fringes=2, aberration=1, falloff=0.4),
                       seed)[0][0]
        assert frame.max() / FULL == pytest.approx(exposure, rel=1e-3)


def test_exposure_above_one_saturates():
    for seed in range(3):
        frame = render(quiet(exposure=1.1), seed)[0][0]
        saturated = np.mean(frame == FULL)
        # cos(phi) > (1.1^-1 (A + B) - A) / B on a flat background of visibility 0.8
        assert 0.05 < saturated < 0.3
    assert np.mean(render(quiet(exposure=0.99), 0)[0][0] == FULL) == 0


def test_exposure_range_covers_the_default_range():
    spec = quiet(exposure=DEFAULT.exposure, fringes=2, frames_per_sequence=1)
    peaks = np.array([render(spec, seed)[0][0].max() / FULL for seed in range(40)])
    low, high = DEFAULT.exposure
    assert np.all(peaks >= 0.999 * low)
    assert peaks.min() < low + 0.1 and np.sum(peaks == 1.0) >= 2  # some frames saturate


# Camera noise: read, shot and fixed-pattern

def frame_difference(spec, seed=0):
    """Two frames of a static sequence (no vibration, flicker or samples): they differ by
    the camera noise only. Returns (difference, mean), full-scale units."""
    frames = render(spec, seed)[0] / FULL
    return frames[1] - frames[0], frames.mean(axis=0)


@pytest.mark.parametrize("read_noise", [0.0, 0.005, 0.02])
def test_pinned_read_noise_is_the_std_of_the_frame_difference(read_noise):
    for seed in range(2):
        difference, _ = frame_difference(quiet(read_noise=read_noise), seed)
        measured = difference.std() / math.sqrt(2)
        assert measured == pytest.approx(read_noise, rel=0.05, abs=1e-5)


def shot_noise_of(difference, mean):
    """The shot noise at full scale fitting var(noise) = shot^2 I."""
    return math.sqrt(np.sum(difference**2 / 2 * mean) / np.sum(mean**2))


@pytest.mark.parametrize("shot_noise", [0.01, 0.03])
def test_pinned_shot_noise_grows_with_sqrt_intensity(shot_noise):
    difference, mean = frame_difference(quiet(shot_noise=shot_noise), 0)
    assert shot_noise_of(difference, mean) == pytest.approx(shot_noise, rel=0.05)
    bright, dark = mean > 0.6, mean < 0.2
    ratio = difference[bright].std() / difference[dark].std()
    assert ratio == pytest.approx(math.sqrt(mean[bright].mean() / mean[dark].mean()), rel=0.15)


def test_noise_ranges_cover_the_default_ranges():
    read, shot = [], []
    for seed in range(16):
        read.append(frame_difference(quiet(read_noise=DEFAULT.read_noise), seed)[0].std()
                    / math.sqrt(2))
        shot.append(shot_noise_of(*frame_difference(quiet(shot_noise=DEFAULT.shot_noise),
                                                    seed)))
    for measured, (low, high) in ((read, DEFAULT.read_noise), (shot, DEFAULT.shot_noise)):
        assert min(measured) >= 0.95 * low and max(measured) < 1.05 * high + 1e-5
        assert np.ptp(measured) > 0.5 * (high - low)


@pytest.mark.parametrize("fixed_pattern", [0.005, 0.02])
def test_fixed_pattern_is_a_gain_map_shared_by_the_frames(fixed_pattern):
    clean = render(quiet(), 3)[0]
    patterned = render(quiet(fixed_pattern=fixed_pattern), 3)[0]
    bright = clean[0] > 0.2 * FULL
    gains = [(patterned[t] / clean[t] - 1)[bright] for t in range(2)]
    assert gains[0].std() == pytest.approx(fixed_pattern, rel=0.1)
    assert np.corrcoef(*gains)[0, 1] > 0.95   # the same map in every frame
    # Read noise, by contrast, is new in every frame.
    noisy = render(quiet(read_noise=fixed_pattern), 3)[0]
    assert abs(np.corrcoef(*[(noisy[t] - clean[t]).ravel() for t in range(2)])[0, 1]) < 0.05


def test_fixed_pattern_range_covers_the_default_range():
    measured = []
    for seed in range(12):
        clean = render(quiet(frames_per_sequence=1), seed)[0][0]
        patterned = render(quiet(fixed_pattern=DEFAULT.fixed_pattern, frames_per_sequence=1),
                           seed)[0][0]
        bright = clean > 0.2 * FULL
        measured.append((patterned / clean - 1)[bright].std())
    low, high = DEFAULT.fixed_pattern
    assert min(measured) >= 0.9 * low and max(measured) < 1.1 * high
    assert np.ptp(measured) > 0.5 * (high - low)


# Defocus blur: the attenuation of the carrier's Fourier component

def blur_sigma(spec, seed):
    """The Gaussian sigma (pixels) that explains the carrier's attenuation against a sharp
    render of the same seed (16 fringes at angle 0: FFT bin (0, 16))."""
    amplitude = [abs(np.fft.fft2(render(s, seed)[0][0])[0, 16]) for s in (spec, quiet())]
    frequency = 16 / SIZE
    return math.sqrt(max(0.0, -math.log(amplitude[0] / amplitude[1]))
                     / (2 * math.pi**2 * frequency**2))


@pytest.mark.parametrize("blur", [0.0, 0.5, 1.0, 2.0])
def test_pinned_blur_attenuates_the_fringes_as_its_sigma(blur):
    for seed in range(2):
        assert blur_sigma(quiet(blur=blur), seed) == pytest.approx(blur, abs=0.05)


def test_blur_range_covers_the_default_range():
    spec = quiet(blur=DEFAULT.blur, frames_per_sequence=1)
    measured = [blur_sigma(spec, seed) for seed in range(16)]
    low, high = DEFAULT.blur
    assert min(measured) > low - 0.05 and max(measured) < high + 0.05
    assert np.ptp(measured) > 0.5 * (high - low)


# Dust: static specks and rings, counted where a frame differs from a dust-free render

def dust_count(spec, seed):
    frames = render(spec, seed)[0]
    clean = render(quiet(), seed)[0]
    changed = (np.abs(frames[0] - clean[0]) > 2).astype(np.uint8)  # a ring crosses 1 at
    changed = cv2.dilate(changed, np.ones((9, 9), np.uint8))        # its zero crossings
    assert np.array_equal(frames[0] != clean[0], frames[1] != clean[1])  # static
    return cv2.connectedComponents(changed)[0] - 1


@pytest.mark.parametrize("dust", [0, 1, 5])
def test_pinned_dust_count(dust):
    counts = [dust_count(quiet(dust=dust), seed) for seed in range(12)]
    # Artefacts that overlap count once: the rings of a particle in the object beam reach
    # up to a quarter of the frame, so 5 of them often touch.
    assert max(counts) <= dust and np.mean(counts) >= 0.65 * dust


def test_dust_range_covers_the_default_range():
    counts = [dust_count(quiet(dust=DEFAULT.dust, frames_per_sequence=2), seed)
              for seed in range(24)]
    low, high = DEFAULT.dust
    assert min(counts) >= 0 and max(counts) <= high
    assert min(counts) <= low + 1 and max(counts) >= high - 2


@pytest.mark.parametrize("probability", [0.0, 0.5, 1.0])
def test_object_dust_probability_is_the_share_of_rings_that_bend_the_fringes(probability):
    # Out of focus in the object beam, a particle's scattered wave changes that beam's
    # phase (up to asin(0.35) rad) and amplitude; a speck or rings near the camera dim the
    # recorded intensity only, leaving the fringe phase and visibility as they were. Half
    # the particles make rings.
    bent = 0
    for seed in range(400):
        fields = [np.ones((64, 64), np.float32) for _ in range(4)]
        fields[0][:] = 0.0
        synthetic._add_dust(synthetic._Background(*fields), np.random.default_rng(seed),
                            probability)
        phase, offset, modulation, object_beam = fields
        if np.any(phase != 0):
            bent += 1
            assert np.abs(phase).max() <= math.asin(0.35) + 1e-6
            assert np.allclose(modulation ** 2, object_beam, rtol=1e-5)
        else:
            assert np.allclose(offset, modulation) and np.allclose(offset, object_beam)
    # Binomial over 400 particles: 3 sigma is at most 0.075.
    assert bent / 400 == pytest.approx(0.5 * probability, abs=0.075)


# Vibration and flicker: frame-to-frame changes of a static background

def test_pinned_vibration_is_the_rms_phase_jitter():
    spec = quiet(frames_per_sequence=48, vibration=0.2)
    for seed in range(2):
        frames = render(spec, seed)[0]
        fields = [demodulated(frame, 16)[24:-24, 24:-24] for frame in frames]
        steps = np.array([np.angle(np.sum(f * np.conj(fields[0]))) for f in fields])
        # jitter (std v) plus a wander of amplitude v: rms between v and sqrt(1.5) v
        assert 0.7 * 0.2 < (steps - steps.mean()).std() < 1.5 * 0.2
    assert np.ptp(render(quiet(frames_per_sequence=8), 0)[0], axis=0).max() == 0


def test_pinned_flicker_is_the_rms_power_fluctuation():
    spec = quiet(frames_per_sequence=64, flicker=0.01, height=32, width=32, fringes=4)
    for seed in range(2):
        means = render(spec, seed)[0].mean(axis=(1, 2))
        assert (means / means.mean()).std() == pytest.approx(0.01, rel=0.3)


# Samples: phase, outline, clusters, the frame's border, empty sequences

def sample_phase_peak(spec, seed):
    """The largest phase a sample adds, unwrapped, against the sample-free render of the
    seed; None if the sample is cut by the border."""
    frames, boxes = render(spec, seed)
    empty = render(dataclass_replace(spec, max_samples=0), seed)[0]
    if len(boxes[0]) != 1:
        return None
    x, y, w, h = boxes[0][0]
    if x < 20 or y < 20 or x + w > spec.width - 20 or y + h > spec.height - 20:
        return None
    fringes = spec.fringes[0]
    difference = np.angle(demodulated(frames[0], fringes) * np.conj(demodulated(empty[0],
                                                                                fringes)))
    # Unwrapped along the rows from the box's left, where the sample adds nothing.
    rows = np.unwrap(difference[y:y + h, x - 12:x + w + 12], axis=1)
    rows -= rows[:, :1]
    return rows.max()


def dataclass_replace(spec, **changes):
    import dataclasses
    return dataclasses.replace(spec, **changes)


@pytest.mark.slow
@pytest.mark.parametrize("phase", [0.5, 3.0, 8.0])
def test_pinned_sample_phase_is_the_peak_phase(phase):
    spec = quiet(height=256, width=256, fringes=48, max_samples=1, sample_size=0.4,
                 sample_phase=phase, frames_per_sequence=1)
    peaks = [p for p in (sample_phase_peak(spec, seed) for seed in range(10)) if p is not None]
    assert len(peaks) >= 3
    # The low-pass of the demodulation flattens the tip a little.
    assert all(0.8 * phase < peak < 1.05 * phase for peak in peaks)


@pytest.mark.slow
def test_default_sample_phases_reach_beyond_two_pi():
    spec = quiet(height=256, width=256, fringes=48, max_samples=1, sample_size=0.4,
                 sample_phase=DEFAULT.sample_phase, frames_per_sequence=1)
    peaks = [p for p in (sample_phase_peak(spec, seed) for seed in range(40)) if p is not None]
    assert len(peaks) >= 10
    assert min(peaks) < 2 and max(peaks) > 2 * math.pi   # weak and wrapping samples


def outline_irregularity(spec, seed):
    """The rms radial deviation of a sample's outline from its fitted ellipse, relative to the
    ellipse: the outline is where a carrier-free frame differs from the sample-free one."""
    frames, boxes = render(spec, seed)
    empty = render(dataclass_replace(spec, max_samples=0), seed)[0]
    changed = (frames[0] != empty[0]).astype(np.uint8)
    contours, _ = cv2.findContours(changed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    if (len(contour) < 40 or len(boxes[0]) != 1 or changed[[0, -1], :].any()
            or changed[:, [0, -1]].any()):  # cut by the border
        return None
    (cx, cy), (d1, d2), angle = cv2.fitEllipse(contour)
    points = contour[:, 0, :].astype(np.float64) - (cx, cy)
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    u = (points[:, 0] * cos + points[:, 1] * sin) / (d1 / 2)
    v = (-points[:, 0] * sin + points[:, 1] * cos) / (d2 / 2)
    return np.sqrt(np.mean((np.hypot(u, v) - 1) ** 2))


def irregular_spec(irregularity):
    # No carrier, full visibility, an exposure of 0.5: every pixel a sample touches changes.
    return quiet(fringes=0, visibility=1, exposure=0.5, max_samples=1, sample_size=0.5,
                 irregularity=irregularity, frames_per_sequence=1)


@pytest.mark.parametrize("irregularity", [0.0, 0.1, 0.25])
def test_pinned_irregularity_is_the_outline_deviation_from_an_ellipse(irregularity):
    measured = [m for m in (outline_irregularity(irregular_spec(irregularity), seed)
                            for seed in range(8)) if m is not None]
    assert len(measured) >= 3
    # Pixel steps add about 0.01.
    assert all(0.75 * irregularity - 0.005 < m < 1.15 * irregularity + 0.02 for m in measured)


def boxes_touch(a, b):
    (ax, ay, aw, ah), (bx, by, bw, bh) = a, b
    return ax <= bx + bw and bx <= ax + aw and ay <= by + bh and by <= ay + ah


def touching_fraction(spec):
    """Of the frames showing 2 or more samples, the fraction where two boxes touch or
    overlap."""
    touching = crowded = 0
    for seed in range(30):
        for boxes in render(spec, seed)[1]:
            if len(boxes) >= 2:
                crowded += 1
                touching += any(boxes_touch(a, b) for i, a in enumerate(boxes)
                                for b in boxes[i + 1:])
    return touching / crowded


@pytest.mark.slow
def test_clusters_are_touching_samples():
    base = dict(max_samples=3, frames_per_sequence=4, sample_size=(0.1, 0.2))
    assert touching_fraction(quiet(**base, cluster_probability=1)) > 0.9
    assert touching_fraction(quiet(**base, cluster_probability=0)) < 0.3


def test_samples_are_cut_by_the_border():
    spec = quiet(max_samples=3, frames_per_sequence=8, sample_size=(0.1, 0.3))
    cut = whole = 0
    for seed in range(12):
        frames, boxes = render(spec, seed)
        empty = render(dataclass_replace(spec, max_samples=0), seed)[0]
        for t, frame_boxes in enumerate(boxes):
            for x, y, w, h in frame_boxes:
                on_border = x == 0 or y == 0 or x + w == SIZE or y + h == SIZE
                cut += on_border
                whole += not on_border
            # The sample's fringes reach the border pixels where a box does.
            if any(x == 0 for x, _, _, _ in frame_boxes):
                assert np.any(frames[t][:, 0] != empty[t][:, 0])
    assert cut > 0.1 * (cut + whole) and whole > 0


@pytest.mark.slow
@pytest.mark.parametrize("probability", [0.0, 0.3, 1.0])
def test_empty_probability_is_the_fraction_of_sequences_without_samples(probability):
    spec = SyntheticSpec(height=32, width=32, frames_per_sequence=16, fringes=4,
                         max_samples=3, empty_probability=probability)
    without = np.mean([not any(generate_sequence(spec, seed)[1]) for seed in range(120)])
    # A sequence whose samples all stay out of view counts too (at most a few %).
    assert probability - 0.13 < without < probability + 0.13
    if probability == 1.0:
        assert without == 1.0


def still_fraction(probability, sequences):
    """Of `sequences` sequences holding one sample each (64x64, 8 frames), the fraction whose
    sample is in the first and the last frame, its box centre moved less than a fifth of the
    frame between them. A resident sample moves at most 1.2 % of the side per frame plus a
    bounded wobble (under 13 px here), a crossing one at least diagonal / 1.5 sequence
    lengths (7.5 px per frame, over 35 px between two frames 7 apart even with cut boxes)."""
    spec = quiet(height=64, width=64, fringes=8, frames_per_sequence=8, max_samples=1,
                 sample_size=0.1, resident_probability=probability)
    still = 0
    for seed in range(sequences):
        boxes = render(spec, seed)[1]
        if boxes[0] and boxes[-1]:
            (x0, y0, w0, h0), (x1, y1, w1, h1) = boxes[0][0], boxes[-1][0]
            still += math.hypot(x1 + w1 / 2 - x0 - w0 / 2, y1 + h1 / 2 - y0 - h0 / 2) < 64 / 5
    return still / sequences


def test_resident_probability_0_makes_every_sample_cross_and_1_every_sample_stay():
    assert still_fraction(0.0, 24) == 0.0
    assert still_fraction(1.0, 24) == 1.0
    with pytest.raises(ValueError, match="resident_probability must be a number in"):
        SyntheticSpec(resident_probability=1.5)


@pytest.mark.slow
def test_resident_probability_is_the_fraction_of_samples_staying_in_view():
    # Binomial over 200 sequences: 0.3 +- 3 sigma of 0.032.
    assert still_fraction(0.3, 200) == pytest.approx(0.3, abs=0.1)


def test_the_default_spec_renders_the_frames_it_rendered_before_resident_probability():
    # Recorded from the renderer with the resident fraction a module constant (0.3), commit
    # 74c8273: the field's default makes the same draws, so the same frames and boxes; and
    # without dust in the object beam (added later), the same dust.
    digest = hashlib.sha256()
    spec = dataclasses.replace(DEFAULT, object_dust_probability=0.0)
    for seed in range(6):   # seeds 1 and 5 hold samples in view throughout
        frames, boxes = generate_sequence(spec, seed)
        digest.update(frames.tobytes())
        digest.update(repr(boxes).encode())
    assert digest.hexdigest() == (
        "fbdc236965ac7382472c8d2a6fa9a5ee9378a9251197907c6b5155c5dd3c00d6")


# Bit depth

@pytest.mark.parametrize("bit_depth, dtype", [(8, np.uint8), (16, np.uint16)])
def test_bit_depth_sets_the_dtype_and_the_full_scale(bit_depth, dtype):
    spec = quiet(bit_depth=bit_depth, exposure=1.05)
    frames, _ = generate_sequence(spec, 0)
    assert frames.dtype == dtype and frames.max() == 2**bit_depth - 1


def test_bit_depth_pair_draws_either_depth_per_sequence():
    # [8, 16]: each sequence at one depth, half of them each (binomial: 40 +- 2 sigma of 6.3
    # of 80); every other draw as at a pinned depth, so a 16-bit sequence is its 8-bit twin
    # on the 16-bit scale, within the 8-bit quantisation.
    pair = SyntheticSpec(height=16, width=16, frames_per_sequence=1, max_samples=0, fringes=2,
                         bit_depth=[8, 16])
    assert pair.bit_depth == (8, 16) and "bit_depth" not in pair.ranges()
    dtypes = [generate_sequence(pair, seed)[0].dtype for seed in range(80)]
    assert set(dtypes) == {np.dtype(np.uint8), np.dtype(np.uint16)}
    assert 27 <= dtypes.count(np.uint16) <= 53
    for seed in range(6):
        frame = generate_sequence(pair, seed)[0][0].astype(np.float64)
        depth = 8 if dtypes[seed] == np.uint8 else 16
        other = 16 if depth == 8 else 8
        twin = generate_sequence(dataclasses.replace(pair, bit_depth=other), seed)[0][0]
        scaled = (frame, twin) if depth == 8 else (twin, frame)
        np.testing.assert_allclose(scaled[0], scaled[1].astype(np.float64) / 257, atol=0.51)


def test_sixteen_bit_frames_reach_the_network_in_8_bit_grey_levels(write_yaml):
    # The training preprocessing of synthetic (and interferogram-folder) frames expresses a
    # 16-bit frame in 8-bit grey levels (/ 257) with its 16-bit resolution (not its high
    # byte), so one data.mean / data.std serves 8- and 16-bit runs.
    from tfseg.config import load_config
    from tfseg.data.preprocess import Preprocessing
    config = load_config(write_yaml(
        "data:\n  height: 64\n  width: 64\n  mean: [115]\n  std: [50]\n"
        "  synthetic: {height: 64, width: 64, fringes: 8, bit_depth: 16}\n"
        "  preprocess: {blur: 3, background_every: 0}\n"))
    frames, _ = generate_sequence(config.data.synthetic, 0)
    preprocessing = Preprocessing.from_config(config)
    image = preprocessing.image(frames[0])
    assert not preprocessing.eight_bit and preprocessing.units == "8bit"
    np.testing.assert_array_equal(
        image[..., 0], cv2.blur(frames[0], (3, 3)).astype(np.float32) / np.float32(257))
    assert 64 < image.max() <= 255 and np.any(image % 1 != 0)
