import numpy as np
import pytest

from tfseg.config import SyntheticSpec
from tfseg.data.synthetic import generate_sequence

SPEC = SyntheticSpec()
SEEDS = range(6)


def box_mask(boxes, shape):
    mask = np.zeros(shape, bool)
    for x, y, w, h in boxes:
        mask[y:y + h, x:x + w] = True
    return mask


def test_same_seed_gives_identical_output():
    frames_a, boxes_a = generate_sequence(SPEC, 7)
    frames_b, boxes_b = generate_sequence(SPEC, 7)
    assert frames_a.tobytes() == frames_b.tobytes()
    assert boxes_a == boxes_b


def test_different_seeds_give_different_sequences():
    frames_a, _ = generate_sequence(SPEC, 1)
    frames_b, _ = generate_sequence(SPEC, 2)
    assert not np.array_equal(frames_a, frames_b)
    # Not just shifted fringes: the backgrounds are unrelated.
    assert abs(np.corrcoef(frames_a[0].ravel(), frames_b[0].ravel())[0, 1]) < 0.3


@pytest.mark.parametrize("bit_depth, dtype", [(8, np.uint8), (16, np.uint16)])
def test_dtype_shape_and_dynamic_range(bit_depth, dtype):
    spec = SyntheticSpec(height=96, width=160, frames_per_sequence=5, fringes=12,
                         bit_depth=bit_depth)
    frames, boxes = generate_sequence(spec, 3)
    assert frames.dtype == dtype
    assert frames.shape == (5, 96, 160)
    assert len(boxes) == 5
    full_scale = 2**bit_depth - 1
    assert 0.3 < frames.mean() / full_scale < 0.65
    assert frames.max() > 0.8 * full_scale and frames.min() < 0.2 * full_scale
    assert np.mean(frames == full_scale) < 0.01 and np.mean(frames == 0) < 0.01


def test_sixteen_bit_is_not_eight_bit_scaled():
    frames, _ = generate_sequence(SyntheticSpec(bit_depth=16, frames_per_sequence=2), 0)
    assert np.any(frames % 256 != 0)


def test_boxes_are_integer_inside_frame_with_positive_size():
    spec = SyntheticSpec(height=64, width=96, frames_per_sequence=12, max_samples=3, fringes=10)
    n_boxes = 0
    for seed in range(20):
        _, boxes = generate_sequence(spec, seed)
        for frame_boxes in boxes:
            assert len(frame_boxes) <= spec.max_samples
            for box in frame_boxes:
                x, y, w, h = box
                assert all(type(v) is int for v in box)
                assert w >= 1 and h >= 1
                assert 0 <= x and x + w <= spec.width
                assert 0 <= y and y + h <= spec.height
                n_boxes += 1
    assert n_boxes > 50


def test_some_frames_are_empty_and_some_are_not():
    counts = [len(b) for seed in SEEDS for b in generate_sequence(SPEC, seed)[1]]
    assert 0 in counts
    assert sum(c > 0 for c in counts) > len(counts) / 2


def test_no_samples_gives_no_boxes():
    _, boxes = generate_sequence(SyntheticSpec(max_samples=0), 0)
    assert boxes == [[]] * SPEC.frames_per_sequence


def test_samples_change_frames_only_around_their_boxes():
    # Same seed without samples: same background and noise, so the difference is the samples.
    empty_spec = SyntheticSpec(max_samples=0)
    for seed in SEEDS:
        frames, boxes = generate_sequence(SPEC, seed)
        background, _ = generate_sequence(empty_spec, seed)
        diff = np.abs(frames.astype(np.float32) - background)
        masks = np.stack([box_mask(b, frames.shape[1:]) for b in boxes])
        if masks.any():
            assert diff[masks].mean() > 15  # grey levels: bent fringes, not just absorption
            assert diff[masks].mean() > 20 * max(diff[~masks].mean(), 0.01)


def test_samples_stand_out_against_sequence_mean():
    # The seed's preprocessing: subtract the mean frame; samples bend fringes, so they remain.
    for seed in SEEDS:
        frames, boxes = generate_sequence(SPEC, seed)
        frames = frames.astype(np.float32)
        residual = np.abs(frames - frames.mean(axis=0))
        masks = np.stack([box_mask(b, frames.shape[1:]) for b in boxes])
        assert residual[masks].mean() > 2 * residual[~masks].mean()


def test_background_is_shared_across_the_sequence():
    for seed in SEEDS:
        frames, boxes = generate_sequence(SPEC, seed)
        first = box_mask(boxes[0], frames.shape[1:])
        correlations = []
        for t in range(1, len(frames)):
            free = ~(first | box_mask(boxes[t], first.shape))
            correlations.append(np.corrcoef(frames[0][free], frames[t][free])[0, 1])
        assert np.mean(correlations) > 0.85


def test_static_background_without_vibration_noise_or_samples():
    spec = SyntheticSpec(max_samples=0, noise=0.0, vibration=0.0, frames_per_sequence=4)
    frames, _ = generate_sequence(spec, 5)
    spread = frames.max(axis=0).astype(int) - frames.min(axis=0)
    assert spread.max() <= 0.03 * 255  # laser flicker only


def test_samples_move():
    spec = SyntheticSpec(max_samples=1)
    for seed in SEEDS:
        _, boxes = generate_sequence(spec, seed)
        centres = np.array([(x + w / 2, y + h / 2) for b in boxes for x, y, w, h in b])
        if len(centres) >= 2:
            steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
            assert np.median(steps) > 0.3


@pytest.mark.parametrize("field, value", [
    ("height", 8),
    ("width", 15),
    ("height", 64.0),
    ("frames_per_sequence", 0),
    ("max_samples", -1),
    ("fringes", -1.0),
    ("fringes", 65.0),  # more than min(height, width) / 4 for 256 x 256
    ("sample_size", (0.2, 0.1)),
    ("sample_size", (0.0, 0.1)),
    ("sample_size", (0.1, 1.5)),
    ("sample_size", 0.1),
    ("sample_phase", (2.0, 1.0)),
    ("sample_phase", "ab"),
    ("noise", -0.01),
    ("noise", float("nan")),
    ("bit_depth", 12),
    ("vibration", -1.0),
    ("dust", -2),
])
def test_invalid_spec_raises_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SyntheticSpec(**{field: value})


@pytest.mark.parametrize("seed", [-1, None, 1.5])
def test_invalid_seed_raises(seed):
    with pytest.raises(ValueError, match="seed"):
        generate_sequence(SPEC, seed)
