"""Presets (tfseg.runs.presets, tools/make_preset.py, python -m tfseg.presets): a preset made
from a run gives that run's logits in every loading path (predict's runtime, evaluate, export,
train.init_from); unknown names, damaged or mismatched weights and oversize weights are one
line. Presets are made in the test from a tiny run into a temporary folder named by
TFSEG_PRESETS, never into the package."""

import copy
import dataclasses
import json
import re
import shutil

import numpy as np
import pytest
import yaml
from conftest import TINY_CONFIG

from tfseg import export as export_command
from tfseg import presets as presets_command
from tfseg import train as train_command
from tfseg.cli import run_cli
from tfseg.config import Config, from_dict, save_config
from tfseg.models import randomize_batch_norm
from tfseg.runs import presets
from tfseg.utils.errors import TfsegError

METRICS = {"split": "validation", "loss": 0.25, "mean_iou": 0.61, "foreground_iou": 0.42,
           "pixel_accuracy": 0.93, "per_class_iou": {"background": 0.8, "sample": 0.42},
           "epochs": 2, "steps": 4, "best": {"metric": "foreground_iou", "epoch": 1, "step": 2,
                                             "value": 0.45},
           "precision": {"policy": "float32", "reason": "auto: test"},
           "machine": "Test CPU, 2 cores (avx2 fma)", "train_seconds": 12.5,
           "total_seconds": 30.0,
           "history": [{"epoch": 1, "step": 2, "validation_mean_iou": 0.6,
                        "validation_foreground_iou": 0.45},
                       {"epoch": 2, "step": 4, "validation_mean_iou": 0.61,
                        "validation_foreground_iou": 0.42}]}


def tiny_config(**model_options):
    """conftest's tiny run, without the background subtraction (a lone frame predicted is
    its own background)."""
    config = copy.deepcopy(TINY_CONFIG)
    config["data"]["preprocess"] = {"background_every": 0}
    config["model"]["options"].update(model_options)
    return from_dict(Config, config, source="test")


def write_tiny_run(run_dir, config, seed=0):
    """A finished run's folder as the loop leaves it (config.yaml, metrics.json, latest and
    best checkpoints), with random weights: no training needed."""
    import tensorflow as tf

    from tfseg.models.from_config import build_model, training_input_shape

    run_dir.mkdir(parents=True)
    save_config(config, run_dir / "config.yaml")
    (run_dir / "metrics.json").write_text(json.dumps(METRICS))
    model = build_model(config, training_input_shape(config), for_training=True)
    for folder, step in ((run_dir / "checkpoints" / "best", 2), (run_dir / "checkpoints", 4)):
        randomize_batch_norm(model, seed + step)
        tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(folder),
                                   max_to_keep=1).save(checkpoint_number=step)
    return run_dir


@pytest.fixture
def preset_root(tmp_path, monkeypatch):
    """An empty presets folder, searched first (TFSEG_PRESETS)."""
    root = tmp_path / "presets"
    root.mkdir()
    monkeypatch.setenv(presets.ENVIRONMENT, str(root))
    return root


def fake_preset(root, name, description):
    """A preset folder with the registry entry `python -m tfseg.presets` and the refusals read
    and placeholder files: enough for what builds no model."""
    folder = root / name
    folder.mkdir(parents=True)
    for file in presets.FILES:
        (folder / file).write_text(f"# {presets.PREFIX}{name}\n")
    (folder / presets.INFO_NAME).write_text(json.dumps({
        "description": description, "task": "segmentation", "model": "linknet"}))
    return folder


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(run folder, presets root) holding preset:tiny (float32) and preset:tiny16 (float16)
    of one tiny run."""
    from tfseg.runs.preset_maker import make_preset

    tmp = tmp_path_factory.mktemp("presets")
    run_dir = write_tiny_run(tmp / "run", tiny_config())
    root = tmp / "root"
    make_preset(run_dir, "tiny", "A tiny LinkNet for tests", root=root)
    make_preset(run_dir, "tiny16", "The same in float16", root=root, dtype="float16")
    return run_dir, root


@pytest.fixture
def found(made, monkeypatch):
    run_dir, root = made
    monkeypatch.setenv(presets.ENVIRONMENT, str(root))
    return run_dir, root


def frames(config, count=2, seed=1):
    return np.random.default_rng(seed).uniform(0, 40, (
        count, config.data.height, config.data.width, config.model.input_channels)).astype(
        np.float32)


def run_logits(run_dir, images):
    from tfseg.runs.restore import load_run

    _, model = load_run(run_dir)
    return np.asarray(model(images, training=False))


# Fast: no model is built.

def test_unknown_name_is_one_line_listing_the_presets(preset_root):
    (preset_root / "alpha").mkdir()
    (preset_root / "alpha" / "preset.json").write_text('{"description": "first"}')
    with pytest.raises(TfsegError) as caught:
        presets.find_preset("preset:nope")
    assert str(caught.value).startswith("preset:nope: no such preset; the presets are ")
    assert "alpha" in str(caught.value) and "\n" not in str(caught.value)


def test_every_command_refuses_an_unknown_preset_in_one_line(preset_root, tmp_path, capsys):
    from tfseg import evaluate, predict

    commands = [(predict.main, ["--model", "preset:nope", "--input", str(tmp_path),
                                "--output", str(tmp_path / "out")]),
                (evaluate.main, ["--model", "preset:nope", "--output", str(tmp_path / "out")]),
                (export_command.main, ["--model", "preset:nope", "--output",
                                       str(tmp_path / "out")]),
                (train_command.main, ["--set", "train.init_from=preset:nope", "--run-dir",
                                      str(tmp_path / "run")]),
                (presets_command.main, ["nope"])]
    for main, argv in commands:
        assert run_cli(main, argv) == 2, main
        error = capsys.readouterr().err
        assert error.startswith("error: preset:nope: no such preset; ") and error.count(
            "\n") == 1, error
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()


def test_a_folder_of_the_variable_hides_a_packaged_preset_of_the_same_name(tmp_path,
                                                                           monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    for root, text in ((first, "mine"), (second, "theirs")):
        (root / "same").mkdir(parents=True)
        (root / "same" / "preset.json").write_text(json.dumps({"description": text}))
    monkeypatch.setenv(presets.ENVIRONMENT, f"{first}:{second}")
    assert presets.presets()["same"].description == "mine"
    assert presets.preset_folders()[-1].name == "pretrained"


def test_a_preset_missing_a_file_is_one_line(preset_root):
    (preset_root / "half").mkdir()
    (preset_root / "half" / "preset.json").write_text("{}")
    with pytest.raises(TfsegError, match=r"^preset:half: .*config.yaml is missing; reinstall"):
        presets.find_preset("half")


def test_preset_commands_need_an_output_folder(preset_root, tmp_path, capsys):
    from tfseg import evaluate

    fake_preset(preset_root, "tiny", "fake")

    assert run_cli(evaluate.main, ["--model", "preset:tiny"]) == 2
    assert "give --output" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert run_cli(export_command.main, ["--model", "preset:tiny", "--output",
                                         str(tmp_path / "busy")]) == 2
    assert "is not an empty folder or a previous export" in capsys.readouterr().err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_list_shows_each_preset_with_its_description(preset_root, capsys):
    fake_preset(preset_root, "tiny", "A tiny LinkNet for tests")
    fake_preset(preset_root, "tiny16", "The same in float16")
    assert presets_command.main([]) == 0
    out = capsys.readouterr().out
    # Names are padded to the longest, packaged presets included.
    assert re.search(r"^preset:tiny +A tiny LinkNet for tests \(segmentation, linknet;", out,
                     re.MULTILINE)
    assert re.search(r"^preset:tiny16 +The same in float16", out, re.MULTILINE)
    assert presets_command.main(["tiny"]) == 0
    assert capsys.readouterr().out.startswith("# preset:tiny\n")


def test_make_preset_refuses_a_folder_that_is_not_a_finished_run(tmp_path):
    with pytest.raises(TfsegError, match="no config.yaml; expected a finished tfseg run"):
        presets.check_request(tmp_path, "name", tmp_path / "root", False)
    with pytest.raises(TfsegError, match="--name 'Bad-Name': expected lower-case"):
        presets.check_request(tmp_path, "Bad-Name", tmp_path / "root", False)


# Slow: the tiny run's model is built and loaded.

@pytest.mark.slow
def test_made_preset_holds_the_run_config_weights_card_and_entry(found):
    run_dir, root = found
    folder = root / "tiny"
    assert sorted(path.name for path in folder.iterdir()) == sorted(presets.FILES)
    assert (folder / "config.yaml").read_bytes() == (run_dir / "config.yaml").read_bytes()
    info = json.loads((folder / "preset.json").read_text())
    assert info["weights"]["dtype"] == "float32" and info["weights"]["check"] == {
        "max_abs_diff": 0.0, "argmax_agreement": 1.0}
    assert info["scores"] == {"mean_iou": 0.61, "foreground_iou": 0.42,
                              "pixel_accuracy": 0.93}
    assert info["source"]["checkpoint"] == "ckpt-4"
    card = (folder / "MODEL_CARD.md").read_text()
    for text in ("A tiny LinkNet for tests", "Test CPU, 2 cores (avx2 fma)", "(12.5 s;",
                 "| mean_iou | 0.6100 |", "sample 0.420",
                 "max abs difference 0, argmax agreement 100.00 %",
                 "python -m tfseg.evaluate --model preset:tiny --output evaluation-tiny"):
        assert text in card, text
    assert not [path for path in root.iterdir() if path.name.startswith(".")]


@pytest.mark.slow
def test_loaded_preset_gives_the_run_logits_exactly_and_float16_within_rounding(found):
    run_dir, _ = found
    from tfseg.deploy import runtimes

    _, config, model = presets.load_preset("preset:tiny")
    images = frames(config)
    expected = run_logits(run_dir, images)
    np.testing.assert_array_equal(np.asarray(model(images, training=False)), expected)
    with runtimes.load("preset:tiny") as runtime:   # what predict and evaluate run
        assert runtime.name == "keras" and runtime.metadata["task"] == "segmentation"
        np.testing.assert_allclose(runtime(images), expected, atol=1e-5)
    _, _, half = presets.load_preset("preset:tiny16")
    difference = np.abs(np.asarray(half(images, training=False)) - expected).max()
    assert 0 < difference < 1e-2 * max(1.0, np.abs(expected).max())


@pytest.mark.slow
def test_best_checkpoint_preset_takes_the_best_weights_and_scores(found, tmp_path):
    from tfseg.runs.preset_maker import make_preset

    run_dir, _ = found
    folder = make_preset(run_dir, "best", "best", root=tmp_path, checkpoint="best")
    info = json.loads((folder / "preset.json").read_text())
    assert info["scores"] == {"mean_iou": 0.6, "foreground_iou": 0.45}
    assert info["source"]["checkpoint"] == "best/ckpt-2"


@pytest.mark.slow
def test_weights_over_the_limit_are_refused_and_nothing_is_written(found, tmp_path,
                                                                  monkeypatch):
    from tfseg.runs import preset_maker

    run_dir, _ = found
    monkeypatch.setattr(preset_maker, "MAX_WEIGHTS_BYTES", 10**5)
    with pytest.raises(TfsegError, match=r"its weights take \d+\.\d MB in float32, over a "
                                         r"preset's 0 MB; try --dtype float16$"):
        preset_maker.make_preset(run_dir, "big", "too big", root=tmp_path / "root")
    assert list((tmp_path / "root").iterdir()) == []


@pytest.mark.slow
def test_weights_of_another_architecture_or_damaged_are_one_line(found, tmp_path,
                                                                 monkeypatch):
    _, root = found
    for name in ("wider", "damaged"):
        shutil.copytree(root / "tiny", tmp_path / name)
    config = yaml.safe_load((tmp_path / "wider" / "config.yaml").read_text())
    config["model"]["options"]["width"] = 1.0
    (tmp_path / "wider" / "config.yaml").write_text(yaml.safe_dump(config))
    damaged = tmp_path / "damaged" / "model.weights.h5"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF   # one byte of a weight flipped
    damaged.write_bytes(bytes(data))
    monkeypatch.setenv(presets.ENVIRONMENT, str(tmp_path))
    with pytest.raises(TfsegError) as caught:
        presets.load_preset("preset:wider")
    assert "the weights do not fit the model of" in str(caught.value)
    assert "(preset:wider)" in str(caught.value) and "has shape" in str(caught.value)
    assert "\n" not in str(caught.value)
    with pytest.raises(TfsegError, match="damaged .*sha256"):
        presets.load_preset("preset:damaged")


@pytest.mark.slow
def test_evaluate_scores_the_preset_as_the_run(found, tmp_path, capsys):
    from tfseg.deploy.evaluation import evaluate_to_folder

    run_dir, _ = found
    from_run = evaluate_to_folder(run_dir=run_dir, output=tmp_path / "run")
    from tfseg import evaluate

    assert run_cli(evaluate.main, ["--model", "preset:tiny", "--output",
                                   str(tmp_path / "preset")]) == 0
    from_preset = json.loads((tmp_path / "preset" / "evaluation.json").read_text())
    assert from_preset["model"] == "preset:tiny"
    assert from_preset["confusion_matrix"] == from_run["confusion_matrix"]
    for key in ("mean_iou", "foreground_iou", "loss"):
        assert from_preset[key] == pytest.approx(from_run[key], rel=1e-6), key


@pytest.mark.slow
def test_predict_with_a_preset_writes_the_run_masks(found, tmp_path):
    import cv2

    from tfseg import predict

    run_dir, _ = found
    _, config, _ = presets.load_preset("tiny")
    image = frames(config, 1)[0].round().astype(np.uint8)
    cv2.imwrite(str(tmp_path / "frame.png"), image)
    assert run_cli(predict.main, ["--model", "preset:tiny", "--input",
                                  str(tmp_path / "frame.png"), "--output",
                                  str(tmp_path / "out")]) == 0
    mask = cv2.imread(str(tmp_path / "out" / "frame_mask.png"), cv2.IMREAD_UNCHANGED)
    # The frame preprocessed as its config says (a 3x3 blur); the run's model on it.
    from tfseg.deploy.metadata import metadata_for, preprocessing_of

    preprocessing = preprocessing_of(metadata_for(config, "NHWC"), "test")
    prepared = preprocessing.image(cv2.imread(str(tmp_path / "frame.png"),
                                              cv2.IMREAD_UNCHANGED), None)
    logits = run_logits(run_dir, prepared[None])[0]
    # Equal but where the two classes tie to float rounding (graph vs eager kernels).
    clear = np.abs(logits[..., 1] - logits[..., 0]) > 1e-4
    np.testing.assert_array_equal(mask[clear], logits.argmax(-1)[clear])
    assert clear.mean() > 0.99


@pytest.mark.slow
def test_export_of_a_preset_agrees_with_the_run(found, tmp_path, capsys):
    from tfseg.deploy import runtimes

    run_dir, _ = found
    output = tmp_path / "export"
    assert run_cli(export_command.main, ["--model", "preset:tiny", "--output", str(output),
                                         "--skip-runtime", "opencv",
                                         "--skip-runtime", "opencv_classic",
                                         "--skip-runtime", "opencv_ort"]) == 0
    parity = json.loads((output / "parity.json").read_text())
    assert parity and (output / "labels.txt").read_text() == "background\nsample\n"
    _, config, _ = presets.load_preset("tiny")
    images = frames(config)
    with runtimes.load(output / "model.onnx") as onnx:
        assert onnx.metadata["model"] == "linknet"
        np.testing.assert_allclose(onnx(images), run_logits(run_dir, images), atol=1e-3)


@pytest.mark.slow
def test_init_from_a_preset_starts_training_from_its_weights(found):
    from tfseg.models.from_config import build_model, training_input_shape

    run_dir, _ = found
    config = tiny_config()
    config = dataclasses.replace(config, train=dataclasses.replace(
        config.train, init_from="preset:tiny"))
    model = build_model(config, training_input_shape(config), for_training=True)
    assert presets.init_from_preset(config.train.init_from, config, model).startswith(
        "preset:tiny (")
    from tfseg.runs.restore import load_run

    _, trained = load_run(run_dir)
    for got, want in zip(model.weights, trained.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=got.path)
    other = tiny_config(width=1.0)
    with pytest.raises(TfsegError, match=r"do not fit the model of this config "
                                         r"\(train.init_from: preset:tiny\)"):
        presets.init_from_preset("preset:tiny", other,
                                 build_model(other, training_input_shape(other),
                                             for_training=True))


def test_make_preset_tool_refuses_in_one_line_before_loading_a_model(tmp_path, capsys):
    """tools/make_preset.py answers a folder that is not a run with exit 2 and one line,
    writing nothing into --root."""
    from test_opencv_segment import load_tool

    tool = load_tool("make_preset")
    root = tmp_path / "root"
    argv = ["--run-dir", str(tmp_path), "--name", "x", "--description", "d", "--root", str(root)]
    assert run_cli(tool.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no config.yaml; expected a finished tfseg run" in err[0]
    assert not root.exists()


def test_scores_of_takes_the_final_validation_or_the_best_epoch_row():
    from tfseg.runs.preset_maker import scores_of

    metrics = {"mean_iou": 0.7, "foreground_iou": 0.6, "loss": 0.1, "best": {"epoch": 2},
               "history": [{"epoch": 1, "validation_mean_iou": 0.5},
                           {"epoch": 2, "validation_mean_iou": 0.8,
                            "validation_sample_f1": 0.4}]}
    assert scores_of(metrics, "latest", "segmentation") == {"mean_iou": 0.7,
                                                             "foreground_iou": 0.6}
    assert scores_of(metrics, "best", "segmentation") == {"mean_iou": 0.8, "sample_f1": 0.4}
    assert scores_of({"psnr_y": 29.0, "mean_iou": 1.0}, "latest", "super_resolution") == {
        "psnr_y": 29.0}
