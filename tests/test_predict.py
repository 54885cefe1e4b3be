"""python -m tfseg.predict: folders, videos and 16-bit frames preprocessed exactly as in
training, tiled super-resolution with histogram matching, and clean errors that leave nothing
half-written."""

import re
import shutil
from types import SimpleNamespace

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    REPO,
    assert_one_line_error,
    load_script,
    psnr,
    run_module,
    write_plain_onnx,
)

from tfseg import models, predict
from tfseg.cli import run_cli
from tfseg.config import Config, DataConfig, PreprocessConfig
from tfseg.data.interferograms import prepare_sequence
from tfseg.data.labels import read_roi_json, read_yolo, write_roi_json, write_yolo
from tfseg.data.preprocess import Preprocessing
from tfseg.deploy import inference, runtimes
from tfseg.deploy.exports import export_onnx, export_saved_model
from tfseg.deploy.inference import UNSEEN
from tfseg.deploy.metadata import make_metadata, metadata_for
from tfseg.tasks.samples import component_boxes
from tfseg.utils.errors import TfsegError

MODEL_SIZE = (32, 48)
FRAME_SIZE = (48, 64)   # raw frames: cropped to 40x56, resized to the model size
STEPS = {"blur": 3, "background_every": 2, "background_alpha": 0.9, "clahe_clip_limit": 2.0,
         "clahe_tile_grid": 4, "crop": [4, 2, 56, 40]}


def segmentation_config(*, mean, std, path="frames"):
    """A recipe for interferogram folders at `path`, preprocessed by STEPS to MODEL_SIZE."""
    return Config(data=DataConfig(source="interferograms", path=str(path),
                                  height=MODEL_SIZE[0], width=MODEL_SIZE[1], mean=mean,
                                  std=std, preprocess=PreprocessConfig(**STEPS)))


def make_segmenter(mean, std, seed=0):
    keras.utils.set_random_seed(seed)
    model = models.build("linknet", num_classes=2, input_shape=MODEL_SIZE, input_channels=1,
                         mean=mean, std=std)
    models.randomize_batch_norm(model, seed)
    return model


def make_frames(count, size, *, maximum=255, dtype=np.uint8, seed=0):
    """Smooth random frames with a bright blob moving across them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size[0], :size[1]]
    frames = []
    for index in range(count):
        noise = cv2.GaussianBlur(rng.uniform(0, 1, size).astype(np.float32), (0, 0), 3)
        blob = np.exp(-((yy - size[0] / 2) ** 2 + (xx - 10 - 12 * index) ** 2) / 60)
        frame = (noise - noise.min()) / np.ptp(noise) * 0.6 + 0.4 * blob
        frames.append(np.round(frame * maximum).astype(dtype))
    return np.stack(frames)


def write_frames(folder, frames, suffix=".png"):
    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"frame_{index:04d}{suffix}"), frame)
    return folder


def training_logits(model, frames, config):
    """Logits of `frames` preprocessed by the training pipeline, from the Keras model."""
    images, _ = prepare_sequence(frames, [[] for _ in frames],
                                 Preprocessing.from_config(config))
    return np.asarray(model(images, training=False))


def training_masks(model, frames, config):
    """Class ids at the raw frames' size of the Keras model's logits on `frames` preprocessed
    by the training pipeline, resized back to the crop (tf.image.resize, bilinear), 255
    (unseen) outside it: what predict writes."""
    logits = training_logits(model, frames, config)
    x, y, w, h = config.data.preprocess.crop
    masks = np.full(frames.shape[:3], inference.UNSEEN, np.uint8)
    masks[:, y:y + h, x:x + w] = tf.image.resize(logits, (h, w)).numpy().argmax(-1)
    return masks


def read_mask(path):
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert mask is not None and mask.dtype == np.uint8, path
    return mask


def make_segmentation_export(folder):
    """A tiny LinkNet exported to ONNX with the tfseg metadata of its recipe (`config`) in
    `folder`, and a folder of 4 raw frames. Exported once per session, whichever test module
    asks first: the model's weights are the same every time."""
    model = make_segmenter(mean=[90.0], std=[40.0])
    frames = make_frames(4, FRAME_SIZE)
    config = segmentation_config(mean=[90.0], std=[40.0], path=folder / "frames")
    onnx_path = folder / "model.onnx"
    if not onnx_path.exists():
        folder.mkdir(exist_ok=True)
        export_onnx(model, onnx_path, metadata=metadata_for(config, "NCHW"))
    return SimpleNamespace(model=model, onnx=onnx_path, frames=frames, config=config,
                           folder=write_frames(folder / "frames", frames))


@pytest.fixture(scope="session")
def segmentation_export(tmp_path_factory):
    return make_segmentation_export(tmp_path_factory.getbasetemp() / "segmentation_export")


def test_folder_is_segmented_exactly_as_training_preprocesses(segmentation_export, tmp_path):
    exported = segmentation_export
    result = run_module("tfseg.predict", "--model", exported.onnx, "--input", exported.folder,
                        "--output", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    expected = training_masks(exported.model, exported.frames, exported.config)
    seen = expected != UNSEEN   # the 40x56 crop at (4, 2) of the 48x64 frames
    assert seen.sum() == 4 * 40 * 56 and seen[:, 2:42, 4:60].all()
    assert 0.05 < expected[seen].mean() < 0.95   # both classes: the comparison means much
    masks = np.stack([read_mask(tmp_path / "out" / f"frame_{i:04d}_mask.png")
                      for i in range(4)])
    assert masks.shape == (4, *FRAME_SIZE)   # the input frames' size, not the model's
    assert np.mean(masks == expected) >= 0.999
    overlay = cv2.imread(str(tmp_path / "out" / "frame_0000_overlay.png"))
    assert overlay.shape == (*FRAME_SIZE, 3)
    # Class 1 is painted red (RGB 255, 64, 64) half over the frame: red dominates there;
    # outside the crop the frame is shown unpainted (grey).
    red = overlay[masks[0] == 1].astype(int)
    assert (red[:, 2] > red[:, 1]).all()
    np.testing.assert_array_equal(overlay[0], np.repeat(exported.frames[0][0, :, None], 3, -1))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"frame_{i:04d}_{kind}.png" for i in range(4) for kind in ("mask", "overlay"))
    # The frame rate: 4 frames over the loop's time, inference a part of it.
    rate = re.search(r"([\d.]+) frames/s end to end \(([\d.]+) s: .* onnxruntime inference, "
                     r"which took ([\d.]+) s = ([\d.]+) s per frame\); onnxruntime \d",
                     result.stdout)
    assert rate, result.stdout
    frames_per_s, total, inference, per_frame = map(float, rate.groups())
    # Seconds are printed to 3 decimals, the rate to 3 significant digits: allow that rounding.
    assert 4 / (total + 5e-4) * 0.995 <= frames_per_s <= 4 / max(total - 5e-4, 1e-9) * 1.005
    assert 0 < inference <= total
    assert abs(per_frame - inference / 4) <= 5e-4 / 4 + 5e-5


def test_video_frames_are_named_and_share_the_video_background(segmentation_export,
                                                                tmp_path):
    exported = segmentation_export
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5,
                             FRAME_SIZE[::-1])
    assert writer.isOpened()
    for frame in exported.frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    capture = cv2.VideoCapture(str(video))
    decoded = []   # the frames as the video codec returns them
    while (frame := capture.read()[1]) is not None:
        decoded.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    assert run_cli(predict.main, ["--model", str(exported.onnx), "--input", str(video),
                                  "--output", str(tmp_path / "out")]) == 0
    masks = np.stack([read_mask(tmp_path / "out" / f"clip_{i:06d}_mask.png")
                      for i in range(4)])
    assert not (tmp_path / "out" / "clip_000004_mask.png").exists()
    expected = training_masks(exported.model, np.stack(decoded), exported.config)
    assert np.mean(masks == expected) >= 0.999


def test_a_root_of_sequence_folders_is_read_as_training_reads_data_path(segmentation_export,
                                                                        tmp_path):
    exported = segmentation_export
    sequences = {"sequence_a": exported.frames, "sequence_b": exported.frames[::-1]}
    for name, frames in sequences.items():
        write_frames(tmp_path / "root" / name, frames)
    assert run_cli(predict.main, ["--model", str(exported.onnx), "--input",
                                  str(tmp_path / "root"), "--output",
                                  str(tmp_path / "out")]) == 0
    for name, frames in sequences.items():   # each with its own background
        masks = np.stack([read_mask(tmp_path / "out" / name / f"frame_{i:04d}_mask.png")
                          for i in range(4)])
        assert np.mean(masks == training_masks(exported.model, frames, exported.config)) >= 0.999


def test_16_bit_frames_are_prepared_as_in_training(tmp_path):
    # A model trained on 16-bit frames (CLAHE spreads them over 0..65535, then 8-bit grey
    # levels: / 257) segments 16-bit PNGs exactly as training preprocessed them.
    model = make_segmenter(mean=[117.0], std=[58.0], seed=1)
    config = segmentation_config(mean=[117.0], std=[58.0])
    frames = make_frames(3, FRAME_SIZE, maximum=4000, dtype=np.uint16, seed=1)
    folder = write_frames(tmp_path / "frames16", frames)
    assert cv2.imread(str(folder / "frame_0000.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    (sequence,) = inference.input_sequences([folder])
    outputs = dict(inference.predict_sequence(
        runtimes.from_keras(model, metadata_for(config, "NCHW")), sequence))
    masks = np.stack([outputs[f"frame_{i:04d}"]["mask"] for i in range(3)])
    expected = training_masks(model, frames, config)
    assert 0.02 < expected[expected != inference.UNSEEN].mean() < 0.98
    assert np.mean(masks == expected) >= 0.999


@pytest.fixture(scope="module")
def super_resolution_export(tmp_path_factory):
    """A x2 SR network exported as a SavedModel at a static 24x24 input, and the same weights
    in a model that takes any size."""
    out = tmp_path_factory.mktemp("super_resolution")
    keras.utils.set_random_seed(0)
    options = {"scale": 2, "input_channels": 3, "mean": [127.5] * 3, "std": [127.5] * 3}
    model = models.build("sr_johnson", input_shape=(24, 24), **options)
    any_size = models.build("sr_johnson", **options)
    any_size.set_weights(model.get_weights())
    metadata = make_metadata(
        model="sr_johnson", task="super_resolution", input_size=(24, 24), input_channels=3,
        layout="NHWC", mean=options["mean"], std=options["std"], scale=2,
        preprocessing=Preprocessing(colour="rgb", eight_bit=True))
    saved_model = export_saved_model(model, out / "saved_model", metadata)
    return SimpleNamespace(any_size=any_size, saved_model=saved_model)


def test_super_resolution_is_tiled_to_the_scaled_size(super_resolution_export, tmp_path):
    image = make_frames(3, (40, 56), seed=2).transpose(1, 2, 0)   # RGB
    cv2.imwrite(str(tmp_path / "frame.png"), image[..., ::-1])
    assert run_cli(predict.main, ["--model", str(super_resolution_export.saved_model),
                                  "--input", str(tmp_path / "frame.png"), "--output",
                                  str(tmp_path / "out"), "--overlap", "12"]) == 0
    upscaled = cv2.imread(str(tmp_path / "out" / "frame_x2.png"))[..., ::-1]
    assert upscaled.shape == (80, 112, 3)
    whole = np.asarray(super_resolution_export.any_size(image[None].astype(np.float32),
                                                        training=False))[0]
    # Tiles of 24 pixels are small for this network's receptive field (9x9 convolutions and
    # 4 residual blocks); blended, they still agree with one pass to within 45 dB.
    reference = np.clip(np.round(whole), 0, 255)
    assert psnr(upscaled, reference) >= 45
    assert np.mean(np.abs(upscaled - reference)) <= 0.6


def test_histogram_matching_gives_the_upscaled_frame_the_input_tones(super_resolution_export,
                                                                     tmp_path):
    image = make_frames(3, (32, 32), seed=3).transpose(1, 2, 0)
    cv2.imwrite(str(tmp_path / "frame.png"), image[..., ::-1])
    outputs = {}
    for flag in ([], ["--match-histogram"]):
        out = tmp_path / ("matched" if flag else "plain")
        assert run_cli(predict.main, ["--model", str(super_resolution_export.saved_model),
                                      "--input", str(tmp_path / "frame.png"), "--output",
                                      str(out), *flag]) == 0
        outputs[bool(flag)] = cv2.imread(str(out / "frame_x2.png"))[..., ::-1]
    quantiles = np.linspace(5, 95, 10)
    for channel in range(3):
        target, matched, plain = (picture[..., channel].astype(float)
                                  for picture in (image, outputs[True], outputs[False]))
        assert abs(plain.mean() - target.mean()) > 15   # the untrained network's own tones
        assert abs(matched.mean() - target.mean()) <= 3
        assert abs(matched.std() - target.std()) <= 3
        # The plain output has about 50 grey levels; each maps to one level as a whole.
        assert np.abs(np.percentile(matched, quantiles)
                      - np.percentile(target, quantiles)).max() <= 8


def test_match_histogram_follows_the_reference_and_keeps_the_order():
    rng = np.random.default_rng(0)
    image = rng.normal(60, 10, (64, 64, 1)).clip(0, 255).astype(np.uint8)
    reference = rng.uniform(100, 250, (20, 30, 1)).astype(np.uint8)
    matched = inference.match_histogram(image, reference)
    np.testing.assert_allclose(np.percentile(matched, [10, 50, 90]),
                               np.percentile(reference, [10, 50, 90]), atol=3)
    order = np.argsort(image.ravel(), kind="stable")
    assert (np.diff(matched.ravel()[order].astype(int)) >= 0).all()


def test_inputs_are_checked_before_anything_is_written(tmp_path, segmentation_export):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not an image")
    write_frames(tmp_path / "a", segmentation_export.frames[:1])
    write_frames(tmp_path / "b", segmentation_export.frames[:1])
    cases = [([tmp_path / "missing.png"], "missing.png: no such file"),
             ([tmp_path / "empty"], "empty: no frames found"),
             ([tmp_path / "notes.txt"], "notes.txt: not an image"),
             ([tmp_path / "a", tmp_path / "b"], "frame_0000.png: its outputs would overwrite")]
    for inputs, message in cases:
        with pytest.raises(TfsegError, match=message):
            predict.main(["--model", str(segmentation_export.onnx), "--input",
                          *map(str, inputs), "--output", str(tmp_path / "out")])
    with pytest.raises(TfsegError, match="--tile 64x64: the model takes 32x48"):
        predict.main(["--model", str(segmentation_export.onnx), "--input",
                      str(tmp_path / "a"), "--output", str(tmp_path / "out"),
                      "--tile", "64x64"])
    assert not (tmp_path / "out").exists()


def test_unreadable_frame_stops_cleanly_with_earlier_outputs_complete(segmentation_export,
                                                                      tmp_path):
    folder = write_frames(tmp_path / "frames", segmentation_export.frames[:3])
    bad = folder / "frame_0001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = run_module("tfseg.predict", "--model", segmentation_export.onnx, "--input",
                        folder, "--output", tmp_path / "out")
    assert_one_line_error(result, str(bad), "unreadable")
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["frame_0000_mask.png", "frame_0000_overlay.png"]   # no temporaries
    assert read_mask(tmp_path / "out" / "frame_0000_mask.png").shape == FRAME_SIZE


@pytest.mark.slow   # 0.5-0.8 s: an onnxruntime session
def test_a_failed_write_stops_predict_and_the_frames_before_it_are_complete(
        segmentation_export, tmp_path, monkeypatch):
    # A write error stops the run, named, and the frames before it are on disk whole.
    write_png = inference.write_png

    def fail_on_the_second_frame(path, image, **options):
        if "frame_0001" in path.name:
            raise TfsegError(f"{path}: no space left on device")
        write_png(path, image, **options)

    monkeypatch.setattr(inference, "write_png", fail_on_the_second_frame)
    with pytest.raises(TfsegError, match="frame_0001_mask.png: no space left"):
        inference.predict_files(segmentation_export.onnx, [segmentation_export.folder],
                                tmp_path / "out")
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["frame_0000_mask.png", "frame_0000_overlay.png"]
    assert read_mask(tmp_path / "out" / "frame_0000_mask.png").shape == FRAME_SIZE


def test_onnx_without_tfseg_metadata_is_refused_before_writing(tmp_path,
                                                               segmentation_export):
    plain = write_plain_onnx(tmp_path / "plain.onnx")
    result = run_module("tfseg.predict", "--model", plain, "--input",
                        segmentation_export.folder, "--output", tmp_path / "out")
    assert_one_line_error(result, str(plain), "not a tfseg export")
    assert not (tmp_path / "out").exists()


def test_logits_are_resized_back_into_the_frame_as_evaluate_resizes_them():
    rng = np.random.default_rng(0)
    for classes, (height, width), region in ((2, (37, 53), ()), (12, (96, 80), (5, 7, 60, 70))):
        logits = rng.normal(size=(32, 24, classes)).astype(np.float32)
        mask = inference.mask_in_frame(logits, (height, width), region)
        x, y, w, h = region or (0, 0, width, height)
        expected = tf.image.resize(logits[None], (h, w)).numpy()[0]
        np.testing.assert_allclose(inference.resize_logits(logits, (h, w)), expected,
                                   atol=1e-4)
        assert mask.shape == (height, width)
        assert np.mean(mask[y:y + h, x:x + w] == expected.argmax(-1)) >= 0.999
        outside = np.ones(mask.shape, bool)
        outside[y:y + h, x:x + w] = False
        assert (mask[outside] == inference.UNSEEN).all()
    same = rng.normal(size=(4, 5, 3)).astype(np.float32)
    assert inference.resize_logits(same, (4, 5)) is same


@pytest.mark.slow   # 0.5-0.8 s: an onnxruntime session
def test_boxes_are_the_mask_samples_in_both_label_formats(segmentation_export, tmp_path):
    exported, out = segmentation_export, tmp_path / "out"

    def predict_boxes(*option):
        shutil.rmtree(out, ignore_errors=True)
        assert run_cli(predict.main, ["--model", str(exported.onnx), "--input",
                                      str(exported.folder), "--output", str(out), "--boxes",
                                      *option]) == 0
        rois = read_roi_json(out / "rois.json")
        assert list(rois) == [f"frame_{i:04d}.png" for i in range(4)]
        masks = [read_mask(out / f"frame_{i:04d}_mask.png") == 1 for i in range(4)]
        for index, boxes in enumerate(rois.values()):
            assert read_yolo(out / f"frame_{index:04d}.txt", *FRAME_SIZE) == boxes
        return rois, masks

    # Every component, in input-frame pixels.
    rois, masks = predict_boxes("--min-sample-area", "0")
    assert list(rois.values()) == [component_boxes(mask) for mask in masks]
    # Components under a fraction of the frame are left out: here the largest one's area.
    areas = [cv2.connectedComponentsWithStats(m.astype(np.uint8))[2][1:, cv2.CC_STAT_AREA]
             for m in masks]
    largest = max(a.max() for a in areas if len(a)) / masks[0].size
    kept, _ = predict_boxes("--min-sample-area", str(largest))
    assert sum(map(len, kept.values())) == sum(int((a >= largest * m.size).sum())
                                               for a, m in zip(areas, masks))
    assert 0 < sum(map(len, kept.values())) < sum(map(len, rois.values()))
    # By default the export's own data.min_sample_area, which its metadata carries.
    with inference.load_model(exported.onnx) as model:
        assert model.metadata["min_sample_area"] == exported.config.data.min_sample_area
    rois, masks = predict_boxes()
    assert list(rois.values()) == [
        component_boxes(mask, min_area=exported.config.data.min_sample_area) for mask in masks]
    # tools/label_rois.py --proposals opens either file set with these boxes.
    label_rois = load_script(REPO / "tools" / "label_rois.py")
    frames = sorted(exported.folder.iterdir())
    for proposals in (out / "rois.json", out):
        loaded = label_rois.load_proposals(proposals, frames, tmp_path / "labels.json")
        assert {name: label_rois.proposal_boxes(loaded, name, FRAME_SIZE)[0]
                for name in rois} == rois
    assert not [p for p in out.iterdir() if p.name.startswith(".")]   # no temporaries


def test_label_files_round_trip_exactly_at_any_frame_size(tmp_path):
    rng = np.random.default_rng(1)
    for height, width in ((48, 64), (3072, 3072), (1023, 4097), (7, 5)):
        boxes = []
        for _ in range(20):
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            boxes.append((x, y, int(rng.integers(1, width - x + 1)),
                          int(rng.integers(1, height - y + 1))))
        write_yolo(tmp_path / "frame.txt", boxes, height, width)
        assert read_yolo(tmp_path / "frame.txt", height, width) == boxes
    write_yolo(tmp_path / "empty.txt", [], 10, 10)
    assert (tmp_path / "empty.txt").read_text() == "" and read_yolo(
        tmp_path / "empty.txt", 10, 10) == []
    write_roi_json(tmp_path / "rois.json", [("a.bmp", boxes), ("b.bmp", [])])
    assert read_roi_json(tmp_path / "rois.json") == {"a.bmp": boxes, "b.bmp": []}


def test_boxes_are_refused_among_input_frames_and_for_models_without_samples(
        segmentation_export, tmp_path):
    folder = write_frames(tmp_path / "frames", segmentation_export.frames[:1])
    (folder / "rois.json").write_text('[["frame_0000.png", [[1, 2, 3, 4]]]]')
    with pytest.raises(TfsegError, match="frames: holds input frames; --boxes would write"):
        predict.main(["--model", str(segmentation_export.onnx), "--input", str(folder),
                      "--output", str(folder), "--boxes"])
    assert sorted(p.name for p in folder.iterdir()) == ["frame_0000.png", "rois.json"]
    camvid = SimpleNamespace(metadata={"task": "segmentation",
                                       "class_names": ["Sky", "Road", "Car"]})
    with pytest.raises(TfsegError, match="no class named background .classes: Sky, Road"):
        inference._background_for_boxes(camvid, "camvid.onnx")
    with pytest.raises(TfsegError, match="sr.onnx is a super_resolution model"):
        inference._background_for_boxes(
            SimpleNamespace(metadata={"task": "super_resolution"}), "sr.onnx")
    cells = SimpleNamespace(metadata={"task": "segmentation",
                                      "class_names": ["cell", "Background"]})
    assert inference._background_for_boxes(cells, "cells.onnx") == 1
