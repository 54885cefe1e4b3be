"""The independent renderer (tfseg.data.holography): its carrier, its phase objects, its box
labels, determinism, refusals, and its on-disk sets."""

import dataclasses
import math

import numpy as np
import pytest

from tfseg.data import interferograms
from tfseg.data.holography import HolographySpec, render_sequence
from tfseg.data.synthetic_folders import write_sequences

# No optics or camera effect beyond the carrier unless a test turns it on.
PLAIN = HolographySpec(frames_per_sequence=1, samples=(0, 0), dust=(0, 0), curvature=(0, 0),
                       falloff=(0, 0), defocus=(0, 0), speed=(0, 0), absorption=(0, 0),
                       read_noise=0.0, prnu=0.0, vibration=0.0)


def carrier_peak(frame):
    """(fx, fy) in cycles per frame of the strongest non-DC peak of `frame`'s spectrum, with
    fx >= 0."""
    spectrum = np.abs(np.fft.fft2(frame - frame.mean()))
    spectrum[0, 0] = 0
    row, col = np.unravel_index(np.argmax(spectrum), spectrum.shape)
    fy = np.fft.fftfreq(frame.shape[0], 1 / frame.shape[0])[row]
    fx = np.fft.fftfreq(frame.shape[1], 1 / frame.shape[1])[col]
    return (fx, fy) if fx > 0 or (fx == 0 and fy > 0) else (-fx, -fy)


@pytest.mark.parametrize("fringes, angle", [(16.0, 0.0), (12.0, 30.0), (20.0, 60.0),
                                            (14.0, 120.0)])
def test_carrier_frequency_is_the_configured_one(fringes, angle):
    spec = dataclasses.replace(PLAIN, fringes=(fringes, fringes), carrier_angle=(angle, angle))
    frames, _ = render_sequence(spec, 3)
    fx, fy = carrier_peak(frames[0].astype(np.float64))
    expected = fringes * np.array([math.cos(math.radians(angle)),
                                   math.sin(math.radians(angle))])
    if expected[0] < 0:
        expected = -expected
    # The frame's spectrum has 1-cycle bins: the peak is the bin nearest the carrier.
    assert abs(fx - expected[0]) <= 0.5 + 1e-9 and abs(fy - expected[1]) <= 0.5 + 1e-9, (
        (fx, fy), expected)


def demodulate(frame, carrier):
    """Complex field of the spectrum's order at `carrier` (fx, fy cycles per frame), cut out
    by a disc of half the carrier's radius (Fourier-transform fringe analysis)."""
    height, width = frame.shape
    fy = np.fft.fftfreq(height, 1 / height)[:, None]
    fx = np.fft.fftfreq(width, 1 / width)[None, :]
    window = (fx - carrier[0]) ** 2 + (fy - carrier[1]) ** 2 <= (0.5 * np.hypot(*carrier)) ** 2
    return np.fft.ifft2(np.fft.fft2(frame) * window)


def test_a_phase_object_shifts_the_fringes_by_its_phase():
    # One still sphere of 2 rad peak phase (2 pi / lambda x dn x diameter), no noise to
    # speak of, a curved wavefront and uneven illumination that the difference cancels.
    diameter, peak = 20.0, 2.0
    spec = dataclasses.replace(
        PLAIN, shapes=("sphere",), sample_diameter=(diameter, diameter),
        index_contrast=(peak * PLAIN.wavelength / (2 * np.pi * diameter),) * 2,
        curvature=(3.0, 3.0), falloff=(0.3, 0.3), fringes=(20.0, 20.0),
        carrier_angle=(40.0, 40.0), full_well=1e7, bit_depth=16)
    seed = 20   # the first whose sphere lies 24 pixels or more inside the frame
    with_sample, boxes, phases = render_sequence(dataclasses.replace(spec, samples=(1, 1)),
                                                 seed, phase=True)
    (x, y, w, h), = boxes[0]
    assert min(x, y) >= 24 and max(x + w, y + h) <= 104
    empty, boxes = render_sequence(spec, seed)
    assert boxes == [[]]
    # The object's wave exp(i phi) rides on the order at minus the reference's carrier.
    carrier = -20.0 * np.array([math.cos(math.radians(40)), math.sin(math.radians(40))])
    shift = np.angle(demodulate(with_sample[0].astype(np.float64), carrier)
                     * np.conj(demodulate(empty[0].astype(np.float64), carrier)))
    truth = phases[0]
    assert truth.max() == pytest.approx(peak, rel=0.02)
    centre = truth > 0.6 * peak     # away from the rim, which the order's window blurs
    assert np.abs(shift[centre] - truth[centre]).mean() < 0.1
    assert np.abs(shift[truth == 0]).mean() < 0.1    # and nothing moves outside it
    assert shift[np.unravel_index(np.argmax(truth), truth.shape)] == pytest.approx(peak,
                                                                                   abs=0.15)


def test_boxes_enclose_every_sample_and_touch_it_on_each_side():
    spec = HolographySpec(frames_per_sequence=4, samples=(4, 4), speed=(0.05, 0.1))
    shapes_seen = 0
    for seed in range(3):
        frames, boxes, phases = render_sequence(spec, seed, phase=True)
        for frame_boxes, phase in zip(boxes, phases):
            covered = np.zeros(phase.shape, bool)
            for x, y, w, h in frame_boxes:
                assert 0 <= x and 0 <= y and w >= 1 and h >= 1
                assert x + w <= spec.width and y + h <= spec.height
                covered[y:y + h, x:x + w] = True
                inside = phase[y:y + h, x:x + w] > 0
                # Tight: the object reaches every edge of its box.
                assert inside[0].any() and inside[-1].any()
                assert inside[:, 0].any() and inside[:, -1].any()
            assert not (phase > 0)[~covered].any()
            shapes_seen += len(frame_boxes)
    assert shapes_seen >= 20


def test_rendering_is_deterministic_per_seed():
    spec = dataclasses.replace(HolographySpec(), frames_per_sequence=3, dust=(3, 3),
                               samples=(2, 2))
    first, second, other = (render_sequence(spec, seed) for seed in (7, 7, 8))
    np.testing.assert_array_equal(first[0], second[0])
    assert first[1] == second[1]
    assert first[0].dtype == np.uint8 and first[0].shape == (3, 128, 128)
    assert not np.array_equal(first[0], other[0])


def test_camera_saturates_and_quantises_to_its_bit_depth():
    spec = dataclasses.replace(PLAIN, exposure=(1.5, 1.5))
    frame = render_sequence(spec, 0)[0][0]
    assert frame.max() == 255 and (frame == 255).mean() > 0.1
    deep = render_sequence(dataclasses.replace(PLAIN, bit_depth=16), 0)[0][0]
    assert deep.dtype == np.uint16 and 0.6 * 65535 < deep.max() <= 65535


@pytest.mark.parametrize("change, named", [
    ({"fringes": (40.0, 40.0)}, "fringes"),
    ({"fringes": (12.0, 8.0)}, "fringes"),
    ({"samples": (1.5, 2)}, "samples"),
    ({"shapes": ("cube",)}, "shapes"),
    ({"shapes": "sphere"}, "shapes"),
    ({"bit_depth": 12}, "bit_depth"),
    ({"full_well": 0.0}, "full_well"),
    ({"falloff": (0.0, 1.0)}, "falloff"),
    ({"height": 8}, "height"),
    ({"supersample": 0}, "supersample"),
    ({"wavelength": float("nan")}, "wavelength"),
    ({"field_of_view": 2.0, "fringes": (20.0, 20.0)}, "reference beyond 90 degrees"),
])
def test_bad_parameters_are_one_line_errors(change, named):
    with pytest.raises(ValueError) as error:
        HolographySpec(**change)
    assert named in str(error.value) and "\n" not in str(error.value)


def test_bad_seed_or_spec_is_refused():
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        render_sequence(PLAIN, -1)
    with pytest.raises(ValueError, match="spec must be a HolographySpec"):
        render_sequence(object(), 0)


def test_a_set_on_disk_reads_back_with_its_boxes(tmp_path):
    spec = HolographySpec(height=48, width=64, frames_per_sequence=2, samples=(2, 2),
                          fringes=(10.0, 12.0))
    write_sequences(tmp_path / "set", spec, sequences=2, seed=5, render=render_sequence)
    folders = sorted((tmp_path / "set").iterdir())
    assert [folder.name for folder in folders] == ["sequence_000", "sequence_001"]
    frames = interferograms.read_sequence(folders[1])
    _, boxes = render_sequence(spec, interferograms.sequence_seed(5, "train", 1))
    assert [list(frame.boxes) for frame in frames] == [[tuple(b) for b in frame_boxes]
                                                        for frame_boxes in boxes]
