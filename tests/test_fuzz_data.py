"""A fuzz table over the data readers (issue 19, parts 3-5): every damaged rois.json, YOLO file,
frame folder, CamVid folder and config file is refused in one line naming the file (and entry,
line or key) and what was expected, or, with `data.bad_frames: skip`, read as if the bad frame
were not there; no reader changes a file it reads."""

import hashlib
import json
import os

import cv2
import numpy as np
import pytest
from conftest import assert_one_line_error, run_module

from tfseg.config import Config, DataConfig, PreprocessConfig, load_config
from tfseg.data import camvid, interferograms, labels
from tfseg.data.pipeline import split_interferograms
from tfseg.data.preprocess import Preprocessing
from tfseg.utils.errors import TfsegError

FRAME = (32, 32)
BOX = [4, 4, 8, 8]
NAMES = [f"frame_{index:04d}.bmp" for index in range(6)]


def write_frames(folder, label_format="rois"):
    """Six random 8-bit 32x32 BMP frames, one box each, labelled by rois.json or YOLO."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in NAMES:
        cv2.imwrite(str(folder / name), rng.integers(0, 256, FRAME, np.uint8))
        if label_format == "yolo":
            labels.write_yolo((folder / name).with_suffix(".txt"), [BOX], *FRAME)
    if label_format == "rois":
        labels.write_roi_json(folder / labels.ROI_FILE, [(name, [BOX]) for name in NAMES])
    return folder


def data_config(path, **data):
    defaults = {"source": "interferograms", "path": str(path), "height": 16, "width": 16,
                "val_fraction": 0.25, "preprocess": PreprocessConfig(background_every=2)}
    return Config(data=DataConfig(**{**defaults, **data}))


def split(path, **data):
    """`split_interferograms` of `path`: (train paths, validation paths, skipped, backgrounds)."""
    config = data_config(path, **data)
    skipped = []
    train, validation, backgrounds = split_interferograms(
        config.data, Preprocessing.from_config(config), skipped)
    return ([f.path.name for f in train], [f.path.name for f in validation], skipped,
            backgrounds)


def write_json(path, data):
    path.write_text(data if isinstance(data, str) else json.dumps(data))


# --- rois.json ---

def rois_listed_twice(folder):
    write_json(folder / "rois.json", [[name, [BOX]] for name in NAMES] + [[NAMES[1], []]])
    return split, "rois.json: entry 6: frame 'frame_0001.bmp' is listed twice"


def rois_mapping_key_twice(folder):
    entries = ", ".join(f'"{name}": [{BOX}]' for name in NAMES)
    write_json(folder / "rois.json", "{" + entries + f', "{NAMES[2]}": []' + "}")
    return split, "rois.json: frame 'frame_0002.bmp' is listed twice"


def rois_mapping_boxes_not_a_list(folder):
    write_json(folder / "rois.json", {**{name: [BOX] for name in NAMES}, NAMES[3]: 5})
    return split, "rois.json: frame 'frame_0003.bmp': expected a list of boxes"


def rois_mapping_box_of_floats(folder):
    write_json(folder / "rois.json", {**{name: [BOX] for name in NAMES}, NAMES[0]: [[1.5] * 4]})
    return split, "frame 'frame_0000.bmp': expected a box [x, y, w, h] of 4 integers"


def rois_not_json(folder):
    write_json(folder / "rois.json", "[[\"frame_0000.bmp\", [[1, 2")
    return split, "rois.json: not a readable JSON ROI list"


def rois_a_number(folder):
    write_json(folder / "rois.json", "7")
    return split, "rois.json: expected a list of [frame file, boxes] pairs or a mapping"


def rois_entry_of_three(folder):
    write_json(folder / "rois.json", [[NAMES[0], [BOX], 1]])
    return split, "rois.json: entry 0: expected [frame file, [[x, y, w, h], ...]]"


def rois_box_of_three(folder):
    write_json(folder / "rois.json", [[name, [BOX[:3]]] for name in NAMES])
    return split, "rois.json: entry 0 (frame_0000.bmp): expected a box [x, y, w, h] of 4"


def rois_box_outside(folder):
    write_json(folder / "rois.json", [[name, [[30, 4, 8, 8]]] for name in NAMES])
    return split, "rois.json: box (x, y, w, h) = (30, 4, 8, 8) of frame_0000.bmp lies outside"


def rois_unknown_frame(folder):
    write_json(folder / "rois.json", [[name, [BOX]] for name in NAMES + ["ghost.bmp"]])
    return split, "rois.json: lists 'ghost.bmp', which is not a frame in"


def rois_frame_not_labelled(folder):
    write_json(folder / "rois.json", [[name, [BOX]] for name in NAMES[1:]])
    return split, "frame_0000.bmp: not labelled in"


def rois_binary(folder):
    (folder / "rois.json").write_bytes(b"\xff\xfe\x00junk")
    return split, "rois.json: not a readable JSON ROI list"


# --- YOLO files ---

def yolo(damage):
    """A case on a YOLO-labelled folder: `damage(folder)` returns the expected message."""
    def case(folder):
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
        write_frames(folder, "yolo")
        return split, damage(folder)
    case.__name__ = damage.__name__
    return case


def yolo_class_nan(folder):
    (folder / "frame_0002.txt").write_text("0 0.5 0.5 0.1 0.1\nnan 0.5 0.5 0.1 0.1\n")
    return "frame_0002.txt:2: class id must be 0 (boxes mark the one sample class), got 'nan'"


def yolo_class_seven(folder):
    (folder / "frame_0001.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    return "frame_0001.txt:1: class id must be 0 (boxes mark the one sample class), got '7'"


def yolo_class_negative(folder):
    (folder / "frame_0001.txt").write_text("-1 0.5 0.5 0.1 0.1\n")
    return "frame_0001.txt:1: class id must be 0"


def yolo_coordinate_above_one(folder):
    (folder / "frame_0003.txt").write_text("0 1.5 0.5 0.1 0.1\n")
    return "frame_0003.txt:1: coordinates must be normalised to 0..1"


def yolo_coordinate_nan(folder):
    (folder / "frame_0003.txt").write_text("0 nan 0.5 0.1 0.1\n")
    return "frame_0003.txt:1: coordinates must be normalised to 0..1"


def yolo_four_fields(folder):
    (folder / "frame_0000.txt").write_text("0 0.5 0.5 0.1\n")
    return "frame_0000.txt:1: expected 'class x_center y_center width height'"


def yolo_missing(folder):
    (folder / "frame_0004.txt").unlink()
    return "frame_0004.bmp: no YOLO label file frame_0004.txt beside it"


def yolo_not_text(folder):
    (folder / "frame_0004.txt").write_bytes(b"\xff\xfe\x00")
    return "frame_0004.txt: not a readable YOLO label file"


# --- frames ---

def frame_fifo(folder):
    (folder / NAMES[2]).unlink()
    os.mkfifo(folder / NAMES[2])
    return split, "frame_0002.bmp: not a regular file (a FIFO, device, socket or folder)"


def frame_empty(folder):
    (folder / NAMES[2]).write_bytes(b"")
    return split, "frame_0002.bmp: unreadable or truncated image"


def frame_corrupt(folder):
    data = bytearray((folder / NAMES[3]).read_bytes())
    (folder / NAMES[3]).write_bytes(bytes(data[:40]))
    return split, "frame_0003.bmp: unreadable or truncated image"


def frame_wrong_size(folder):
    cv2.imwrite(str(folder / NAMES[4]), np.zeros((30, 32), np.uint8))
    return split, "frame_0004.bmp: 30x32 frame in a sequence of 32x32 frames"


def frame_sixteen_bit(folder):
    (folder / NAMES[4]).unlink()
    cv2.imwrite(str(folder / "frame_0004.png"), np.zeros(FRAME, np.uint16))
    write_json(folder / "rois.json", [[path, [BOX]] for path in
                                      NAMES[:4] + ["frame_0004.png"] + NAMES[5:]])
    return split, "frame_0004.png: 16-bit frame in a sequence of 8-bit frames"


def frame_unknown_type(folder):
    (folder / "notes.doc").write_text("x")
    return split, "notes.doc: unknown file type in a frame folder"


def frame_folder_empty(folder):
    for path in folder.iterdir():
        path.unlink()
    return split, "no frames found"


def frame_crop_outside(folder):
    def call(path):
        return split(path, preprocess=PreprocessConfig(crop=[0, 0, 40, 8]))
    return call, "frame_0000.bmp: crop region (x, y, w, h) = (0, 0, 40, 8) reaches outside"


# --- data.bad_frames: skip ---

def skip_everything_bad(folder, **data):
    for name in NAMES:
        (folder / name).write_bytes(b"junk")

    def call(path):
        return split(path, bad_frames="skip", **data)
    return call, (f"{folder}: no usable frame left, every frame is bad and skipped "
                  f"(data.bad_frames: skip); the first: {folder / NAMES[0]}: unreadable")


def skip_everything_bad_with_background(folder):
    return skip_everything_bad(folder, preprocess=PreprocessConfig(background_every=2,
                                                                   blur=3))


def skip_everything_bad_without_background(folder):
    return skip_everything_bad(folder, preprocess=PreprocessConfig(background_every=0))


def skip_every_validation_frame_bad(folder):
    validation = write_frames(folder.parent / "validation")
    for name in NAMES:
        (validation / name).write_bytes(b"")

    def call(path):
        return split(path, bad_frames="skip", val_path=str(validation))
    return call, f"{validation}: no usable frame left, every frame is bad and skipped"


def skip_crop_outside_every_frame(folder):
    def call(path):
        return split(path, bad_frames="skip", preprocess=PreprocessConfig(crop=[0, 0, 40, 8]))
    return call, "no usable frame left, every frame is bad and skipped (data.bad_frames: skip)"


# --- CamVid (SegNet layout) ---

def write_segnet(root, top_id=4):
    """A SegNet-layout train split of 2 random pairs, ids 0..top_id and void (11)."""
    rng = np.random.default_rng(0)
    for sub in ("train", "trainannot"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name in ("a", "b"):
        cv2.imwrite(str(root / "train" / f"{name}.png"),
                    rng.integers(0, 256, (*FRAME, 3), np.uint8))
        ids = rng.integers(0, top_id + 1, FRAME, np.uint8)
        ids[0, 0] = camvid.CAMVID_VOID_ID
        cv2.imwrite(str(root / "trainannot" / f"{name}.png"), ids)
    return root


def segnet(num_classes):
    def call(root):
        return camvid.segnet_pairs(root, "train", FRAME, num_classes)
    return call


def camvid_id_at_num_classes(folder):
    write_segnet(folder, top_id=4)
    return segnet(4), "trainannot/a.png: label id 4 outside the classes 0..3 (model.num_classes 4)"


def camvid_id_above_void(folder):
    write_segnet(folder)
    cv2.imwrite(str(folder / "trainannot" / "b.png"), np.full(FRAME, 12, np.uint8))
    return segnet(11), "trainannot/b.png: label id 12 outside the classes 0..10"


def camvid_id_between_classes_and_void(folder):
    write_segnet(folder)
    cv2.imwrite(str(folder / "trainannot" / "b.png"), np.full(FRAME, 7, np.uint8))
    return segnet(5), "trainannot/b.png: label id 7 outside the classes 0..4"


def camvid_missing_annotation(folder):
    write_segnet(folder)
    (folder / "trainannot" / "a.png").unlink()
    return segnet(11), "train/a.png: no annotation"


def camvid_label_of_another_size(folder):
    write_segnet(folder)
    cv2.imwrite(str(folder / "trainannot" / "a.png"), np.zeros((16, 32), np.uint8))
    return segnet(11), "trainannot/a.png: label is 16x32 (HxW) but its image a.png is 32x32"


def camvid_fifo_image(folder):
    write_segnet(folder)
    (folder / "train" / "a.png").unlink()
    os.mkfifo(folder / "train" / "a.png")   # not an image file: its annotation has none
    return segnet(11), "trainannot/a.png: annotation without an image"


# --- config files ---

def config(text):
    def case(folder):
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(text)
        return lambda path: load_config(path / "config.yaml"), None
    return case


def config_key_twice(folder):
    call, _ = config("train:\n  epochs: 2\n  batch_size: 1\n  epochs: 3\n")(folder)
    return call, "config.yaml:4:3: malformed YAML: duplicate key 'epochs' (first on line 2)"


def config_section_twice(folder):
    call, _ = config("train:\n  epochs: 2\ndata:\n  height: 64\ntrain:\n  batch_size: 3\n")(
        folder)
    return call, "config.yaml:5:1: malformed YAML: duplicate key 'train' (first on line 1)"


def config_nested_key_twice(folder):
    call, _ = config("data:\n  preprocess:\n    blur: 3\n    blur: 5\n")(folder)
    return call, "config.yaml:4:5: malformed YAML: duplicate key 'blur' (first on line 3)"


def config_flow_key_twice(folder):
    call, _ = config("data: {height: 64, height: 32}\n")(folder)
    return call, "config.yaml:1:20: malformed YAML: duplicate key 'height' (first on line 1)"


def config_unknown_key(folder):
    call, _ = config("train:\n  epoch: 2\n")(folder)
    return call, "train.epoch"


def config_not_yaml(folder):
    call, _ = config("train: [1, 2\n")(folder)
    return call, "config.yaml:2:1: malformed YAML"


CASES = [rois_listed_twice, rois_mapping_key_twice, rois_mapping_boxes_not_a_list,
         rois_mapping_box_of_floats, rois_not_json, rois_a_number, rois_entry_of_three,
         rois_box_of_three, rois_box_outside, rois_unknown_frame, rois_frame_not_labelled,
         rois_binary, *map(yolo, [yolo_class_nan, yolo_class_seven, yolo_class_negative,
                                   yolo_coordinate_above_one, yolo_coordinate_nan,
                                   yolo_four_fields, yolo_missing, yolo_not_text]),
         frame_fifo, frame_empty, frame_corrupt, frame_wrong_size, frame_sixteen_bit,
         frame_unknown_type, frame_folder_empty, frame_crop_outside,
         skip_everything_bad_with_background, skip_everything_bad_without_background,
         skip_every_validation_frame_bad, skip_crop_outside_every_frame,
         camvid_id_at_num_classes, camvid_id_above_void, camvid_id_between_classes_and_void,
         camvid_missing_annotation, camvid_label_of_another_size, camvid_fifo_image,
         config_key_twice, config_section_twice, config_nested_key_twice,
         config_flow_key_twice, config_unknown_key, config_not_yaml]


def snapshot(root):
    """{path: sha256} of every regular file under `root` (FIFOs are never opened)."""
    return {path: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.mark.timeout(60)   # a FIFO read would block forever
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
def test_damaged_data_is_refused_in_one_line_naming_the_file(tmp_path, case):
    folder = tmp_path / "data" / "sequence"
    if not case.__name__.startswith(("camvid", "config")):
        write_frames(folder)
    call, expected = case(folder)
    before = snapshot(tmp_path)
    with pytest.raises(TfsegError) as raised:
        call(folder)
    message = str(raised.value)
    assert "\n" not in message and str(tmp_path) in message, message
    assert expected in message, message
    assert snapshot(tmp_path) == before


def test_the_table_holds_at_least_thirty_cases():
    assert len(CASES) >= 30


def test_rois_as_a_mapping_read_like_the_list_of_pairs(tmp_path):
    listed = write_frames(tmp_path / "listed")
    mapped = write_frames(tmp_path / "mapped")
    write_json(mapped / "rois.json", {name: [BOX, [0, 0, 2, 3]] if name == NAMES[1] else [BOX]
                                      for name in NAMES})
    write_json(listed / "rois.json", [[name, [BOX, [0, 0, 2, 3]] if name == NAMES[1] else [BOX]]
                                      for name in NAMES])
    assert labels.read_roi_json(mapped / "rois.json") == labels.read_roi_json(
        listed / "rois.json")
    assert labels.read_roi_json(mapped / "rois.json")[NAMES[1]] == [tuple(BOX), (0, 0, 2, 3)]
    assert split(mapped)[:3] == split(listed)[:3]


@pytest.mark.parametrize("damage", [
    lambda path: path.write_bytes(b""),
    lambda path: path.write_bytes(b"BM" + bytes(60)),
    lambda path: (path.unlink(), os.mkfifo(path)),
    lambda path: cv2.imwrite(str(path), np.zeros((30, 32), np.uint8)),
], ids=["empty", "corrupt", "fifo", "wrong_size"])
@pytest.mark.parametrize("background_every", [0, 2])
@pytest.mark.timeout(60)
def test_skip_reads_a_folder_as_if_the_bad_frame_were_not_there(tmp_path, damage,
                                                                background_every):
    damaged = write_frames(tmp_path / "damaged")
    clean = write_frames(tmp_path / "clean")
    damage(damaged / NAMES[2])
    (clean / NAMES[2]).unlink()
    write_json(clean / "rois.json", [[name, [BOX]] for name in NAMES if name != NAMES[2]])
    preprocess = PreprocessConfig(background_every=background_every, blur=3)
    train, validation, skipped, backgrounds = split(damaged, bad_frames="skip",
                                                    preprocess=preprocess)
    assert skipped == [str(damaged / NAMES[2])]
    clean_train, clean_validation, clean_skipped, clean_backgrounds = split(
        clean, preprocess=preprocess)
    assert (train, validation) == (clean_train, clean_validation) and not clean_skipped
    assert NAMES[2] not in train + validation
    if background_every:
        np.testing.assert_array_equal(backgrounds[damaged], clean_backgrounds[clean])
    else:
        assert backgrounds == {damaged: None}
    with pytest.raises(TfsegError, match="frame_0002.bmp: "):
        split(damaged, bad_frames="error", preprocess=preprocess)


def test_void_and_every_class_below_num_classes_are_accepted(tmp_path):
    root = write_segnet(tmp_path / "camvid", top_id=4)
    assert len(camvid.segnet_pairs(root, "train", FRAME, 5)) == 2


def test_the_same_key_in_two_sections_is_no_duplicate(write_yaml):
    path = write_yaml("data:\n  height: 64\n  width: 64\n  synthetic:\n    height: 64\n"
                      "    width: 64\n    fringes: 8\n")
    assert load_config(path).data.synthetic.height == 64


@pytest.mark.slow
def test_train_refuses_a_duplicate_key_in_one_line(write_yaml):
    path = write_yaml("train:\n  epochs: 2\n  epochs: 3\n")
    assert_one_line_error(run_module("tfseg.train", "--config", path, "--run-dir",
                                     path.parent / "run"),
                          f"{path}:3:3: malformed YAML: duplicate key 'epochs' (first on line "
                          f"2)")
    assert not (path.parent / "run").exists()
