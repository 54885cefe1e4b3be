"""TFDS builders: built offline from a manual folder in tmp_path, loaded with tfds.load."""

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfseg.data import tfds_builders
from tfseg.data.labels import write_roi_json
from tfseg.utils.errors import TfsegError


def write_image(path, rng, shape, high=256):
    """Writes random uint8 values below `high` with cv2 (colour on disk is BGR)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = rng.integers(0, high, shape, np.uint8)
    cv2.imwrite(str(path), image)
    return image


@pytest.fixture
def camvid_dir(tmp_path):
    """A SegNet-layout manual folder: 3 train and 2 val pairs of 8x10 images."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("val", 2)):
        for index in range(count):
            write_image(tmp_path / "camvid" / split / f"{split}{index}.png", rng, (8, 10, 3))
            write_image(tmp_path / "camvid" / f"{split}annot" / f"{split}{index}.png", rng,
                        (8, 10), high=12)   # ids 0..11, 11 = void
    return tmp_path / "camvid"


def test_camvid_builds_offline_and_loads_with_tfds_load(tmp_path, camvid_dir):
    builder = tfds_builders.prepare("camvid_segnet", manual_dir=camvid_dir,
                                    data_dir=tmp_path / "tfds")
    assert builder.info.splits["train"].num_examples == 3
    assert builder.info.splits["validation"].num_examples == 2
    assert builder.info.features["segmentation_mask"].num_classes == 12
    examples = tfds.load("camvid_segnet", split="validation", data_dir=str(tmp_path / "tfds"),
                         download=False)
    for example in examples:
        name = example["file_name"].numpy().decode()
        assert name in ("val/val0.png", "val/val1.png")
        bgr = cv2.imread(str(camvid_dir / name))
        labels = cv2.imread(str(camvid_dir / name.replace("val/", "valannot/")),
                            cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(example["image"], bgr[..., ::-1])
        np.testing.assert_array_equal(example["segmentation_mask"][..., 0], labels)


def test_sr_images_split_folders_and_decode_bmp_as_rgb(tmp_path):
    rng = np.random.default_rng(1)
    sources = {f"t91/t{i}.bmp": write_image(tmp_path / "sr" / "t91" / f"t{i}.bmp", rng,
                                            (9, 7, 3)) for i in range(2)}
    sources["bsd200/b0.png"] = write_image(tmp_path / "sr" / "bsd200" / "b0.png", rng,
                                           (6, 11, 3))
    set5 = {f"set5/img_00{i}.png": write_image(tmp_path / "sr" / "set5" / f"img_00{i}.png",
                                               rng, (12, 12, 3)) for i in (1, 2)}
    builder = tfds_builders.prepare("sr_images", manual_dir=tmp_path / "sr",
                                    data_dir=tmp_path / "tfds")
    for split, expected in (("train", sources), ("validation", set5)):
        assert builder.info.splits[split].num_examples == len(expected)
        loaded = {example["file_name"].numpy().decode(): example["image"].numpy()
                  for example in builder.as_dataset(split=split)}
        assert loaded.keys() == expected.keys()
        for name, image in loaded.items():
            np.testing.assert_array_equal(image, expected[name][..., ::-1])


def test_bad_manual_folder_raises_naming_the_file(tmp_path, camvid_dir):
    (camvid_dir / "valannot" / "val1.png").unlink()
    with pytest.raises(TfsegError, match=str(camvid_dir / "val" / "val1.png")):
        tfds_builders.prepare("camvid_segnet", manual_dir=camvid_dir, data_dir=tmp_path / "t")
    with pytest.raises(TfsegError, match="no such folder"):
        tfds_builders.prepare("sr_images", manual_dir=tmp_path / "nothing",
                              data_dir=tmp_path / "t")
    with pytest.raises(ValueError, match="camvid_segnet"):
        tfds_builders.prepare("camvid", manual_dir=camvid_dir, data_dir=tmp_path / "t")


def test_interferograms_build_offline_with_frames_and_boxes(tmp_path):
    folder = tmp_path / "interferograms" / "sequence_000"
    rng = np.random.default_rng(2)
    frames = {f"frame_{i}.bmp": write_image(folder / f"frame_{i}.bmp", rng, (12, 16))
              for i in range(3)}
    rois = {"frame_0.bmp": [(1, 2, 3, 4), (5, 6, 2, 2)], "frame_1.bmp": [],
            "frame_2.bmp": [(0, 0, 16, 12)]}
    write_roi_json(folder / "rois.json", list(rois.items()))
    builder = tfds_builders.prepare("interferograms", manual_dir=tmp_path / "interferograms",
                                    data_dir=tmp_path / "tfds")
    assert builder.info.splits["train"].num_examples == 3
    for example in tfds.load("interferograms", split="train", data_dir=str(tmp_path / "tfds"),
                             download=False):
        name = example["file_name"].numpy().decode().split("/")[-1]
        assert example["sequence"].numpy().decode() == "sequence_000"
        np.testing.assert_array_equal(example["frame"][..., 0], frames[name])
        assert [tuple(box) for box in example["boxes"].numpy()] == rois[name]


def test_interferogram_box_outside_the_frame_is_named(tmp_path):
    folder = tmp_path / "interferograms"
    write_image(folder / "frame_0.bmp", np.random.default_rng(3), (12, 16))
    write_roi_json(folder / "rois.json", [("frame_0.bmp", [(10, 2, 8, 4)])])
    with pytest.raises(TfsegError, match=r"rois.json: box .* of frame_0.bmp lies outside"):
        tfds_builders.prepare("interferograms", manual_dir=folder, data_dir=tmp_path / "tfds")
