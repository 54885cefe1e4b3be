"""`data.source: tfds`: the project's TFDS builders, built offline in a temporary data_dir,
read by name through the run's tf.data pipeline, and the errors of a data set that is
missing or does not fit the config."""

import dataclasses
import json
import logging
import re

import cv2
import numpy as np
import pytest
from conftest import run_module, write_hr_images

from tfseg.config import (
    Config,
    DataConfig,
    ModelConfig,
    SuperResolutionDataConfig,
    SyntheticSpec,
    TfdsDataConfig,
    TrainConfig,
    load_config,
)
from tfseg.data import camvid, tfds_builders
from tfseg.data.labels import read_roi_json
from tfseg.data.pipeline import make_datasets
from tfseg.data.preprocess import boxes_to_mask
from tfseg.data.super_resolution import degrade, to_8bit
from tfseg.data.synthetic_folders import write_sequences
from tfseg.utils.errors import ConfigError, TfsegError


@pytest.fixture(scope="module")
def camvid_tfds(tmp_path_factory):
    """(SegNet-layout folder, TFDS data_dir holding camvid_segnet built from it): 4 training
    and 2 validation 32x48 images, label ids 0..11 (11 = void)."""
    root = tmp_path_factory.mktemp("camvid")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for folder in (split, f"{split}annot"):
            (root / "camvid" / folder).mkdir(parents=True)
        for index in range(count):
            cv2.imwrite(str(root / "camvid" / split / f"{index}.png"),
                        rng.integers(0, 256, (32, 48, 3), np.uint8))
            cv2.imwrite(str(root / "camvid" / f"{split}annot" / f"{index}.png"),
                        rng.integers(0, 12, (32, 48), np.uint8))
    tfds_builders.prepare("camvid_segnet", manual_dir=root / "camvid", data_dir=root / "tfds")
    return root / "camvid", root / "tfds"


def camvid_config(source, root, data_dir, **tfds_options):
    """An 11-class LinkNet on 32x48 CamVid frames from `source` ("camvid" or "tfds")."""
    return Config(
        model=ModelConfig(name="linknet", num_classes=11, input_channels=3),
        data=DataConfig(source=source, path=str(root), height=32, width=48,
                        resize_frames=source == "tfds", class_names=list(camvid.CAMVID_CLASSES),
                        mean=[0.0] * 3, std=[1.0] * 3,
                        tfds=TfdsDataConfig(**{"name": "camvid_segnet", "data_dir": str(data_dir),
                                               "ignore_ids": [11], **tfds_options})),
        train=TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2))


def frames_of(batches, count=None):
    """The (image, mask) frames of `batches` (the first `count`), sorted by content: TFDS
    stores examples in the order of their keys' hashes, not the files' names."""
    frames = [pair for images, masks in batches.as_numpy_iterator()
              for pair in zip(images, masks)][:count]
    return sorted(frames, key=lambda frame: frame[0].tobytes())


def assert_same_frames(got, expected):
    assert len(got) == len(expected)
    for (image, mask), (expected_image, expected_mask) in zip(got, expected):
        np.testing.assert_array_equal(image, expected_image)
        np.testing.assert_array_equal(mask, expected_mask)


def test_camvid_from_tfds_gives_the_frames_of_the_camvid_source(camvid_tfds):
    """The same images and masks, void (id 11) given the ignore label through ignore_ids."""
    root, data_dir = camvid_tfds
    from_tfds = make_datasets(camvid_config("tfds", root, data_dir))
    from_folders = make_datasets(camvid_config("camvid", root, data_dir))
    # The training stream shuffles each pass: its first 4 frames are the whole split.
    assert_same_frames(frames_of(from_tfds.train, 4), frames_of(from_folders.train, 4))
    validation = frames_of(from_tfds.validation)
    assert_same_frames(validation, frames_of(from_folders.validation))
    assert all(image.dtype == np.float32 and mask.dtype == np.uint8
               for image, mask in validation)
    assert 255 in np.unique([mask for _, mask in validation])


def test_interferograms_from_tfds_draw_their_boxes_as_masks(tmp_path):
    """The interferograms builder's grey frames and (N, 4) pixel boxes (image_key frame,
    mask_key boxes) become the frames on disk and their boxes drawn as class 1."""
    write_sequences(tmp_path / "folders", SyntheticSpec(height=32, width=48,
                                                        frames_per_sequence=3, fringes=6.0),
                    sequences=1, seed=2)
    tfds_builders.prepare("interferograms", manual_dir=tmp_path / "folders",
                          data_dir=tmp_path / "tfds")
    config = Config(data=DataConfig(
        source="tfds", height=32, width=48, resize_frames=True, mean=[0.0], std=[1.0],
        tfds=TfdsDataConfig(name="interferograms", data_dir=str(tmp_path / "tfds"),
                            train_split="train[:2]", val_split="train[2:]",
                            image_key="frame", mask_key="boxes")),
        train=TrainConfig(epochs=1, steps_per_epoch=2, batch_size=1))
    datasets = make_datasets(config)
    folder = tmp_path / "folders" / "sequence_000"
    rois = read_roi_json(folder / "rois.json")
    expected = sorted(((cv2.imread(str(folder / name), cv2.IMREAD_UNCHANGED)[..., None]
                        .astype(np.float32), boxes_to_mask(rois[name], 32, 48))
                       for name in sorted(rois)), key=lambda frame: frame[0].tobytes())
    got = frames_of(datasets.train, 2) + frames_of(datasets.validation)
    assert_same_frames(sorted(got, key=lambda frame: frame[0].tobytes()), expected)
    assert any(mask.any() for _, mask in got)


def test_sr_images_from_tfds_give_the_pairs_of_hr_folders(tmp_path):
    """Whole validation images as from Set5 folders; training patches of the large images
    only, the small ones skipped and listed, LR computed from HR as for folders."""
    write_hr_images(tmp_path / "sr" / "t91", 2, (20, 24))   # smaller than a patch: skipped
    write_hr_images(tmp_path / "sr" / "bsd200", 3, (40, 44), seed=1)
    write_hr_images(tmp_path / "sr" / "set5", 2, (30, 26), seed=2)
    tfds_builders.prepare("sr_images", manual_dir=tmp_path / "sr", data_dir=tmp_path / "tfds")
    options = SuperResolutionDataConfig(
        train=[str(tmp_path / "sr" / "t91"), str(tmp_path / "sr" / "bsd200")],
        validation=[str(tmp_path / "sr" / "set5")], patch_size=32)
    folders = Config(
        model=ModelConfig(name="sr_johnson", input_channels=3),
        data=DataConfig(source="super_resolution", mean=[0.0] * 3, std=[1.0] * 3,
                        super_resolution=options),
        train=TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, loss="pixel"))
    tfds = dataclasses.replace(folders, data=dataclasses.replace(
        folders.data, source="tfds",
        tfds=TfdsDataConfig(name="sr_images", data_dir=str(tmp_path / "tfds"))))
    from_tfds, from_folders = make_datasets(tfds), make_datasets(folders)
    assert_same_frames(frames_of(from_tfds.validation), frames_of(from_folders.validation))
    assert len(from_tfds.skipped) == len(from_folders.skipped) == 2
    for lr, hr in zip(*next(from_tfds.train.as_numpy_iterator())):
        assert hr.shape == (32, 32, 3) and lr.shape == (8, 8, 3)
        np.testing.assert_array_equal(lr, to_8bit(degrade(hr, 4, blur_sigma=1.0)))


def change(config, resize_frames=True, num_classes=11, **tfds_options):
    """`config` with other data.tfds options, data.resize_frames or number of classes."""
    return dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, num_classes=num_classes),
        data=dataclasses.replace(config.data, resize_frames=resize_frames,
                                 class_names=[f"c{i}" for i in range(num_classes)],
                                 tfds=dataclasses.replace(config.data.tfds, **tfds_options)))


@pytest.mark.parametrize("changes, message", [
    ({"name": "camvid_segnot"}, "data.tfds.name 'camvid_segnot': no such TFDS data set, "
                                "neither registered nor prepared in data_dir {data_dir}"),
    ({"name": "camvid_segnet:9.0.0"}, "data.tfds.name 'camvid_segnet:9.0.0' (data_dir "
                                      "{data_dir}): "),
    ({"val_split": "val"}, "data.tfds.val_split 'val': not a split of camvid_segnet (it has "
                           "train, validation;"),
    ({"mask_key": "labels"}, "data.tfds.mask_key 'labels': camvid_segnet has no such feature "
                             "(it has file_name, image, segmentation_mask)"),
    ({"mask_key": "file_name"}, "data.tfds.mask_key 'file_name': a feature of shape () is "
                                "neither a mask"),
    ({"ignore_ids": []}, "camvid_segnet's segmentation_mask has 12 labels but "
                         "model.num_classes is 11: list ids [11] in data.tfds.ignore_ids"),
    ({"num_classes": 9}, "list ids [9, 10] in data.tfds.ignore_ids"),
    ({"resize_frames": False}, "camvid_segnet's frames are of no fixed size, not 32x48 "
                               "(data.height x data.width); data.resize_frames: true"),
])
def test_a_data_set_that_does_not_fit_the_config_is_named(camvid_tfds, changes, message):
    root, data_dir = camvid_tfds
    with pytest.raises(TfsegError) as caught:
        make_datasets(change(camvid_config("tfds", root, data_dir), **changes))
    assert message.format(data_dir=data_dir) in str(caught.value)


def test_a_data_set_not_prepared_is_one_error_naming_it_and_its_data_dir(tmp_path, caplog):
    """Never downloaded; and TFDS's own warning about the missing folder is not printed."""
    config = camvid_config("tfds", "", tmp_path / "empty")
    with caplog.at_level(logging.WARNING), pytest.raises(TfsegError) as caught:
        make_datasets(config)
    assert str(caught.value) == (
        f"data.tfds.name 'camvid_segnet': not prepared in data_dir {tmp_path / 'empty'}; "
        f"tfseg never downloads: build it there first (tfds build, or "
        f"tfseg.data.tfds_builders.prepare for the project's builders)")
    assert not caplog.records and not (tmp_path / "empty").exists()


def test_an_image_of_other_channels_is_refused(camvid_tfds):
    root, data_dir = camvid_tfds
    config = camvid_config("tfds", root, data_dir)
    grey = dataclasses.replace(config, model=dataclasses.replace(config.model, input_channels=1),
                               data=dataclasses.replace(config.data, mean=[0.0], std=[1.0]))
    with pytest.raises(TfsegError, match=r"data.tfds.image_key 'image': camvid_segnet's images "
                                         r"have shape \(None, None, 3\), not \(H, W, 1\)"):
        make_datasets(grey)


@pytest.mark.parametrize("data, message", [
    ({"source": "tfds"}, "section 'data': source 'tfds' reads a TFDS data set: set tfds.name"),
    ({"source": "tfds", "tfds": {"name": "x", "val_split": ""}},
     "section 'data.tfds': val_split must not be empty"),
    ({"source": "tfds", "tfds": {"name": "x", "ignore_ids": [256]}},
     "section 'data.tfds': ignore_ids=[256] must be in [0, 255]"),
])
def test_tfds_options_are_checked_with_the_config(write_yaml, data, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(write_yaml({"data": data}))


@pytest.mark.slow
def test_train_command_trains_on_a_tfds_data_set(camvid_tfds, tmp_path, write_yaml):
    """Two steps of `python -m tfseg.train` on camvid_segnet read by name; a data set missing
    from the data_dir is one line naming it and the data_dir, and leaves no run behind."""
    root, data_dir = camvid_tfds
    config = write_yaml({
        "model": {"name": "linknet", "num_classes": 11, "input_channels": 3,
                  "options": {"width": 0.5}},
        "data": {"source": "tfds", "height": 32, "width": 48, "resize_frames": True,
                 "class_names": list(camvid.CAMVID_CLASSES), "mean": [0.0] * 3,
                 "std": [255.0] * 3,
                 "tfds": {"name": "camvid_segnet", "data_dir": str(data_dir),
                          "ignore_ids": [11]}},
        "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "log_images": 1},
        "export": {"saved_model": False, "onnx": False}})
    result = run_module("tfseg.train", "--config", config, "--run-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["frames"] == 2 and len(metrics["per_class_iou"]) == 11
    missing = run_module("tfseg.train", "--config", config, "--run-dir", tmp_path / "other",
                         "--set", f"data.tfds.data_dir={tmp_path / 'nothing'}")
    # What TensorFlow prints while it loads (its C++ notices) aside, stderr is one error line.
    lines = [line for line in missing.stderr.splitlines()
             if not re.match(r"[IWE]\d{4} |WARNING: All log messages before absl", line)]
    assert missing.returncode == 2 and len(lines) == 1, missing.stderr
    assert lines[0].startswith("error: data.tfds.name 'camvid_segnet': not prepared in "
                               f"data_dir {tmp_path / 'nothing'}; tfseg never downloads")
    assert not (tmp_path / "other").exists()
