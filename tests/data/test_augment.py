"""Augmentation inside the training step: image and mask transformed alike, masks keep an
integer dtype and only valid ids or the ignore label, and the Keras layers' pitfalls stay
worked around (see the module docstring of tfseg.data.augment)."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO

from tfseg.data.augment import SegmentationAugmentation

NUM_CLASSES = 5
IGNORE = 255
ALL_GEOMETRIC = {"flip": "horizontal_and_vertical", "crop_size": (20, 28),
                 "scale": (0.6, 1.6)}


def random_masks(rng, shape, ignore_fraction=0.1):
    """Masks with ids 0..NUM_CLASSES-1 and some ignore pixels."""
    masks = rng.integers(0, NUM_CLASSES, shape).astype(np.uint8)
    masks[rng.random(shape) < ignore_fraction] = IGNORE
    return masks


def coordinate_images(batch, height, width):
    """Images whose channels hold each pixel's (column + 1, row + 1, 1).

    Bilinear interpolation reproduces a linear ramp exactly, so after crops, flips and zooms
    each output pixel's first two channels still say where in the input it was sampled, and
    nearest sampling of the mask picks the input pixel at the rounded position. The third
    channel is 1 where all the pixels a bilinear sample mixes lie inside the image, 0 where
    the zoom padded and in between at the padding's edge (where the ramp is not exact).
    """
    rows, columns = np.mgrid[0:height, 0:width]
    image = np.stack([columns + 1, rows + 1, np.ones_like(rows)], axis=-1).astype(np.float32)
    return np.repeat(image[None], batch, axis=0)


def ids_at_sampled_positions(input_masks, out_images, tolerance=0.01):
    """The input mask ids at the position each output pixel's image value names, one
    candidate per rounding direction (a position within float error of .5 may round
    either way): shape (4, B, h, w)."""
    height, width = input_masks.shape[1:]
    image_index = np.arange(len(input_masks))[:, None, None]
    columns, rows = out_images[..., 0] - 1, out_images[..., 1] - 1
    candidates = []
    for row_shift in (-tolerance, tolerance):
        for column_shift in (-tolerance, tolerance):
            row = np.clip(np.round(rows + row_shift), 0, height - 1).astype(int)
            column = np.clip(np.round(columns + column_shift), 0, width - 1).astype(int)
            candidates.append(input_masks[image_index, row, column])
    return np.stack(candidates)


def test_masks_hold_only_valid_ids_or_ignore_over_many_draws_with_everything_on():
    augment = SegmentationAugmentation(seed=3, brightness=30.0, contrast=0.3,
                                       **ALL_GEOMETRIC)
    step = tf.function(augment)
    rng = np.random.default_rng(0)
    allowed = set(range(NUM_CLASSES)) | {IGNORE}
    padded_draws = 0
    for _ in range(200):
        masks = random_masks(rng, (4, 24, 32), ignore_fraction=0.02)
        images = rng.uniform(0, 255, (4, 24, 32, 3)).astype(np.float32)
        out_images, out_masks = step(tf.constant(images), tf.constant(masks))
        assert out_masks.dtype == tf.uint8 and out_masks.shape == (4, 20, 28)
        assert out_images.shape == (4, 20, 28, 3)
        values = set(np.unique(out_masks.numpy()).tolist())
        assert values <= allowed, f"invalid mask ids {sorted(values - allowed)}"
        # A zoom-out pads the corners: they must be ignore, never class 0 (the fill value).
        padded_draws += int(np.any(out_masks.numpy()[:, 0, 0] == IGNORE))
    assert padded_draws > 50, "zoom-outs never padded: the test did not test padding"


@pytest.mark.parametrize("options", [
    {"flip": "horizontal_and_vertical"},
    {"flip": "none", "crop_size": (20, 28)},
    {"flip": "none", "scale": (0.6, 1.6)},
    ALL_GEOMETRIC,
], ids=["flips", "crop", "zoom", "all"])
def test_image_and_mask_stay_aligned(options):
    augment = SegmentationAugmentation(seed=5, **options)
    step = tf.function(augment)
    rng = np.random.default_rng(1)
    images = coordinate_images(4, 24, 32)
    checked = 0
    for _ in range(25):
        masks = random_masks(rng, (4, 24, 32))
        out_images, out_masks = (t.numpy() for t in step(tf.constant(images),
                                                          tf.constant(masks)))
        inside = out_images[..., 2]
        assert np.all(out_masks[inside == 0] == IGNORE), "padding must be ignore"
        exact = (out_masks != IGNORE) & (inside > 1 - 1e-5)
        candidates = ids_at_sampled_positions(masks, out_images)
        aligned = np.any(candidates == out_masks, axis=0)
        assert aligned[exact].all(), (
            f"{np.count_nonzero(~aligned[exact])} mask pixels do not match the image")
        checked += np.count_nonzero(exact)
    assert checked > 0.5 * out_masks.size * 25


def test_horizontal_and_vertical_flips_are_independent():
    """Keras's own "horizontal_and_vertical" mode only yields identity or a 180 rotation."""
    augment = SegmentationAugmentation(flip="horizontal_and_vertical", seed=0)
    masks = np.tile(np.array([[0, 1], [2, 3]], np.uint8), (64, 1, 1))
    _, out_masks = augment(tf.zeros((64, 2, 2, 1)), tf.constant(masks))
    orientations = {tuple(m.ravel()) for m in out_masks.numpy()}
    assert orientations == {(0, 1, 2, 3), (1, 0, 3, 2), (2, 3, 0, 1), (3, 2, 1, 0)}


def test_crop_has_the_requested_static_shape_and_a_random_window_per_image():
    """Keras's RandomCrop centre-crops along an axis whose size equals the crop (the CamVid
    480x320-from-480x360 case) and uses one window per batch."""
    augment = SegmentationAugmentation(flip="none", seed=0, crop_size=(4, 6))
    step = tf.function(augment).get_concrete_function(
        tf.TensorSpec((None, 7, 6, 1), tf.float32), tf.TensorSpec((None, 7, 6), tf.uint8))
    images_spec, masks_spec = step.structured_outputs
    assert images_spec.shape.as_list() == [None, 4, 6, 1]
    assert masks_spec.shape.as_list() == [None, 4, 6]
    rows = np.arange(7, dtype=np.float32)[None, :, None, None] * np.ones((16, 7, 6, 1))
    out_images, out_masks = step(tf.constant(rows, tf.float32),
                                 tf.constant(rows[..., 0], tf.uint8))
    tops = out_images.numpy()[:, 0, 0, 0]
    assert set(tops) == {0, 1, 2, 3}, "every vertical offset should occur, per image"
    np.testing.assert_array_equal(out_masks.numpy(), out_images.numpy()[..., 0])


def test_crop_equal_to_the_input_size_is_allowed_and_larger_is_refused():
    images, masks = tf.zeros((1, 8, 10, 1)), tf.zeros((1, 8, 10), tf.uint8)
    out_images, _ = SegmentationAugmentation(flip="none", seed=0, crop_size=(8, 10))(
        images, masks)
    assert out_images.shape == (1, 8, 10, 1)
    with pytest.raises(ValueError, match="crop_size"):
        SegmentationAugmentation(flip="none", seed=0, crop_size=(9, 10))(images, masks)


def test_an_ignore_label_outside_the_masks_dtype_is_refused():
    augment = SegmentationAugmentation(flip="horizontal", seed=0, ignore_label=300)
    with pytest.raises(ValueError, match="ignore_label.*uint8"):
        augment(tf.zeros((1, 4, 4, 1)), tf.zeros((1, 4, 4), tf.uint8))


def test_zoom_out_pads_masks_with_the_ignore_label_and_images_with_zero():
    augment = SegmentationAugmentation(flip="none", seed=0, scale=(0.5, 0.6),
                                       ignore_label=7)
    out_images, out_masks = augment(tf.fill((8, 16, 16, 1), 100.0),
                                    tf.zeros((8, 16, 16), tf.uint8))
    corners = out_masks.numpy()[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.all(corners == 7)
    assert np.all(out_images.numpy()[:, [0, 0, -1, -1], [0, -1, 0, -1]] == 0)
    assert np.all(out_masks.numpy()[:, 8, 8] == 0)


def test_brightness_shifts_each_image_by_one_offset_within_range_and_leaves_masks():
    augment = SegmentationAugmentation(flip="none", seed=0, brightness=20.0)
    rng = np.random.default_rng(2)
    images = rng.uniform(50, 200, (32, 6, 6, 3)).astype(np.float32)
    masks = random_masks(rng, (32, 6, 6))
    out_images, out_masks = augment(tf.constant(images), tf.constant(masks))
    assert out_masks.dtype == tf.uint8
    np.testing.assert_array_equal(out_masks.numpy(), masks)
    offsets = out_images.numpy() - images
    per_image = offsets[:, :1, :1, :1]
    np.testing.assert_allclose(offsets, np.broadcast_to(per_image, offsets.shape), atol=1e-4)
    assert np.all(np.abs(per_image) <= 20.0) and per_image.min() < -5 < 5 < per_image.max()


def test_contrast_scales_about_the_mean_both_ways_and_leaves_masks():
    """Keras's RandomContrast(0.3) would only ever raise contrast."""
    augment = SegmentationAugmentation(flip="none", seed=0, contrast=0.3)
    rng = np.random.default_rng(3)
    images = rng.uniform(100, 150, (64, 6, 6, 1)).astype(np.float32)
    masks = random_masks(rng, (64, 6, 6))
    out_images, out_masks = augment(tf.constant(images), tf.constant(masks))
    np.testing.assert_array_equal(out_masks.numpy(), masks)
    np.testing.assert_allclose(out_images.numpy().mean(axis=(1, 2)), images.mean(axis=(1, 2)),
                               rtol=1e-5)
    ratio = out_images.numpy().std(axis=(1, 2, 3)) / images.std(axis=(1, 2, 3))
    assert 0.7 - 1e-4 <= ratio.min() < 0.9 and 1.1 < ratio.max() <= 1.3 + 1e-4


def test_jitter_is_clipped_to_the_value_range():
    augment = SegmentationAugmentation(flip="none", seed=0, brightness=5000.0,
                                       value_range=(0, 65535))
    images = np.full((16, 4, 4, 1), 65000.0, np.float32)
    out_images, _ = augment(tf.constant(images), tf.zeros((16, 4, 4), tf.uint8))
    assert out_images.numpy().max() == 65535.0 and out_images.numpy().min() < 65000.0


def test_same_seed_same_augmentations_other_seed_different():
    rng = np.random.default_rng(4)
    images = tf.constant(rng.uniform(0, 255, (2, 16, 16, 1)).astype(np.float32))
    masks = tf.constant(random_masks(rng, (2, 16, 16)))
    options = {**ALL_GEOMETRIC, "crop_size": (12, 12), "brightness": 10.0, "contrast": 0.2}

    def draws(seed):
        step = tf.function(SegmentationAugmentation(seed=seed, **options))
        return [np.concatenate([t.numpy().ravel() for t in step(images, masks)])
                for _ in range(3)]

    first, again, other = draws(11), draws(11), draws(12)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1]), "draws should differ from call to call"
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_everything_off_passes_the_batch_through_unchanged():
    images = tf.random.uniform((1, 4, 4, 1))
    masks = tf.zeros((1, 4, 4), tf.uint8)
    out_images, out_masks = SegmentationAugmentation(flip="none", seed=0)(images, masks)
    assert out_images is images and out_masks is masks


def test_global_bfloat16_policy_does_not_round_pixels():
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        augment = SegmentationAugmentation(flip="horizontal", seed=0)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    images = tf.fill((1, 2, 2, 1), 201.3)
    out_images, _ = augment(images, tf.zeros((1, 2, 2), tf.uint8))
    assert out_images.dtype == tf.float32
    np.testing.assert_allclose(out_images.numpy(), 201.3, rtol=1e-6)


def bent_fringes():
    """A 64x64 frame of carrier fringes bent by a phase bump, and the bump's phase."""
    y, x = np.mgrid[:64, :64].astype(np.float64)
    phase = 3.0 * np.exp(-((x - 20) ** 2 + (y - 40) ** 2) / (2 * 6.0 ** 2))
    return 100 + 60 * np.cos(2 * np.pi * 10 / 64 * (0.8 * x + 0.6 * y) + phase)


def test_flipped_phase_slopes_are_the_slopes_of_the_flipped_fringes():
    """A flip along x negates the slope along x (and y likewise): the flipped channels are
    then what demodulating the flipped frame gives, up to the sideband's sign and the
    half-pixel shift of a forward difference read backwards; slopes flipped as plain images
    would be a field no phase has (wrong by the bump's own slopes, 0.45 rad per pixel)."""
    from tfseg.data.fringes import fringe_channels

    frame = bent_fringes()
    images = np.concatenate([frame[..., None], fringe_channels(frame, slopes=True)], axis=-1)
    images = np.repeat(images[None], 16, axis=0).astype(np.float32)
    augment = SegmentationAugmentation(flip="horizontal_and_vertical", seed=3,
                                       derivative_channels=(1, 2))
    out, _ = augment(tf.constant(images), tf.zeros((16, 64, 64), tf.uint8))
    kinds = set()
    for image in out.numpy():
        expected = fringe_channels(image[..., 0], slopes=True)
        sign = np.sign(np.sum(expected * image[..., 1:]))
        assert np.abs(sign * expected - image[..., 1:])[8:-8, 8:-8].max() < 0.06
        kinds.add(next(flips for flips, seen in (
            ((False, False), frame), ((True, False), frame[:, ::-1]),
            ((False, True), frame[::-1]), ((True, True), frame[::-1, ::-1]))
            if np.allclose(image[..., 0], seen, atol=1e-3)))
    assert len(kinds) == 4   # no flip, either flip, both


def test_transposed_and_flipped_slopes_are_the_slopes_of_the_transformed_fringes():
    """With a random transpose the x and y slopes swap: every one of the square's 8
    symmetries is drawn, and each image's slope channels are what demodulating its frame
    gives (as in the flip test above); the mask is transformed alike."""
    from tfseg.data.fringes import fringe_channels

    frame = bent_fringes()
    images = np.concatenate([frame[..., None], fringe_channels(frame, slopes=True)], axis=-1)
    images = np.repeat(images[None], 48, axis=0).astype(np.float32)
    masks = np.repeat((frame > 130)[None], 48, axis=0).astype(np.uint8)
    augment = SegmentationAugmentation(flip="horizontal_and_vertical", seed=5, transpose=True,
                                       derivative_channels=(1, 2))
    out, out_masks = augment(tf.constant(images), tf.constant(masks))
    symmetries = {(t, fy, fx): (lambda a, t=t, fy=fy, fx=fx: (
        a.T if t else a)[::-1 if fy else 1, ::-1 if fx else 1])
        for t in (False, True) for fy in (False, True) for fx in (False, True)}
    kinds = set()
    for image, mask in zip(out.numpy(), out_masks.numpy()):
        expected = fringe_channels(image[..., 0], slopes=True)
        sign = np.sign(np.sum(expected * image[..., 1:]))
        assert np.abs(sign * expected - image[..., 1:])[8:-8, 8:-8].max() < 0.06
        kind = next(kind for kind, apply in symmetries.items()
                    if np.allclose(image[..., 0], apply(frame), atol=1e-3))
        np.testing.assert_array_equal(mask, symmetries[kind](masks[0]))
        kinds.add(kind)
    assert len(kinds) == 8


def test_a_random_transpose_needs_square_images():
    augment = SegmentationAugmentation(flip="none", seed=0, transpose=True)
    with pytest.raises(ValueError, match="square images"):
        augment(tf.zeros((2, 32, 40, 1)), tf.zeros((2, 32, 40), tf.uint8))


def test_a_derivative_changes_sign_with_its_axis_flip_through_zooms_and_clips():
    # Channels: x ramp, "d/dx" = 1, "d/dy" = 1, y ramp; clips of 3 frames.
    x = np.broadcast_to(np.linspace(-1, 1, 40)[None, :], (32, 40))
    y = np.broadcast_to(np.linspace(-1, 1, 32)[:, None], (32, 40))
    frame = np.stack([x, np.ones_like(x), np.ones_like(x), y], axis=-1).astype(np.float32)
    clips = np.broadcast_to(frame, (12, 3, 32, 40, 4))
    augment = SegmentationAugmentation(flip="horizontal_and_vertical", seed=0,
                                       scale=(0.7, 1.4), derivative_channels=(1, 2))
    out, _ = augment(tf.constant(clips), tf.zeros((12, 3, 32, 40), tf.uint8))
    centre = out.numpy()[:, :, 16, 20]   # (clip, frame, channel)
    flipped_x = out.numpy()[:, :, 16, 21, 0] < out.numpy()[:, :, 16, 19, 0]
    flipped_y = out.numpy()[:, :, 17, 20, 3] < out.numpy()[:, :, 15, 20, 3]
    np.testing.assert_allclose(centre[..., 1], np.where(flipped_x, -1.0, 1.0), atol=1e-6)
    np.testing.assert_allclose(centre[..., 2], np.where(flipped_y, -1.0, 1.0), atol=1e-6)
    assert flipped_x.any() and (~flipped_x).any() and flipped_y.any() and (~flipped_y).any()


@pytest.mark.parametrize("options,argument", [
    ({"flip": "both"}, "flip"),
    ({"seed": 1.5}, "seed"),
    ({"crop_size": (0, 4)}, "crop_size"),
    ({"crop_size": 32}, "crop_size"),
    ({"scale": (0.4, 1.0)}, "scale"),
    ({"scale": (1.5, 1.2)}, "scale"),
    ({"brightness": -1.0}, "brightness"),
    ({"brightness": 300.0}, "brightness"),
    ({"contrast": 1.0}, "contrast"),
    ({"value_range": (255, 0)}, "value_range"),
    ({"ignore_label": -1}, "ignore_label"),
    ({"derivative_channels": (1,)}, "derivative_channels"),
    ({"derivative_channels": (1, -2)}, "derivative_channels"),
])
def test_bad_arguments_are_refused_naming_the_argument(options, argument):
    with pytest.raises(ValueError, match=f"argument `{argument}`.*Received: {argument}="):
        SegmentationAugmentation(**{"flip": "none", "seed": 0, **options})


DISTRIBUTED_RUN = """
import json
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfseg.data.augment import SegmentationAugmentation

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    augment = SegmentationAugmentation(flip="horizontal_and_vertical", seed=0, crop_size=(12, 14),
                                       scale=(0.6, 1.5), brightness=20.0, contrast=0.2)
rng = np.random.default_rng(0)
images = rng.uniform(0, 255, (4, 16, 16, 1)).astype(np.float32)
masks = rng.integers(0, 3, (4, 16, 16)).astype(np.uint8)
batches = tf.data.Dataset.from_tensors((images, masks)).repeat(3)
iterator = iter(strategy.experimental_distribute_dataset(batches))

@tf.function
def step(iterator):
    return strategy.run(augment, args=next(iterator))

values, shapes = set(), set()
for _ in range(3):
    out_images, out_masks = step(iterator)
    for replica_masks in strategy.experimental_local_results(out_masks):
        values |= set(np.unique(replica_masks.numpy()).tolist())
        shapes.add((str(replica_masks.dtype.name), tuple(replica_masks.shape)))
print(json.dumps({"values": sorted(values), "shapes": sorted(shapes)}))
"""


@pytest.mark.slow  # 5 s: the fast tier stays under 3 minutes
def test_runs_in_a_tf_function_under_a_mirrored_strategy():
    result = subprocess.run([sys.executable, "-c", DISTRIBUTED_RUN], check=False, cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["values"]) <= {0, 1, 2, IGNORE}
    assert report["shapes"] == [["uint8", [2, 12, 14]]]


def test_every_frame_of_a_clip_takes_its_clip_s_geometric_transform():
    """Clips (B, T, H, W, C): frame t holds the coordinates plus 100 t in its first channel
    and its own masks; each output frame must be sampled where frame 0 was, with its own ids."""
    augment = SegmentationAugmentation(seed=3, **ALL_GEOMETRIC)
    rng = np.random.default_rng(5)
    clips, frames, height, width = 8, 3, 24, 32
    offsets = np.zeros((frames, 3), np.float32)
    offsets[:, 0] = 100 * np.arange(frames)
    images = coordinate_images(clips, height, width)[:, None] + offsets[None, :, None, None]
    masks = random_masks(rng, (clips, frames, height, width))
    out_images, out_masks = (t.numpy() for t in augment(tf.constant(images),
                                                        tf.constant(masks)))
    assert out_images.shape == (clips, frames, 20, 28, 3)
    assert out_masks.shape == (clips, frames, 20, 28) and out_masks.dtype == np.uint8
    exact = out_images[:, 0, ..., 2] > 1 - 1e-4
    assert exact.mean() > 0.5
    for t in range(1, frames):
        difference = out_images[:, t][exact] - out_images[:, 0][exact]
        np.testing.assert_allclose(difference, np.broadcast_to(offsets[t], difference.shape),
                                   atol=1e-2)
        candidates = ids_at_sampled_positions(masks[:, t], out_images[:, 0])
        assert np.any(candidates == out_masks[:, t], axis=0)[exact].all()
    windows = {tuple(np.round(out_images[i, 0, 0, 0, :2], 1)) for i in range(clips)}
    assert len(windows) > clips // 2, "each clip should draw its own transform"


def test_a_clip_of_identical_frames_stays_identical_with_everything_on():
    augment = SegmentationAugmentation(seed=0, brightness=20.0, contrast=0.3, **ALL_GEOMETRIC)
    rng = np.random.default_rng(6)
    frame = rng.uniform(50, 200, (24, 32, 2)).astype(np.float32)
    images = np.broadcast_to(frame, (6, 4, 24, 32, 2))
    masks = np.broadcast_to(random_masks(rng, (24, 32)), (6, 4, 24, 32))
    step = tf.function(augment).get_concrete_function(
        tf.TensorSpec((None, 4, 24, 32, 2), tf.float32), tf.TensorSpec((None, 4, 24, 32),
                                                                       tf.uint8))
    assert step.structured_outputs[0].shape.as_list() == [None, 4, 20, 28, 2]
    assert step.structured_outputs[1].shape.as_list() == [None, 4, 20, 28]
    out_images, out_masks = (t.numpy() for t in step(tf.constant(images), tf.constant(masks)))
    np.testing.assert_array_equal(out_images, np.repeat(out_images[:, :1], 4, axis=1))
    np.testing.assert_array_equal(out_masks, np.repeat(out_masks[:, :1], 4, axis=1))
    assert len({out_images[i, 0].tobytes() for i in range(6)}) == 6


def test_brightness_shifts_every_frame_of_a_clip_by_the_clip_s_offset():
    augment = SegmentationAugmentation(flip="none", seed=1, brightness=20.0)
    rng = np.random.default_rng(7)
    images = rng.uniform(50, 200, (16, 3, 6, 6, 1)).astype(np.float32)
    out_images, _ = augment(tf.constant(images), tf.zeros((16, 3, 6, 6), tf.uint8))
    offsets = out_images.numpy() - images
    per_clip = offsets[:, :1, :1, :1, :1]
    np.testing.assert_allclose(offsets, np.broadcast_to(per_clip, offsets.shape), atol=1e-4)
    assert per_clip.min() < -5 < 5 < per_clip.max()
