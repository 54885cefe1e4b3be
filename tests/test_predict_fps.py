"""benchmarks/predict_fps.py: predict's end-to-end frames/s on BMP sequences, with the time of
each step, for every family and precision; and the speed-ups of predict's input side, which
change no result: the preprocessing's in-place background and OpenCV rounding, frames read and
preprocessed in a worker thread one frame ahead; and the overlay blended by OpenCV."""

import json

import cv2
import numpy as np
import pytest
from conftest import REPO, load_script

from tfseg.benchmarking.cases import MODEL_NAMES
from tfseg.config import PreprocessConfig
from tfseg.config.loading import load_config
from tfseg.config.recipes import recipe_path
from tfseg.data.preprocess import INTERPOLATIONS, Preprocessing, _resized, crop
from tfseg.data.sequences import Sequence, read_frame
from tfseg.deploy.inference import (
    UNSEEN,
    frame_picture,
    frame_pictures,
    mask_in_frame,
    predict_sequence,
    segmentation_pictures,
)
from tfseg.deploy.metadata import make_metadata
from tfseg.utils.errors import TfsegError

SCRIPT = REPO / "benchmarks" / "predict_fps.py"


@pytest.fixture(scope="module")
def script():
    return load_script(SCRIPT)


def test_every_bench_family_has_its_recipe(script):
    assert tuple(script.RECIPES) == MODEL_NAMES
    for family, recipe in script.RECIPES.items():
        assert load_config(recipe_path(recipe)).model.name == family


def test_a_size_for_an_unknown_family_is_refused(script, capsys):
    with pytest.raises(SystemExit):
        script.parse_args(["--size", "unet=32x32"])
    assert "--size unet=32x32: expected FAMILY=HxW" in capsys.readouterr().err


@pytest.mark.slow
def test_a_tiny_run_gives_every_figure(script, tmp_path, capsys):
    json_path = tmp_path / "rows.json"
    rows = script.main(["--work-dir", str(tmp_path), "--frame-size", "64", "--frames", "2",
                        "--warmup", "1", "--families", "icnet_temporal", "--precisions",
                        "float32", "int8", "--size", "icnet_temporal=32x32",
                        "--json", str(json_path)])
    float32, int8 = rows
    assert float32["input"] == "32x32x1" and float32["frames"] == 2
    for stage in ("read", "preprocess", "model", "postprocess", "write", "end_to_end"):
        assert float32[f"{stage}_ms"] > 0
    assert float32["frames_per_s"] == pytest.approx(1e3 / float32["end_to_end_ms"])
    assert float32["input_faster"] == (float32["read_ms"] + float32["preprocess_ms"]
                                       < float32["model_ms"])
    assert "recurrent" in int8["not_supported"]   # no int8 for a recurrent model
    assert (tmp_path / "interferograms-64-3-frames" / "sequence_000" / "frame_0002.bmp").exists()
    table = capsys.readouterr().out
    assert "| icnet_temporal | 32x32x1 | onnxruntime | float32 |" in table
    assert json.loads(json_path.read_text())["rows"] == rows


def reference_image(preprocessing, frame, background):
    """`Preprocessing.image` as it was written before the speed-ups: a new array per step,
    np.rint and np.clip before CLAHE."""
    steps = preprocessing.steps
    blurred = preprocessing._blurred(preprocessing._reduced(frame))
    image = preprocessing._in_units(blurred)
    if background is not None:
        image = np.maximum(image - steps.background_alpha * background, 0.0)
    image = image.reshape(*image.shape[:2], -1)
    if steps.clahe_clip_limit:
        max_value, divisor = np.iinfo(blurred.dtype).max, preprocessing._divisor(blurred.dtype)
        clahe = cv2.createCLAHE(clipLimit=steps.clahe_clip_limit,
                                tileGridSize=(steps.clahe_tile_grid,) * 2)
        channels = []
        for c in range(image.shape[-1]):
            native = image[..., c] * np.float32(divisor)
            rounded = np.clip(np.rint(native), 0, max_value).astype(
                np.uint8 if max_value <= 255 else np.uint16)
            channels.append(clahe.apply(rounded).astype(np.float32) / np.float32(divisor))
        image = np.stack(channels, axis=-1)
    image = _resized(crop(image, steps.crop), preprocessing.resize_to,
                     INTERPOLATIONS[preprocessing.interpolation])
    return image.reshape(*image.shape[:2], -1)


def random_frames(count, shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(dtype).max + 1, (count, *shape)).astype(dtype)


@pytest.mark.parametrize("dtype, colour, alpha, clahe, units, interpolation", [
    (np.uint8, "gray", 0.9, 2.0, "8bit", "cubic"),     # the ICNet recipe's path
    (np.uint8, "gray", 1.0, 0.0, "8bit", "area"),      # many pixels clipped at 0
    (np.uint16, "gray", 0.9, 2.0, "8bit", "cubic"),    # CLAHE on 0..65535
    (np.uint16, "gray", 0.5, 3.0, "native", "cubic"),
    (np.uint8, "rgb", 0.9, 2.0, "8bit", "area"),       # CLAHE per channel
    (np.uint8, "gray", None, 2.0, "8bit", "cubic"),    # no background
])
def test_the_faster_preprocessing_gives_the_same_bits(dtype, colour, alpha, clahe, units,
                                                     interpolation):
    steps = PreprocessConfig(blur=3, background_every=2 if alpha else 0,
                             background_alpha=alpha or 0.9, clahe_clip_limit=clahe,
                             clahe_tile_grid=4, crop=[2, 4, 56, 40])
    preprocessing = Preprocessing(steps=steps, colour=colour, resize_to=[24, 32],
                                  interpolation=interpolation, units=units)
    shape = (48, 64) if colour == "gray" else (48, 64, 3)
    frames = random_frames(4, shape, dtype)
    background = (preprocessing.background(enumerate(frames[::2])) if alpha else None)
    for frame in frames:
        expected = reference_image(preprocessing, frame, background)
        image = preprocessing.image(frame, background)
        assert image.dtype == expected.dtype and image.shape == expected.shape
        np.testing.assert_array_equal(image, expected)


class Logits:
    """A stand-in model: two "logits" per pixel, its input and a fixed ramp, so that each
    frame's mask depends on its own pixels."""

    name, recurrent, input_size, calls = "logits", False, None, 0
    metadata = make_metadata(model="linknet", task="segmentation", input_size=(24, 32),
                             input_channels=1, layout="NHWC", mean=[0.0], std=[1.0],
                             preprocessing=Preprocessing(steps=PreprocessConfig(
                                 blur=3, background_every=2, clahe_clip_limit=2.0,
                                 clahe_tile_grid=4), resize_to=[24, 32]),
                             class_names=["background", "sample"])

    def reset(self):
        self.calls = 0

    def __call__(self, pixels):
        self.calls += 1
        return np.concatenate([pixels, np.full_like(pixels, 60.0 + self.calls)], axis=-1)


def test_frames_read_ahead_give_the_pictures_of_frames_read_one_by_one(tmp_path):
    paths = []
    for index, frame in enumerate(random_frames(5, (48, 64), np.uint8)):
        paths.append(tmp_path / f"frame_{index}.bmp")
        cv2.imwrite(str(paths[-1]), cv2.GaussianBlur(frame, (0, 0), 3))
    model, sequence = Logits(), Sequence(images=tuple(paths))
    predicted = list(predict_sequence(model, sequence))
    preprocessing = Preprocessing.from_metadata(model.metadata["preprocessing"],
                                                task="segmentation", source="test")
    background = sequence.background(preprocessing)
    model.reset()
    assert [name for name, _ in predicted] == [path.stem for path in paths]
    for (_, pictures), path in zip(predicted, paths):
        frame = read_frame(path)
        image = preprocessing.image(frame, background)
        expected = frame_pictures(model.metadata, preprocessing, model(image[None])[0], frame,
                                  image)
        for suffix in ("mask", "overlay"):
            np.testing.assert_array_equal(pictures[suffix], expected[suffix])
    assert len({pictures["mask"].tobytes() for _, pictures in predicted}) > 1


def test_a_bad_frame_read_ahead_stops_the_sequence_where_it_is(tmp_path):
    paths = []
    for index, frame in enumerate(random_frames(4, (48, 64), np.uint8)):
        paths.append(tmp_path / f"frame_{index}.bmp")
        cv2.imwrite(str(paths[-1]), frame)
    paths[3].write_bytes(b"BM not an image")   # not among the background's frames 0 and 2
    done = []
    with pytest.raises(TfsegError, match="frame_3.bmp: unreadable"):
        for name, _ in predict_sequence(Logits(), Sequence(images=tuple(paths))):
            done.append(name)
    assert done == ["frame_0", "frame_1", "frame_2"]


@pytest.mark.parametrize("shape, dtype", [((60, 80), np.uint8), ((60, 80), np.uint16),
                                          ((60, 80, 3), np.uint8)])
@pytest.mark.parametrize("region", [(), (6, 4, 70, 50)])
def test_the_blended_overlay_is_the_float_one(shape, dtype, region):
    rng = np.random.default_rng(0)
    frame = random_frames(1, shape, dtype)[0]
    logits = rng.normal(size=(20, 26, 5)).astype(np.float32)
    colours = rng.integers(0, 256, (5, 3)).tolist()
    # The overlay as it was computed before: in float64, rounded half to even.
    mask = mask_in_frame(logits, shape[:2], region)
    shown, seen = frame_picture(frame), (mask != UNSEEN)[..., None]
    painted = np.asarray(colours, np.float32)[np.where(seen[..., 0], mask, 0)]
    expected = np.round(np.where(seen, 0.5 * shown + 0.5 * painted, shown)).astype(np.uint8)
    pictures = segmentation_pictures(logits, frame, colours, region)
    np.testing.assert_array_equal(pictures["mask"], mask)
    assert pictures["overlay"].dtype == np.uint8
    np.testing.assert_array_equal(pictures["overlay"], expected)
