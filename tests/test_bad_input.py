"""Bad input gets a clear error: exit status 2, one `error:` line naming the file, line or
key and what was expected, no traceback, and nothing written to the run directory. A table
covers each kind of mistake; seeded fuzzing feeds random bytes as images and random YAML as
configs to the readers and accepts only clean `TfsegError`s."""

import json
import random
import re
import string

import cv2
import numpy as np
import pytest
import yaml
from conftest import run_module

from tfseg.cli import run_cli
from tfseg.config import load_config
from tfseg.data import camvid, interferograms
from tfseg.data.labels import write_roi_json, write_yolo
from tfseg.train import main
from tfseg.utils.errors import ConfigError, TfsegError

SIZE = (32, 32)
BOX = (4, 6, 10, 8)
# TensorFlow's start-up lines, written before its log level applies (not tfseg's output).
TENSORFLOW_LOG = re.compile(r"[IWEF]\d{4} |WARNING: All log messages before absl")


# === Tiny data sets and recipes ===

def write_sequence(folder, frames=3, labels="rois"):
    """`frames` random 8-bit 32x32 BMP frames, one box each, labelled by rois.json or YOLO."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    entries = []
    for index in range(frames):
        name = f"frame_{index:04d}.bmp"
        cv2.imwrite(str(folder / name), rng.integers(0, 256, SIZE, np.uint8))
        if labels == "yolo":
            write_yolo(folder / f"frame_{index:04d}.txt", [BOX], *SIZE)
        entries.append((name, [BOX]))
    if labels == "rois":
        write_roi_json(folder / "rois.json", entries)
    return folder


def write_segnet(root, size=SIZE):
    """CamVid in the SegNet layout: 2 training and 1 validation pair of random RGB images
    and label ids 0..11."""
    rng = np.random.default_rng(0)
    for split, names in (("train", ("a", "b")), ("val", ("c",))):
        for folder in (split, f"{split}annot"):
            (root / folder).mkdir(parents=True)
        for name in names:
            cv2.imwrite(str(root / split / f"{name}.png"),
                        rng.integers(0, 256, (*size, 3), np.uint8))
            cv2.imwrite(str(root / f"{split}annot" / f"{name}.png"),
                        rng.integers(0, 12, size, np.uint8))
    return root


def recipe(**data):
    """A one-step interferogram run at 32x32 without exports; `data` updates its section."""
    return {"model": {"name": "linknet", "num_classes": 2, "input_channels": 1},
            "data": {"source": "interferograms", "height": SIZE[0], "width": SIZE[1],
                     "mean": [0.0], "std": [255.0], **data},
            "train": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 1, "log_images": 1},
            "export": {"saved_model": False, "onnx": False}}


def camvid_recipe(path):
    return {"model": {"name": "linknet", "num_classes": 11, "input_channels": 3},
            "data": {"source": "camvid", "path": str(path), "height": SIZE[0],
                     "width": SIZE[1], "class_names": list(camvid.CAMVID_CLASSES),
                     "mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0]},
            "train": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 1, "log_images": 1},
            "export": {"saved_model": False, "onnx": False}}


def write_config(tmp_path, content):
    path = tmp_path / "config.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


# === The table: each case writes its bad input and returns (config, overrides, words) ===
# `words` must all appear in the error line: the file, line or key, and what was expected.

def malformed_yaml(tmp_path):
    config = write_config(tmp_path, "model:\n  name: linknet\ntrain: {epochs: 3\ndata: {}\n")
    return config, [], ["config.yaml:4:", "malformed YAML"]


def config_not_text(tmp_path):
    config = write_config(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    return config, [], ["config.yaml: not a YAML text file", "UTF-8"]


def control_character(tmp_path):
    config = write_config(tmp_path, "train:\n  epochs: 3\x07\n")
    return config, [], ["config.yaml:2:", "character #x0007 is not allowed"]


def unknown_key(tmp_path):
    config = write_config(tmp_path, recipe(path="x") | {"train": {"epoch": 3}})
    return config, [], ["config.yaml: unknown key 'train.epoch'", "did you mean 'train.epochs'?"]


def wrong_type(tmp_path):
    config = write_config(tmp_path, recipe(path="x") | {"train": {"batch_size": "eight"}})
    return config, [], ["config.yaml", "train.batch_size: expected an integer, got 'eight'"]


def wrong_type_override(tmp_path):
    config = write_config(tmp_path, recipe(path="x"))
    return config, ["--set", "train.epochs=many"], [
        "--set train.epochs=many", "train.epochs: expected an integer, got 'many'"]


def out_of_range(tmp_path):
    config = write_config(tmp_path, recipe(path="x", val_fraction=1.5))
    return config, [], ["config.yaml", "section 'data'", "val_fraction=1.5 must be in [0.0, 0.9]"]


def huge_wrong_value(tmp_path):
    config = write_config(tmp_path, recipe(path="x") | {"train": {"epochs": list(range(5000))}})
    return config, [], ["train.epochs: expected an integer, got [0, 1, 2", "...] (list)"]


def missing_data_folder(tmp_path):
    config = write_config(tmp_path, recipe(path=str(tmp_path / "nowhere")))
    return config, [], ["nowhere: no such folder",
                        "expected a folder of frames or of sequence folders"]


def empty_data_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    config = write_config(tmp_path, recipe(path=str(tmp_path / "empty")))
    return config, [], ["empty: no frames found",
                        "expected .bmp/.png/.jpg/.jpeg/.tif/.tiff files"]


def _damaged_sequence(tmp_path, damage, labels="rois"):
    """A config for a sequence whose second frame (not one the background samples) is bad."""
    folder = write_sequence(tmp_path / "seq", labels=labels)
    damage(folder)
    return write_config(tmp_path, recipe(path=str(folder)))


def random_bytes_bmp(tmp_path):
    config = _damaged_sequence(tmp_path, lambda folder: (folder / "frame_0001.bmp").write_bytes(
        np.random.default_rng(1).bytes(3000)))
    return config, [], ["frame_0001.bmp: unreadable or truncated image"]


def random_bytes_png(tmp_path):
    def damage(folder):
        (folder / "frame_0001.bmp").unlink()
        (folder / "frame_0001.png").write_bytes(np.random.default_rng(2).bytes(3000))
        _edit_roi(folder, "frame_0001.bmp", new_name="frame_0001.png")
    config = _damaged_sequence(tmp_path, damage)
    return config, [], ["frame_0001.png: unreadable or truncated image"]


def truncated_png(tmp_path):
    def damage(folder):
        (folder / "frame_0001.bmp").unlink()
        frame = np.random.default_rng(3).integers(0, 256, SIZE, np.uint8)
        data = cv2.imencode(".png", frame)[1].tobytes()
        (folder / "frame_0001.png").write_bytes(data[:len(data) // 2])
        _edit_roi(folder, "frame_0001.bmp", new_name="frame_0001.png")
    config = _damaged_sequence(tmp_path, damage)
    return config, [], ["frame_0001.png: unreadable or truncated image"]


def sixteen_bit_among_eight(tmp_path):
    def damage(folder):
        (folder / "frame_0001.bmp").unlink()
        cv2.imwrite(str(folder / "frame_0001.png"), np.full(SIZE, 40000, np.uint16))
        _edit_roi(folder, "frame_0001.bmp", new_name="frame_0001.png")
    config = _damaged_sequence(tmp_path, damage)
    return config, [], ["frame_0001.png: 16-bit frame in a sequence of 8-bit frames"]


def frame_of_another_size(tmp_path):
    config = _damaged_sequence(tmp_path, lambda folder: cv2.imwrite(
        str(folder / "frame_0002.bmp"), np.zeros((30, 32), np.uint8)))
    return config, [], ["frame_0002.bmp: 30x32 frame in a sequence of 32x32 frames"]


def roi_box_outside_frame(tmp_path):
    config = _damaged_sequence(tmp_path, lambda folder: _edit_roi(
        folder, "frame_0001.bmp", boxes=[[20, 4, 16, 8]]))
    return config, [], ["rois.json: box (x, y, w, h) = (20, 4, 16, 8) of frame_0001.bmp",
                        "lies outside its 32x32 (HxW) frame"]


def yolo_box_outside_frame(tmp_path):
    config = _damaged_sequence(tmp_path, lambda folder: (folder / "frame_0001.txt").write_text(
        "0 0.1 0.5 0.5 0.5\n"), labels="yolo")
    return config, [], ["frame_0001.txt: box (x, y, w, h) = (-5, 8, 16, 16) of frame_0001.bmp",
                        "lies outside its 32x32 (HxW) frame"]


def malformed_rois_json(tmp_path):
    config = _damaged_sequence(tmp_path, lambda folder: (folder / "rois.json").write_text(
        '[["frame_0000.bmp", [[4, 6, 10, 8]]],\n ["frame_0001.bmp", [[4, 6'))
    return config, [], ["rois.json: not a readable JSON ROI list", "line 2"]


def malformed_roi_box(tmp_path):
    config = _damaged_sequence(tmp_path, lambda folder: _edit_roi(
        folder, "frame_0002.bmp", boxes=[[4, 6, 10]]))
    return config, [], ["rois.json: entry 2 (frame_0002.bmp)",
                        "expected a box [x, y, w, h] of 4 integers, got [4, 6, 10]"]


def malformed_yolo_line(tmp_path):
    config = _damaged_sequence(tmp_path, lambda folder: (folder / "frame_0002.txt").write_text(
        "0 0.5 0.5 0.2 0.2\n0 0.5 0.5\n"), labels="yolo")
    return config, [], ["frame_0002.txt:2: expected 'class x_center y_center width height'",
                        "got '0 0.5 0.5'"]


def camvid_label_of_another_size(tmp_path):
    root = write_segnet(tmp_path / "camvid")
    cv2.imwrite(str(root / "trainannot" / "b.png"), np.zeros((16, 32), np.uint8))
    config = write_config(tmp_path, camvid_recipe(root))
    return config, [], ["trainannot/b.png: label is 16x32 (HxW) but its image b.png is 32x32"]


def camvid_label_id_out_of_range(tmp_path):
    root = write_segnet(tmp_path / "camvid")
    cv2.imwrite(str(root / "valannot" / "c.png"), np.full(SIZE, 200, np.uint8))
    config = write_config(tmp_path, camvid_recipe(root))
    return config, [], ["valannot/c.png: label id 200 outside the classes 0..10"]


def camvid_corrupt_image(tmp_path):
    root = write_segnet(tmp_path / "camvid")
    (root / "train" / "a.png").write_bytes(np.random.default_rng(4).bytes(500))
    config = write_config(tmp_path, camvid_recipe(root))
    return config, [], ["train/a.png: unreadable image"]


def camvid_images_not_of_the_configured_size(tmp_path):
    root = write_segnet(tmp_path / "camvid", size=(24, 32))
    config = write_config(tmp_path, camvid_recipe(root))
    return config, [], ["train/a.png: image is 24x32 (HxW)",
                        "expected 32x32 (data.height x data.width; data.resize_frames"]


def run_dir_holds_a_run(tmp_path):
    folder = write_sequence(tmp_path / "seq")
    config = write_config(tmp_path, recipe(path=str(folder)))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("# the earlier run\n")
    return config, [], ["run: already holds a run (config.yaml exists)"]


def run_dir_is_a_file(tmp_path):
    folder = write_sequence(tmp_path / "seq")
    config = write_config(tmp_path, recipe(path=str(folder)))
    (tmp_path / "run").write_text("not a folder\n")
    return config, [], ["run: is a file, not a run directory"]


def _edit_roi(folder, name, *, new_name=None, boxes=None):
    """Renames the rois.json entry of frame `name` or replaces its boxes."""
    rois = json.loads((folder / "rois.json").read_text())
    for entry in rois:
        if entry[0] == name:
            entry[:] = [new_name or name, entry[1] if boxes is None else boxes]
    (folder / "rois.json").write_text(json.dumps(rois))


CASES = [malformed_yaml, config_not_text, control_character, unknown_key, wrong_type,
         wrong_type_override, out_of_range, huge_wrong_value, missing_data_folder,
         empty_data_folder, random_bytes_bmp, random_bytes_png, truncated_png,
         sixteen_bit_among_eight, frame_of_another_size, roi_box_outside_frame,
         yolo_box_outside_frame, malformed_rois_json, malformed_roi_box, malformed_yolo_line,
         camvid_label_of_another_size, camvid_label_id_out_of_range, camvid_corrupt_image,
         camvid_images_not_of_the_configured_size, run_dir_holds_a_run, run_dir_is_a_file]
# Run as a real `python -m tfseg.train` process too (the others run its `main` in-process),
# each 4-5 s: the fast tier keeps an error found before TensorFlow loads and one found
# reading the data.
CLI_CASES = [pytest.param(case, id=case.__name__, marks=() if case in (
    malformed_yaml, camvid_label_id_out_of_range) else pytest.mark.slow) for case in (
    malformed_yaml, unknown_key, missing_data_folder, truncated_png,
    camvid_label_id_out_of_range, run_dir_holds_a_run)]


def files_under(folder):
    """{relative path: bytes} of every file under `folder` (or of `folder`, a file)."""
    if folder.is_file():
        return {".": folder.read_bytes()}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def assert_clean_error(status, stderr, words, run_dir, before):
    """Exit status 2, one `error:` line holding every word, no traceback, and the run
    directory as it was `before` (nothing written)."""
    assert status == 2, stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    for word in words:
        assert word in errors[0], errors[0]
    assert files_under(run_dir) == before
    assert run_dir.exists() == bool(before)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
def test_bad_input_is_refused_cleanly(case, tmp_path, capsys):
    config, overrides, words = case(tmp_path)
    before = files_under(tmp_path / "run")
    status = run_cli(main, ["--config", str(config), "--run-dir", str(tmp_path / "run"),
                            *overrides])
    assert_clean_error(status, capsys.readouterr().err, words, tmp_path / "run", before)


@pytest.mark.parametrize("case", CLI_CASES)
def test_bad_input_is_refused_cleanly_by_the_cli(case, tmp_path):
    config, overrides, words = case(tmp_path)
    before = files_under(tmp_path / "run")
    result = run_module("tfseg.train", "--config", config, "--run-dir", tmp_path / "run",
                        *overrides, timeout=300)
    assert_clean_error(result.returncode, result.stderr, words, tmp_path / "run", before)
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and not TENSORFLOW_LOG.match(line)]
    assert len(lines) == 1, result.stderr   # the error line alone


# === Fuzzing: random bytes as images, random YAML as configs ===

def damaged_images(rng, count):
    """(suffix, bytes) of random bytes, truncated and byte-flipped valid images, in turn."""
    valid = {suffix: cv2.imencode(suffix, rng.integers(0, 256, SIZE, np.uint8))[1].tobytes()
             for suffix in (".bmp", ".png", ".tif")}
    for index in range(count):
        suffix = (".bmp", ".png", ".tif")[index % 3]
        data = valid[suffix]
        kind = index // 3 % 3
        if kind == 0:
            data = rng.bytes(int(rng.integers(0, 400)))
        elif kind == 1:
            data = data[:int(rng.integers(0, len(data)))]
        else:
            data = bytearray(data)
            for position in rng.integers(0, len(data), 8):
                data[position] = rng.integers(0, 256)
            data = bytes(data)
        yield suffix, data


@pytest.mark.timeout(120)
def test_random_bytes_as_frames_give_clean_errors_or_valid_frames(tmp_path):
    rng = np.random.default_rng(0)
    outcomes = set()
    for index, (suffix, data) in enumerate(damaged_images(rng, 90)):
        path = tmp_path / f"frame_{index:03d}{suffix}"
        path.write_bytes(data)
        try:
            frame = interferograms.read_frame(path)
        except TfsegError as error:
            assert str(error) == f"{path}: unreadable or truncated image"
            outcomes.add("error")
            continue
        assert frame.ndim == 2 and frame.dtype in (np.uint8, np.uint16)
        outcomes.add("frame")
    assert outcomes == {"error", "frame"}   # flipped bytes in a BMP can still decode


@pytest.mark.timeout(120)
def test_random_bytes_in_a_sequence_folder_are_named_before_training(tmp_path):
    rng = np.random.default_rng(1)
    for index, (suffix, data) in enumerate(damaged_images(rng, 12)):
        folder = write_sequence(tmp_path / f"seq{index}", labels="yolo")
        (folder / "frame_0001.bmp").unlink()
        (folder / f"frame_0001{suffix}").write_bytes(data)
        frames = interferograms.read_sequence(folder)
        for frame, message in interferograms.frame_problems(frames):
            assert message.startswith(f"{folder / 'frame_0001'}{suffix}: "), message


@pytest.mark.timeout(120)
def test_random_bytes_as_camvid_files_give_clean_errors(tmp_path):
    rng = np.random.default_rng(2)
    errors = 0
    for index, (suffix, data) in enumerate(damaged_images(rng, 18)):
        root = tmp_path / f"camvid{index}"
        write_segnet(root)
        folder = "train" if index % 2 else "trainannot"
        (root / folder / "b.png").write_bytes(data)   # PNG or not, whatever the bytes are
        try:
            camvid.segnet_pairs(root, "train")
        except TfsegError as error:
            assert str(error).startswith(f"{root / folder / 'b.png'}: "), str(error)
            errors += 1
    assert errors >= 15   # only a byte-flipped BMP image (no checksum) still decodes


KEYS = ["model", "data", "train", "export", "name", "epochs", "height", "path", "options",
        "crop", "class_names", "synthetic", "preprocess", "mean", "source", "x", "1", ""]


def random_node(rng, depth=0):
    """A random YAML value: nested mappings (of real and made-up keys), lists and scalars."""
    if depth > 3 or rng.random() < 0.3:
        return rng.choice([rng.randint(-10**6, 10**6), rng.uniform(-1e3, 1e3), True, None,
                           "".join(rng.choices(string.printable, k=rng.randint(0, 8))),
                           float("nan"), float("inf"), [], {}])
    if rng.random() < 0.7:
        return {rng.choice(KEYS): random_node(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    return [random_node(rng, depth + 1) for _ in range(rng.randint(0, 3))]


def random_configs(rng, count):
    """YAML dumps of random documents, random YAML-ish text and random bytes, in turn."""
    for index in range(count):
        kind = index % 4
        if kind == 0:
            yield yaml.safe_dump(random_node(rng))
        elif kind == 1:
            document = yaml.safe_dump(random_node(rng)).splitlines(keepends=True)
            rng.shuffle(document)   # indentation and nesting broken at random
            yield "".join(document)
        elif kind == 2:
            yield "".join(rng.choices(string.printable + ":-[]{}&*!|>'\"#%@`\x07",
                                      k=rng.randint(0, 80)))
        else:
            yield bytes(rng.randrange(256) for _ in range(rng.randint(0, 80)))


@pytest.mark.timeout(120)
def test_random_yaml_gives_clean_config_errors(tmp_path):
    rng = random.Random(0)
    path = tmp_path / "fuzz.yaml"
    errors = 0
    for content in random_configs(rng, 400):
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        try:
            load_config(path)
        except ConfigError as error:
            message = str(error)
            assert message.startswith(str(path)) and "\n" not in message, message
            assert len(message) < 600, message   # values are shortened (all valid keys fit)
            errors += 1
    assert errors > 350   # almost every random document is wrong somewhere


def test_deeply_nested_yaml_is_a_clean_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("train: " + "[" * 2000 + "]" * 2000)
    with pytest.raises(ConfigError, match="deep.yaml: malformed YAML: nested too deeply"):
        load_config(path)
