"""CamVid readers: pairing, RGB decoding, void -> ignore, colour tables, class weights."""

import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from conftest import run_module

from tfseg.data import camvid
from tfseg.tasks.losses import class_pixel_counts, linknet_class_weights
from tfseg.utils.errors import TfsegError

SHARED = Path(__file__).parents[2].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "camvid").is_dir(),
                                  reason=f"real CamVid data not found at {SHARED / 'camvid'}")


def write_segnet(root, split="train", names=("b", "a", "c"), size=(12, 16), seed=0):
    """A SegNet-layout split of random images and label ids 0..11 (void included)."""
    rng = np.random.default_rng(seed)
    for folder in (split, f"{split}annot"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name in names:
        cv2.imwrite(str(root / split / f"{name}.png"), rng.integers(0, 256, (*size, 3), np.uint8))
        labels = rng.integers(0, 12, size, np.uint8)
        labels[0, 0] = camvid.CAMVID_VOID_ID
        cv2.imwrite(str(root / f"{split}annot" / f"{name}.png"), labels)
    return root


def examples(dataset):
    return [(image.numpy(), mask.numpy()) for image, mask in dataset]


def test_segnet_pairs_by_name_decodes_rgb_and_maps_void_to_ignore(tmp_path):
    root = write_segnet(tmp_path)
    got = examples(camvid.read_segnet(root, "train"))
    assert len(got) == 3
    for name, (image, mask) in zip(("a", "b", "c"), got):    # file-name order
        bgr = cv2.imread(str(root / "train" / f"{name}.png"))
        labels = cv2.imread(str(root / "trainannot" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert image.dtype == np.float32 and mask.dtype == np.uint8
        np.testing.assert_array_equal(image, bgr[..., ::-1])     # RGB, not OpenCV's BGR
        np.testing.assert_array_equal(mask, np.where(labels == 11, 255, labels))
        assert mask[0, 0] == 255


def test_segnet_ignore_label_is_configurable_and_checked(tmp_path):
    root = write_segnet(tmp_path)
    _, mask = examples(camvid.read_segnet(root, "train", ignore_label=11))[0]
    assert mask[0, 0] == 11 and mask.max() == 11
    for bad in (5, 256, True):
        with pytest.raises(ValueError, match="ignore_label"):
            camvid.read_segnet(root, "train", ignore_label=bad)


@needs_shared
def test_real_camvid_pair_matches_opencv(tmp_path):
    for folder in ("val", "valannot"):
        (tmp_path / folder).mkdir()
        for path in sorted((SHARED / "camvid" / folder).iterdir())[:2]:
            shutil.copy(path, tmp_path / folder)
    for (image, mask), path in zip(examples(camvid.read_segnet(tmp_path, "val")),
                                   sorted((tmp_path / "val").iterdir())):
        assert image.shape == (360, 480, 3)
        np.testing.assert_array_equal(image, cv2.imread(str(path))[..., ::-1])
        labels = cv2.imread(str(tmp_path / "valannot" / path.name), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(mask, np.where(labels == 11, 255, labels))


def _missing_annotation(root):
    (root / "trainannot" / "a.png").unlink()
    return root / "train" / "a.png"


def _extra_annotation(root):
    shutil.copy(root / "trainannot" / "a.png", root / "trainannot" / "z.png")
    return root / "trainannot" / "z.png"


def _empty_folder(root):
    for path in (root / "train").iterdir():
        path.unlink()
    return root / "train"


def _unknown_file_type(root):
    (root / "train" / "notes.txt").write_text("hello")
    return root / "train" / "notes.txt"


def _label_of_another_size(root):
    cv2.imwrite(str(root / "trainannot" / "b.png"), np.zeros((12, 15), np.uint8))
    return root / "trainannot" / "b.png"


def _label_id_out_of_range(root):
    labels = np.zeros((12, 16), np.uint8)
    labels[3, 4] = 12
    cv2.imwrite(str(root / "trainannot" / "c.png"), labels)
    return root / "trainannot" / "c.png"


def _colour_label(root):
    cv2.imwrite(str(root / "trainannot" / "b.png"), np.zeros((12, 16, 3), np.uint8))
    return root / "trainannot" / "b.png"


def _sixteen_bit_label(root):   # tf.io.decode_png would silently read it as all zeros
    cv2.imwrite(str(root / "trainannot" / "b.png"), np.full((12, 16), 3, np.uint16))
    return root / "trainannot" / "b.png"


def _unreadable_image(root):
    (root / "train" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return root / "train" / "b.png"


def _missing_split(root):
    shutil.rmtree(root / "trainannot")
    return root / "trainannot"


@pytest.mark.parametrize("break_data", [
    _missing_annotation, _extra_annotation, _empty_folder, _unknown_file_type,
    _label_of_another_size, _label_id_out_of_range, _colour_label, _sixteen_bit_label,
    _unreadable_image, _missing_split])
def test_segnet_bad_input_raises_naming_the_file(tmp_path, break_data):
    root = write_segnet(tmp_path)
    bad_path = break_data(root)
    with pytest.raises(TfsegError, match=str(bad_path)):
        camvid.read_segnet(root, "train")


TABLE_TEXTS = {
    "label_colors.txt": "64 128 64\tAnimal\n128 0 0\tBuilding\n0 0 0\tVoid\n192 0 128\tArchway\n",
    "rgb_name.csv": "# r,g,b,name\n64,128,64,Animal\n128,0,0,Building\n0,0,0,Void\n"
                    "192,0,128,Archway\n",
    "class_dict.csv": "name,r,g,b\nAnimal,64,128,64\nBuilding,128,0,0\n\nVoid,0,0,0\n"
                      "Archway,192,0,128\n",
}


@pytest.mark.parametrize("file_name", sorted(TABLE_TEXTS))
def test_colour_table_formats_read_alike(tmp_path, file_name):
    path = tmp_path / file_name
    path.write_text(TABLE_TEXTS[file_name])
    table = camvid.read_colour_table(path)
    assert table.class_names == ("Animal", "Building", "Archway")
    assert table.void_id == 3
    np.testing.assert_array_equal(table.colours,
                                  [[64, 128, 64], [128, 0, 0], [0, 0, 0], [192, 0, 128]])
    np.testing.assert_array_equal(table.ids, [0, 1, 3, 2])


@pytest.mark.parametrize("text, message", [
    ("1 2 3 A\n1 2 x B\n", r":2: expected"),
    ("1,2,3,A\n4,5,256,B\n", r":2: expected"),
    ("1 2 3 A\n1 2 3 B\n", "repeat a name or a colour"),
    ("1 2 3 A\n4 5 6 a\n", "repeat a name or a colour"),
    ("# nothing\n", "no colour entries"),
])
def test_colour_table_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "colours.txt"
    path.write_text(text)
    with pytest.raises(TfsegError, match=f"{path}.*{message}"):
        camvid.read_colour_table(path)


def test_colours_to_ids_matches_numpy_reference_with_unknown_colours():
    table = camvid.CAMVID_COLOURS
    rng = np.random.default_rng(1)
    known = table.colours[rng.integers(0, len(table.colours), (20, 30))]
    unknown = rng.integers(0, 256, (20, 30, 3), np.uint8)
    label = np.where(rng.random((20, 30, 1)) < 0.2, unknown, known).astype(np.uint8)
    lookup = {tuple(c): i for c, i in zip(table.colours.tolist(), table.ids.tolist())}
    reference = np.array([[lookup.get(tuple(c), table.void_id) for c in row]
                          for row in label.tolist()], np.uint8)
    assert (reference == table.void_id).sum() > 100     # unknown colours are exercised
    ids = camvid.colours_to_ids(label, table).numpy()
    assert ids.dtype == np.uint8
    np.testing.assert_array_equal(ids, reference)


def test_colour_coded_reader_maps_colours_and_unknown_to_ignore(tmp_path):
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
    table_path = tmp_path / "class_dict.csv"
    table_path.write_text(TABLE_TEXTS["class_dict.csv"])
    colours = np.array([[64, 128, 64], [128, 0, 0], [0, 0, 0], [192, 0, 128], [1, 2, 3]],
                       np.uint8)   # Animal, Building, Void, Archway, unknown
    rng = np.random.default_rng(2)
    picks = rng.integers(0, 5, (10, 14))
    image = rng.integers(0, 256, (10, 14, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "images" / "f001.png"), image)
    cv2.imwrite(str(tmp_path / "labels" / "f001_L.png"), colours[picks][..., ::-1])   # BGR
    (got_image, mask), = examples(camvid.read_colour_coded(
        tmp_path / "images", tmp_path / "labels", camvid.read_colour_table(table_path)))
    np.testing.assert_array_equal(got_image, image[..., ::-1])
    np.testing.assert_array_equal(mask, np.array([0, 1, 255, 2, 255], np.uint8)[picks])


def test_colour_coded_reader_rejects_grey_labels(tmp_path):
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
    cv2.imwrite(str(tmp_path / "images" / "f001.png"), np.zeros((4, 4, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "labels" / "f001_L.png"), np.zeros((4, 4), np.uint8))
    with pytest.raises(TfsegError, match="f001_L.png: 8-bit PNG with 1 channel"):
        camvid.read_colour_coded(tmp_path / "images", tmp_path / "labels",
                                 camvid.CAMVID_COLOURS)


def test_class_counts_and_linknet_weights_match_hand_computed_values(tmp_path):
    root = tmp_path
    for folder in ("train", "trainannot"):
        (root / folder).mkdir()
    labels = np.array([[0, 0, 0, 1], [0, 0, 1, 11], [11, 11, 0, 11]], np.uint8)
    cv2.imwrite(str(root / "train" / "x.png"), np.zeros((3, 4, 3), np.uint8))
    cv2.imwrite(str(root / "trainannot" / "x.png"), labels)
    counts = class_pixel_counts(camvid.read_segnet(root, "train"), 3)
    np.testing.assert_array_equal(counts, [6, 2, 0])    # void (4 pixels) is not counted
    # p = (0.75, 0.25, 0): 1 / ln(1.77), 1 / ln(1.27), 1 / ln(1.02); log2 versions likewise.
    np.testing.assert_allclose(linknet_class_weights(counts),
                               [1.751376, 4.183805, 50.498350], rtol=1e-6)
    np.testing.assert_allclose(linknet_class_weights(counts, log="log2"),
                               [1.213961, 2.899992, 35.002789], rtol=1e-6)
    with pytest.raises(ValueError, match="log"):
        linknet_class_weights(counts, log="log10")
    with pytest.raises(ValueError, match="counts"):
        linknet_class_weights([0, 0])


# data/README.md, first 50 training labels, as (count, unit of its last printed digit).
README_COUNTS = [(1.65e6, 1e4), (2.24e6, 1e4), (82e3, 1e3), (1.60e6, 1e4), (424e3, 1e3),
                 (1.10e6, 1e4), (108e3, 1e3), (45e3, 1e3), (730e3, 1e3), (54e3, 1e3),
                 (30e3, 1e3)]


@needs_shared
def test_class_counts_of_first_50_training_labels_match_readme(tmp_path):
    for folder in ("train", "trainannot"):
        (tmp_path / folder).mkdir()
        for path in sorted((SHARED / "camvid" / folder).iterdir())[:50]:
            shutil.copy(path, tmp_path / folder)
    counts = class_pixel_counts(camvid.read_segnet(tmp_path, "train"), 11)
    for count, (expected, unit) in zip(counts, README_COUNTS):
        assert abs(count - expected) <= unit / 2, (counts, README_COUNTS)
    weights = linknet_class_weights(counts)
    np.testing.assert_allclose(weights, 1 / np.log(1.02 + counts / counts.sum()), rtol=1e-6)
    assert weights.argmax() == 10 and weights.argmin() == 1   # rarest Bicyclist, Building


def test_normalizations_are_mean_std_pairs_that_a_rescaling_layer_reproduces():
    mean, std = camvid.normalization("imagenet_mean")
    assert mean == [123.68, 116.779, 103.939] and std == [255.0] * 3
    pixels = np.random.default_rng(3).uniform(0, 255, (2, 5, 6, 3)).astype(np.float32)
    for name in camvid.NORMALIZATIONS:
        mean, std = camvid.normalization(name)
        expected = (pixels - np.float32(mean)) / np.float32(std)
        np.testing.assert_allclose(camvid.normalize(pixels, mean, std), expected, atol=1e-6)
        layer = keras.layers.Rescaling(scale=[1 / s for s in std],
                                       offset=[-m / s for m, s in zip(mean, std)])
        np.testing.assert_allclose(layer(pixels), expected, atol=1e-5)
    with pytest.raises(ValueError, match="imagenet_mean"):
        camvid.normalization("imagenet")



@needs_shared
@pytest.mark.slow
def test_camvid_source_trains_on_random_crops(tmp_path, write_yaml):
    """data.source camvid end to end on 4 + 2 real images: 3-channel LinkNet at 11 classes
    on 320x480 crops, validated on whole 360x480 frames with void ignored."""
    for folder, count in (("train", 4), ("trainannot", 4), ("val", 2), ("valannot", 2)):
        (tmp_path / "camvid" / folder).mkdir(parents=True)
        for path in sorted((SHARED / "camvid" / folder).iterdir())[:count]:
            shutil.copy(path, tmp_path / "camvid" / folder)
    config = write_yaml({
        "model": {"name": "linknet", "num_classes": 11, "input_channels": 3},
        "data": {"source": "camvid", "path": str(tmp_path / "camvid"), "height": 360,
                 "width": 480, "class_names": list(camvid.CAMVID_CLASSES),
                 "mean": [123.68, 116.779, 103.939], "std": [255.0, 255.0, 255.0],
                 "augment": {"flip": "horizontal", "crop": [320, 480]}},
        "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "log_images": 2},
        "export": {"parity_runtimes": ["onnxruntime"], "parity_samples": 1}})
    result = run_module("tfseg.train", "--config", config, "--run-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["frames"] == 2 and len(metrics["per_class_iou"]) == 11


def test_resize_frames_brings_other_sizes_to_the_network_size(tmp_path):
    """data.resize_frames: 24x32 frames train a 12x16 network (area images, nearest masks)."""
    from tfseg.config import Config, DataConfig, ModelConfig, TrainConfig
    from tfseg.data.pipeline import make_datasets

    root = tmp_path / "camvid"
    for split in ("train", "val"):
        write_segnet(root, split, size=(24, 32))
    config = Config(model=ModelConfig(name="linknet", num_classes=11, input_channels=3),
                    data=DataConfig(source="camvid", path=str(root), height=12, width=16,
                                    resize_frames=True, mean=[0.0] * 3, std=[1.0] * 3,
                                    class_names=list(camvid.CAMVID_CLASSES)),
                    train=TrainConfig(batch_size=3, steps_per_epoch=1, epochs=1))
    (image, mask), = make_datasets(config).validation.as_numpy_iterator()
    bgr = cv2.imread(str(root / "val" / "a.png"))[..., ::-1].astype(np.float32)
    labels = cv2.imread(str(root / "valannot" / "a.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_allclose(image[0], bgr.reshape(12, 2, 16, 2, 3).mean(axis=(1, 3)),
                               atol=1e-3)
    assert mask.shape == (3, 12, 16) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= set(range(11)) | {255}
    kept = np.where(labels == 11, 255, labels)
    assert np.isin(mask[0], kept).all()   # nearest: every id is one of the frame's own
    with pytest.raises(TfsegError, match="data.resize_frames: true resizes"):
        make_datasets(dataclasses.replace(config, data=dataclasses.replace(
            config.data, resize_frames=False)))
