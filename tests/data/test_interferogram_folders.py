"""Interferogram folders on disk: both label formats, 8/16-bit BMP/PNG/TIFF, the seed's
preprocessing, the train/validation split, and a clear error for every kind of bad input."""

import json
import re
import shutil

import cv2
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_CONFIG, run_module

from tfseg.config import Config, DataConfig, PreprocessConfig, TrainConfig
from tfseg.data import interferograms
from tfseg.data.labels import read_roi_json, write_yolo
from tfseg.data.pipeline import make_datasets, split_interferograms
from tfseg.data.preprocess import Preprocessing
from tfseg.data.sequences import find_sequences, read_frame
from tfseg.utils.errors import TfsegError

FRAME = (96, 128)
SIZE = (48, 64)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two sequences of 6 frames written by tools/make_interferograms.py."""
    out = tmp_path_factory.mktemp("interferograms") / "set"
    result = run_module("tools.make_interferograms", "--out", out, "--sequences", 2,
                        "--frames", 6, "--size", "x".join(map(str, FRAME)), "--fringes", 12,
                        "--seed", 3)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def copy(dataset, tmp_path):
    """A private copy of the data set, free to damage."""
    return shutil.copytree(dataset, tmp_path / "set")


def config_for(path, **data):
    defaults = {"source": "interferograms", "path": str(path), "height": SIZE[0],
                "width": SIZE[1], "val_fraction": 0.25,
                "preprocess": PreprocessConfig(background_every=2)}
    return Config(data=DataConfig(**{**defaults, **data}),
                  train=TrainConfig(batch_size=2, epochs=1, steps_per_epoch=3))


def preprocessing_of(config):
    return Preprocessing.from_config(config)


def frames_of(dataset):
    return [(i.numpy(), m.numpy()) for i, m in dataset]


def test_sequences_are_found_under_a_root_or_given_directly(dataset):
    assert [p.name for p in find_sequences(dataset)] == ["sequence_000", "sequence_001"]
    assert find_sequences(dataset / "sequence_001") == [
        dataset / "sequence_001"]


def test_roi_list_and_yolo_files_give_the_same_boxes(dataset):
    folder = dataset / "sequence_000"
    from_rois = interferograms.read_sequence(folder, "rois")
    from_yolo = interferograms.read_sequence(folder, "yolo")
    rois = read_roi_json(folder / "rois.json")
    assert any(rois.values()), "the fixture should hold some samples"
    for rois_frame, yolo_frame in zip(from_rois, from_yolo):
        assert list(rois_frame.boxes) == rois[rois_frame.path.name]
        assert interferograms.pixel_boxes(yolo_frame, FRAME) == rois[rois_frame.path.name]


def test_frames_become_preprocessed_images_and_box_masks(dataset):
    config = config_for(dataset, preprocess=PreprocessConfig(background_every=2, blur=3,
                                                             clahe_clip_limit=2.0,
                                                             clahe_tile_grid=4))
    folder = dataset / "sequence_000"
    frames = interferograms.read_sequence(folder)
    preprocessing = preprocessing_of(config)
    background = interferograms.sequence_background(frames, preprocessing)
    raw = [cv2.imread(str(f.path), cv2.IMREAD_UNCHANGED) for f in frames]
    np.testing.assert_allclose(
        background, np.mean([cv2.blur(f, (3, 3)) for f in raw[::2]], 0).astype(np.float32),
        rtol=1e-6)
    loaded = frames_of(interferograms.folder_frames(frames, {folder: background},
                                                    preprocessing))
    for frame, raw_frame, (image, mask) in zip(frames, raw, loaded):
        expected_image, expected_mask = interferograms.prepare_frame(
            preprocessing, raw_frame, list(frame.boxes), background)
        np.testing.assert_array_equal(image, expected_image)
        np.testing.assert_array_equal(mask, expected_mask)
        assert image.shape == (*SIZE, 1) and mask.shape == SIZE


def test_frames_without_boxes_are_all_background(copy):
    folder = copy / "sequence_000"
    (folder / "rois.json").unlink()
    for label in folder.glob("*.txt"):
        label.write_text("")
    frames = interferograms.read_sequence(folder)
    config = config_for(copy)
    masks = [m for _, m in frames_of(interferograms.folder_frames(frames, {folder: None},
                                                                  preprocessing_of(config)))]
    assert len(masks) == 6 and all(m.max() == 0 for m in masks)


def test_fraction_split_is_seeded_and_disjoint(dataset):
    config = config_for(dataset)
    train, validation, _ = split_interferograms(config.data, preprocessing_of(config))
    assert len(train) == 9 and len(validation) == 3
    assert not {f.path for f in train} & {f.path for f in validation}
    again = split_interferograms(config.data, preprocessing_of(config))
    assert [f.path for f in again[1]] == [f.path for f in validation]


def test_pipelines_batch_the_run_and_validate_on_a_separate_folder(dataset):
    config = config_for(dataset / "sequence_000", val_path=str(dataset / "sequence_001"))
    data = make_datasets(config)
    batches = list(data.train)
    assert len(batches) == 3 and batches[0][0].shape == (2, *SIZE, 1)
    assert sum(int(i.shape[0]) for i, _ in data.validation) == 6


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_frames_are_read_at_full_depth(tmp_path, suffix):
    folder = tmp_path / "seq"
    folder.mkdir()
    frame = np.random.default_rng(0).integers(0, 65536, FRAME, dtype=np.uint16)
    cv2.imwrite(str(folder / f"f{suffix}"), frame)
    write_yolo(folder / "f.txt", [(10, 20, 30, 40)], *FRAME)
    (record,) = interferograms.read_sequence(folder)
    np.testing.assert_array_equal(read_frame(record.path), frame)
    assert interferograms.pixel_boxes(record, FRAME) == [(10, 20, 30, 40)]


def damage_truncate(folder):
    path = folder / "frame_0002.bmp"
    path.write_bytes(path.read_bytes()[:200])
    return "frame_0002.bmp: unreadable or truncated image"


def damage_box_outside(folder):
    rois = json.loads((folder / "rois.json").read_text())
    rois[1][1] = [[100, 50, 40, 10]]
    (folder / "rois.json").write_text(json.dumps(rois))
    return r"rois.json: box \(x, y, w, h\) = \(100, 50, 40, 10\) of frame_0001.bmp lies outside"


def damage_other_size(folder):
    cv2.imwrite(str(folder / "frame_0004.bmp"), np.zeros((90, 128), np.uint8))
    return "frame_0004.bmp: 90x128 frame in a sequence of 96x128 frames"


@pytest.mark.parametrize("damage", [damage_truncate, damage_box_outside, damage_other_size])
def test_a_bad_frame_fails_naming_the_file_or_is_skipped_when_asked(copy, damage):
    folder = copy / "sequence_000"
    expected = damage(folder)
    config = config_for(folder, val_fraction=0.0, preprocess=PreprocessConfig(
        background_every=3))
    frames = interferograms.read_sequence(folder)
    preprocessing = preprocessing_of(config)
    backgrounds = {folder: interferograms.sequence_background(frames, preprocessing)}
    with pytest.raises(tf.errors.OpError) as raised:
        frames_of(interferograms.folder_frames(frames, backgrounds, preprocessing))
    error = interferograms.data_error(raised.value)
    assert isinstance(error, TfsegError)
    assert re.search(expected, str(error)), str(error)
    skipped = []
    kept = frames_of(interferograms.folder_frames(frames, backgrounds, preprocessing,
                                                  skipped=skipped))
    assert len(kept) == 5 and len(skipped) == 1


def missing_folder(root):
    return root / "nowhere", "no such folder"


def empty_folder(root):
    (root / "empty").mkdir()
    return root / "empty", "no frames found"


def unknown_file(root):
    (root / "sequence_000" / "notes.docx").write_text("x")
    return root, "notes.docx: unknown file type"


def unlabelled_frame(root):
    shutil.copy(root / "sequence_000" / "frame_0000.bmp", root / "sequence_000" / "extra.bmp")
    return root, r"extra.bmp: not labelled in .*rois.json"


def missing_yolo(root):
    (root / "sequence_001" / "rois.json").unlink()
    (root / "sequence_001" / "frame_0004.txt").unlink()
    return root, "frame_0004.bmp: no YOLO label file frame_0004.txt"


def bad_yolo_line(root):
    (root / "sequence_001" / "rois.json").unlink()
    (root / "sequence_001" / "frame_0001.txt").write_text("0 0.5 0.5 1.4 0.2\n")
    return root, r"frame_0001.txt:1: coordinates must be normalised"


def stale_roi(root):
    (root / "sequence_000" / "frame_0005.bmp").unlink()
    (root / "sequence_000" / "frame_0005.txt").unlink()
    return root, "rois.json: lists 'frame_0005.bmp', which is not a frame"


@pytest.mark.parametrize("damage", [missing_folder, empty_folder, unknown_file,
                                    unlabelled_frame, missing_yolo, bad_yolo_line, stale_roi])
def test_bad_folders_and_labels_are_refused_up_front(copy, damage):
    path, expected = damage(copy)
    with pytest.raises(TfsegError, match=expected):
        make_datasets(config_for(path))


def test_interferogram_source_needs_a_path():
    with pytest.raises(ValueError, match="source 'interferograms' reads folders: set path"):
        DataConfig(source="interferograms")


@pytest.mark.slow
def test_training_on_folders_and_a_truncated_frame_exit_cleanly(copy, tmp_path, write_yaml):
    config = {**TINY_CONFIG, "data": {**TINY_CONFIG["data"], "source": "interferograms",
                                      "path": str(copy), "val_fraction": 0.25}}
    config["data"].pop("synthetic")
    config["export"] = {"saved_model": False, "onnx": False}
    path = write_yaml(config)
    result = run_module("tfseg.train", "--config", path, "--run-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["frames"] == 3 and metrics["skipped_frames"] == []

    expected = damage_truncate(copy / "sequence_001")
    result = run_module("tfseg.train", "--config", path, "--run-dir", tmp_path / "bad")
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr
