import numpy as np
import pytest

from tfseg.config import SyntheticSpec, load_config
from tfseg.data.synthetic import generate_sequence
from tfseg.utils.errors import ConfigError

SPEC = SyntheticSpec()
# Samples that bend bright, contrasted fringes clearly (no weak phases, no blur), in every
# sequence.
CLEAR = dict(sample_phase=(1.5, 4.0), blur=0, empty_probability=0, visibility=(0.6, 0.9),
             exposure=(0.8, 1.0))
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
                         exposure=0.95, visibility=0.8, bit_depth=bit_depth)
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
    spec = SyntheticSpec(**CLEAR)
    empty_spec = SyntheticSpec(max_samples=0, **CLEAR)
    for seed in SEEDS:
        frames, boxes = generate_sequence(spec, seed)
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
    spec = SyntheticSpec(max_samples=0, read_noise=0.0, shot_noise=0.0, vibration=0.0,
                         flicker=0.01, frames_per_sequence=4)
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
    ("sample_size", (0.1,)),
    ("sample_phase", (2.0, 1.0)),
    ("sample_phase", "ab"),
    ("fringes", (20.0, 10.0)),
    ("fringes", (10.0, 70.0)),
    ("fringes", [1, 2, 3]),
    ("fringe_angle", None),
    ("aberration", -0.5),
    ("falloff", 1.0),
    ("vignetting", (0.0, 0.99)),
    ("visibility", 1.5),
    ("exposure", 0.0),
    ("read_noise", -0.01),
    ("shot_noise", float("nan")),
    ("fixed_pattern", (0.0, "a")),
    ("blur", -1.0),
    ("irregularity", 0.5),
    ("cluster_probability", 1.5),
    ("empty_probability", -0.1),
    ("bit_depth", 12),
    ("vibration", -1.0),
    ("flicker", True),
    ("dust", -2),
    ("dust", 1.5),
    ("dust", (0, 2.5)),
])
def test_invalid_spec_raises_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"data.synthetic.{field} "):
        SyntheticSpec(**{field: value})


def test_a_number_pins_a_range_and_a_pair_is_a_range():
    spec = SyntheticSpec(fringes=16, dust=[2, 5], blur=(0, 1.5))
    assert spec.fringes == (16.0, 16.0) and spec.dust == (2, 5) and spec.blur == (0.0, 1.5)
    assert SyntheticSpec(**spec.ranges()) == spec   # the stored form reads back
    assert set(spec.ranges()) >= {
        "fringes", "fringe_angle", "aberration", "falloff", "vignetting", "visibility",
        "exposure", "read_noise", "shot_noise", "fixed_pattern", "blur", "dust",
        "sample_size", "sample_phase", "irregularity"}


@pytest.mark.parametrize("text, key", [
    ("fringes: [30, 20]", "data.synthetic.fringes"),
    ("read_noise: [0, high]", "data.synthetic.read_noise"),
    ("noise: 0.02\n    read_noise: 0.01", "data.synthetic.noise"),   # old key beside its new form
])
def test_a_bad_range_in_a_config_is_one_line_naming_the_key(write_yaml, text, key):
    path = write_yaml(f"data:\n  synthetic:\n    {text}\n")
    with pytest.raises(ConfigError, match=key) as error:
        load_config(path)
    assert "\n" not in str(error.value)


def test_ranges_read_from_a_config(write_yaml):
    config = load_config(write_yaml("data:\n  source: synthetic\n"),
                         ["data.synthetic.fringes=[12, 20]", "data.synthetic.blur=0.5",
                          "data.synthetic.dust=3"])
    spec = config.data.synthetic
    assert spec.fringes == (12.0, 20.0) and spec.blur == (0.5, 0.5) and spec.dust == (3, 3)


@pytest.mark.parametrize("seed", [-1, None, 1.5])
def test_invalid_seed_raises(seed):
    with pytest.raises(ValueError, match="seed"):
        generate_sequence(SPEC, seed)
