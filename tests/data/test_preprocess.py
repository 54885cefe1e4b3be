"""The one preprocessing (`Preprocessing`): each step, its description from a config and in
export metadata (old exports included), and its assembly into (image, mask) frames."""

import dataclasses

import cv2
import numpy as np
import pytest

from tfseg.config import PreprocessConfig, SyntheticSpec, load_config
from tfseg.config.recipes import recipe_path
from tfseg.data.fringes import fringe_channels
from tfseg.data.interferograms import prepare_sequence
from tfseg.data.preprocess import Preprocessing, boxes_to_mask, crop
from tfseg.data.synthetic import generate_sequence
from tfseg.utils.errors import TfsegError

OFF = dict(blur=0, background_every=0, clahe_clip_limit=0.0)


def described(**steps):
    return Preprocessing(steps=PreprocessConfig(**{**OFF, **steps}))


def test_box_blur_matches_opencv_and_zero_disables():
    frame = np.random.default_rng(0).integers(0, 256, (9, 11), dtype=np.uint8)
    np.testing.assert_array_equal(described(blur=3).image(frame)[..., 0],
                                  cv2.blur(frame, (3, 3)))
    np.testing.assert_array_equal(described().image(frame)[..., 0], frame)


def test_background_is_the_mean_of_the_blurred_frames_and_result_is_clipped():
    frames = [np.full((4, 4), v, np.uint8) for v in (10, 50, 30, 90)]
    preprocessing = described(blur=3, background_every=2, background_alpha=0.5)
    background = preprocessing.background(enumerate(frames[::2]))   # (10 + 30) / 2
    np.testing.assert_allclose(background, 20.0)
    out = [preprocessing.image(f, background)[0, 0, 0] for f in frames]
    np.testing.assert_allclose(out, [0.0, 40.0, 20.0, 80.0])
    with pytest.raises(TfsegError, match="b: 3x4 frame in a sequence of 4x4 frames"):
        preprocessing.background([("a", frames[0]), ("b", frames[1][:3])])
    with pytest.raises(ValueError, match="3x4 frame in a sequence of 4x4 frames"):
        preprocessing.image(frames[1][:3], background)


def test_crop_takes_the_region_and_refuses_one_outside_the_frame():
    frame = np.arange(30 * 40).reshape(30, 40)
    np.testing.assert_array_equal(crop(frame, [5, 2, 10, 20]), frame[2:22, 5:15])
    assert crop(frame, []) is frame
    with pytest.raises(ValueError, match=r"reaches outside the 30x40"):
        crop(frame, [35, 0, 10, 10])


def test_clahe_spreads_a_narrow_histogram_per_channel_at_the_frame_bit_depth():
    rng = np.random.default_rng(0)
    frame = rng.integers(100, 120, (64, 64, 3)).astype(np.uint8)
    out = described(clahe_clip_limit=5.0, clahe_tile_grid=4).image(frame)
    assert out.shape == (64, 64, 3) and out.std() > 2 * frame.std()
    clahe = cv2.createCLAHE(clipLimit=5.0, tileGridSize=(4, 4))
    np.testing.assert_array_equal(out[..., 1], clahe.apply(np.ascontiguousarray(frame[..., 1])))
    # 16-bit frames: equalised on 0..65535, then expressed in 8-bit grey levels (/ 257).
    deep = rng.integers(1000, 1200, (64, 64)).astype(np.uint16)
    np.testing.assert_array_equal(described(clahe_clip_limit=5.0, clahe_tile_grid=4).image(
        deep)[..., 0], clahe.apply(deep).astype(np.float32) / np.float32(257))
    np.testing.assert_array_equal(dataclasses.replace(
        described(clahe_clip_limit=5.0, clahe_tile_grid=4), units="native").image(deep)[..., 0],
        clahe.apply(deep))


def test_eight_bit_keeps_the_high_byte_as_tensorflow_decodes_16_bit_files():
    frame = np.array([[0, 255, 256, 65535], [32896, 511, 257, 65280]], np.uint16)
    image = Preprocessing(steps=PreprocessConfig(**OFF), eight_bit=True).image(frame)
    np.testing.assert_array_equal(image[..., 0], frame >> 8)
    np.testing.assert_array_equal(described().image(frame)[..., 0],
                                  frame.astype(np.float32) / np.float32(257))


def test_frames_reach_the_network_in_8_bit_grey_levels_whatever_their_depth():
    # value x 255 / the dtype's max: 8-bit frames as they are, 16-bit ones / 257 (their full
    # resolution kept: no rounding to the high byte); "native" units (exports from before
    # "units" was recorded) keep a 16-bit frame's own values.
    eight = np.array([[0, 1, 128, 255]], np.uint8)
    deep = np.array([[0, 1, 257, 32896, 65534, 65535]], np.uint16)
    np.testing.assert_array_equal(described().image(eight)[..., 0], eight)
    np.testing.assert_allclose(described().image(deep)[..., 0],
                               deep * 255.0 / 65535.0, rtol=1e-6)
    assert described().image(deep)[0, 1, 0] == np.float32(1 / 257)
    np.testing.assert_array_equal(described().image(eight.astype(np.uint16) * 257)[..., 0],
                                  eight)   # exactly: the 8-bit counterpart's values
    native = dataclasses.replace(described(), units="native")
    np.testing.assert_array_equal(native.image(deep)[..., 0], deep)
    np.testing.assert_array_equal(native.image(eight)[..., 0], eight)


@pytest.mark.parametrize("steps", [dict(blur=0, background_every=2),
                                   dict(blur=3, background_every=2),
                                   dict(blur=0, background_every=2, clahe_clip_limit=2.0,
                                        clahe_tile_grid=4)],
                         ids=["background", "blur-background", "background-clahe"])
def test_a_16_bit_frame_meets_the_network_as_its_8_bit_counterpart(steps):
    # frame16 = frame8 * 257 (the 8-bit frame on the 16-bit scale): the same network input,
    # exactly without blur or CLAHE; a 16-bit box blur keeps the fraction the 8-bit one
    # rounds away (half a grey level, less the background's share, through the cubic
    # resize). CLAHE equalises 16-bit frames with OpenCV's 65536-bin histograms, whose clip
    # limit and redistribution of the clipped counts are per bin: OpenCV's CLAHE is not
    # scale-free across depths (here the means differ 3-fold), so there only the units are
    # held alike.
    frames8 = generate_sequence(SyntheticSpec(height=48, width=64, frames_per_sequence=4,
                                              fringes=8), 1)[0]
    frames16 = frames8.astype(np.uint16) * 257
    description = dataclasses.replace(described(**steps), resize_to=[24, 32])
    inputs = {}
    for depth, frames in ((8, frames8), (16, frames16)):
        background = description.background(enumerate(frames[::2]))
        inputs[depth] = np.stack([description.image(frame, background) for frame in frames])
    if not steps["blur"] and not steps.get("clahe_clip_limit"):
        np.testing.assert_array_equal(inputs[16], inputs[8])
    elif steps["blur"]:
        np.testing.assert_allclose(inputs[16], inputs[8], atol=0.8)
        assert np.abs(inputs[16] - inputs[8]).mean() < 0.2
    else:
        for depth in (8, 16):
            # 0..255, give or take the cubic resize's overshoot: not 0..65535.
            assert -64 < inputs[depth].min() and 32 < inputs[depth].max() < 320


def test_boxes_become_a_binary_mask():
    mask = boxes_to_mask([(1, 2, 3, 2), (0, 0, 1, 1)], height=5, width=6)
    assert mask.dtype == np.uint8 and mask.sum() == 7
    assert mask[2:4, 1:4].all() and mask[0, 0] == 1 and mask[4].sum() == 0


def test_boxes_reaching_outside_the_frame_are_clipped():
    mask = boxes_to_mask([(-2, -3, 4, 5), (4, 3, 10, 10)], height=5, width=6)
    assert mask[:2, :2].all() and mask[2:, :2].sum() == 0
    assert mask[3:, 4:].all() and mask.sum() == 4 + 4


@pytest.mark.parametrize("interpolation", ["cubic", "area"])
def test_resize_follows_the_description_and_keeps_mask_ids_on_their_pixels(interpolation):
    image = np.random.default_rng(0).uniform(0, 255, (30, 40)).astype(np.float32)
    mask = np.zeros((30, 40), np.uint8)
    mask[6:20, 10:30] = 1
    mask[0, 0] = 255
    preprocessing = Preprocessing(steps=PreprocessConfig(**OFF), resize_to=[15, 20],
                                  interpolation=interpolation)
    flag = {"cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA}[interpolation]
    np.testing.assert_array_equal(preprocessing.image(image)[..., 0],
                                  cv2.resize(image, (20, 15), interpolation=flag))
    small = preprocessing.mask(mask)
    assert small.shape == (15, 20) and set(np.unique(small)) <= {0, 1, 255}
    # Half-pixel centres: output pixel (y, x) takes input pixel (2y + 1, 2x + 1).
    np.testing.assert_array_equal(small, mask[1::2, 1::2])


def test_for_network_at_resizes_frames_to_the_network_and_masks_to_the_labels():
    image = np.random.default_rng(0).uniform(0, 255, (30, 40)).astype(np.float32)
    mask = np.zeros((30, 40), np.uint8)
    mask[6:20, 10:30] = 1
    labels = Preprocessing(steps=PreprocessConfig(**OFF, crop=[0, 2, 40, 28]),
                           resize_to=[14, 20])
    network = labels.for_network_at((7, 12))
    np.testing.assert_array_equal(network.image(image), labels.at_size((7, 12)).image(image))
    np.testing.assert_array_equal(network.mask(mask), labels.mask(mask))
    assert network.mask_size == (14, 20) and network.to_metadata() == labels.at_size(
        (7, 12)).to_metadata()   # the description an export at 7x12 carries
    assert labels.for_network_at((14, 20)) is labels
    unresized = Preprocessing()   # super-resolution: nothing resized at any size
    assert unresized.for_network_at((7, 12)) is unresized


def recipe(name):
    return load_config(recipe_path(name))


def test_the_config_describes_what_each_source_trains_on():
    icnet = recipe("icnet_interferogram")
    assert icnet.data.preprocess.background_every and icnet.data.preprocess.clahe_clip_limit
    assert Preprocessing.from_config(icnet) == Preprocessing(
        steps=icnet.data.preprocess, colour="gray", eight_bit=False, resize_to=[1024, 1024],
        interpolation="cubic")
    # Sources TensorFlow decodes: 8-bit, none of the interferogram steps, area resize.
    camvid = recipe("linknet_camvid")
    assert Preprocessing.from_config(camvid) == Preprocessing(
        colour="rgb", eight_bit=True, resize_to=[360, 480], interpolation="area")
    assert Preprocessing().steps.blur == 0 and Preprocessing().steps.background_every == 0
    super_resolution = Preprocessing.from_config(recipe("sr_johnson_x4"))
    assert super_resolution.resize_to == [] and super_resolution.at_size((8, 8)).resize_to == []
    assert super_resolution.colour == "rgb" and super_resolution.eight_bit
    assert Preprocessing.from_config(icnet).at_size((64, 128)).resize_to == [64, 128]


@pytest.mark.parametrize("slopes, amplitude, channels", [
    (True, False, 3), (False, True, 2), (True, True, 4)])
def test_demodulated_fringes_add_the_resized_frames_slopes_and_amplitude(
        slopes, amplitude, channels):
    frames, _ = generate_sequence(SyntheticSpec(height=96, width=112, frames_per_sequence=1), 3)
    plain = described().at_size((64, 48))
    demodulated = dataclasses.replace(plain, steps=dataclasses.replace(
        plain.steps, phase_gradient=slopes, fringe_amplitude=amplitude))
    assert (plain.channels, demodulated.channels, demodulated.frame_channels) == (
        1, channels, 1)
    image = demodulated.image(frames[0])
    np.testing.assert_array_equal(image[..., :1], plain.image(frames[0]))
    np.testing.assert_array_equal(image[..., 1:], fringe_channels(
        image[..., 0], slopes=slopes, amplitude=amplitude))


def test_metadata_round_trip_and_old_exports():
    preprocessing = Preprocessing(steps=PreprocessConfig(clahe_clip_limit=2.0, crop=[1, 2, 3, 4]),
                                  colour="rgb", eight_bit=True, resize_to=[8, 16],
                                  interpolation="area")
    stored = preprocessing.to_metadata()
    assert Preprocessing.from_metadata(stored, task="segmentation", source="m") == preprocessing
    # Exports from before "eight_bit" and "interpolation" were recorded read as they were
    # predicted then.
    old = {key: value for key, value in stored.items()
           if key not in ("eight_bit", "interpolation", "phase_gradient",
                          "fringe_amplitude")}
    for task, eight_bit in (("segmentation", False), ("super_resolution", True)):
        assert Preprocessing.from_metadata(old, task=task, source="m") == dataclasses.replace(
            preprocessing, eight_bit=eight_bit, interpolation="cubic")


def test_units_round_trip_and_old_exports_keep_their_meaning():
    interferograms = Preprocessing.from_config(recipe("default"))
    assert interferograms.units == "8bit" and not interferograms.eight_bit
    stored = interferograms.to_metadata()
    assert stored["units"] == "8bit"
    assert Preprocessing.from_metadata(stored, task="segmentation", source="m") == interferograms
    native = dataclasses.replace(interferograms, units="native")
    assert Preprocessing.from_metadata(native.to_metadata(), task="segmentation",
                                       source="m") == native
    # Before "units" was recorded, frames reached the network at their own scale: 16-bit
    # frames keep their values; frames reduced to 8 bits are in 8-bit units either way.
    old = {key: value for key, value in stored.items() if key != "units"}
    assert Preprocessing.from_metadata(old, task="segmentation", source="m") == native
    old_eight_bit = {**old, "eight_bit": True}
    assert Preprocessing.from_metadata(old_eight_bit, task="segmentation",
                                       source="m").units == "8bit"
    assert Preprocessing.from_metadata({key: value for key, value in old.items()
                                        if key != "eight_bit"}, task="super_resolution",
                                       source="m").units == "8bit"


@pytest.mark.parametrize("change,message", [
    (lambda d: d.pop("blur"), r"m.onnx: tfseg metadata without preprocessing.blur \(expected "
                              "blur, background_every"),
    (lambda d: d.update(sharpen=1), "m.onnx: unknown key 'preprocessing.sharpen'"),
    (lambda d: d.update(blur="3"), "m.onnx: preprocessing.blur: expected an integer"),
    (lambda d: d.update(interpolation="linear"),
     "m.onnx: preprocessing.interpolation='linear' is not one of"),
    (lambda d: d.update(resize_to=[8]), "must be \\[\\] or \\[height, width\\]"),
    (lambda d: d.update(units="16bit"), "m.onnx: preprocessing.units='16bit' is not one of"),
])
def test_a_malformed_description_is_one_line_naming_the_file_and_key(change, message):
    values = Preprocessing().to_metadata()
    change(values)
    with pytest.raises(TfsegError, match=message):
        Preprocessing.from_metadata(values, task="segmentation", source="m.onnx")


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_prepared_sequence_matches_network_size_and_boxes(bit_depth):
    spec = SyntheticSpec(height=96, width=128, frames_per_sequence=5, fringes=12,
                         bit_depth=bit_depth)
    frames, boxes = generate_sequence(spec, seed=3)
    preprocessing = Preprocessing(steps=PreprocessConfig(clahe_clip_limit=2.0,
                                                         clahe_tile_grid=4),
                                  resize_to=[48, 64])
    images, masks = prepare_sequence(frames, boxes, preprocessing)
    assert images.shape == (5, 48, 64, 1) and images.dtype == np.float32
    assert masks.shape == (5, 48, 64) and masks.dtype == np.uint8
    full = [boxes_to_mask(b, 96, 128).mean() for b in boxes]
    np.testing.assert_allclose(masks.reshape(5, -1).mean(1), full, atol=0.02)
