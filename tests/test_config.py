"""Config validation: every mistake names the source, the key and what was expected."""

import dataclasses
import re

import pytest
from conftest import REPO, TINY_CONFIG, run_module

from tfseg.config import Config, DataConfig, TrainConfig, load_config, save_config
from tfseg.utils.errors import ConfigError


def error_for(write_yaml, content, overrides=()):
    path = write_yaml(content)
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    return str(caught.value), path


@pytest.mark.parametrize("recipe", sorted((REPO / "configs").glob("*.yaml"))
                         + [REPO / "benchmarks" / "search_base.yaml"],
                         ids=lambda p: p.name)
def test_every_recipe_loads(recipe):
    assert isinstance(load_config(recipe), Config)


def test_unknown_key_names_file_key_and_closest_valid_key(write_yaml):
    message, path = error_for(write_yaml, {"train": {"epoch": 3}})
    assert message.startswith(f"{path}: unknown key 'train.epoch'")
    assert "did you mean 'train.epochs'?" in message


def test_unknown_section_suggests_section(write_yaml):
    message, _ = error_for(write_yaml, {"trian": {"epochs": 3}})
    assert "unknown key 'trian'" in message and "did you mean 'train'?" in message


def test_unknown_nested_key_lists_valid_keys_when_nothing_is_close(write_yaml):
    message, _ = error_for(write_yaml, {"data": {"preprocess": {"zzzz": 1}}})
    assert "unknown key 'data.preprocess.zzzz'" in message
    assert "valid keys: data.preprocess.blur" in message


@pytest.mark.parametrize("section,key,value,expected", [
    ("train", "epochs", "five", "expected an integer, got 'five' (str)"),
    ("train", "epochs", True, "expected an integer, got True (bool)"),
    ("train", "learning_rate", "fast", "expected a number"),
    ("data", "class_names", "background", "expected a list"),
    ("export", "onnx", "yes please", "expected true or false"),
    ("data", "synthetic", [1, 2], "must be a mapping"),
])
def test_wrong_type_names_key_and_expectation(write_yaml, section, key, value, expected):
    message, path = error_for(write_yaml, {section: {key: value}})
    assert str(path) in message and f"{section}.{key}" in message and expected in message


def test_sections_built_in_python_are_checked_too():
    with pytest.raises(ValueError, match="batch_size=0 must be >= 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="std=\\[inf\\] must hold finite numbers"):
        DataConfig(std=[float("inf")])


def test_float_written_without_a_dot_is_a_number(write_yaml):
    path = write_yaml("train:\n  learning_rate: 1e-4\n")
    assert load_config(path).train.learning_rate == 1e-4


def test_invalid_choice_suggests_closest(write_yaml):
    message, _ = error_for(write_yaml, {"model": {"name": "linknett"}})
    assert "model.name='linknett' is not one of" in message
    assert "did you mean 'linknet'?" in message


@pytest.mark.parametrize("content,expected", [
    ({"train": {"batch_size": 0}}, "section 'train': batch_size=0 must be >= 1"),
    ({"train": {"seed": -1}}, "section 'train': seed=-1 must be in [0, 2147483647]"),
    ({"train": {"log_images": 0}}, "section 'train': log_images=0 must be >= 1"),
    ({"train": {"learning_rate": float("nan")}}, "train.learning_rate: expected a finite"),
    ({"data": {"std": [float("inf")]}}, "data.std[0]: expected a finite number"),
    ({"data": {"std": [0.0]}}, "section 'data': std=[0.0] must be >= 1e-06"),
    ({"data": {"ignore_label": 300}}, "section 'data': ignore_label=300 must be in [0, 255]"),
    ({"data": {"ignore_label": 1}}, "data.ignore_label 1 is a class id"),
    ({"train": {"class_weights": [1.0, -2.0]}},
     "section 'train': class_weights=[1.0, -2.0] must be >= 0"),
    ({"export": {"min_argmax_agreement": 99.9}},
     "section 'export': min_argmax_agreement=99.9 must be in [0.0, 1.0]"),
    ({"export": {"opset": 19}}, "section 'export': opset=19 must be in [13, 18]"),
    ({"train": {"class_weights": [0, 0]}}, "class_weights=[0.0, 0.0] must not all be 0"),
    ({"model": {"input_channels": 3}, "data": {"mean": [0, 0, 0], "std": [1, 1, 1]}},
     "data.source 'synthetic' has 1 channel(s) but model.input_channels is 3"),
    ({"data": {"preprocess": {"phase_gradient": True}}},
     "data.source 'synthetic' has 3 channel(s) but model.input_channels is 1"),
    ({"model": {"input_channels": 3}, "data": {
        "mean": [0, 0, 0], "std": [1, 1, 1], "preprocess": {"phase_gradient": True},
        "augment": {"contrast": 0.2}}}, "brightness and contrast would change the demodulated"),
    ({"data": {"preprocess": {"phase_gradient": True, "fringe_amplitude": True}}},
     "data.source 'synthetic' has 4 channel(s) but model.input_channels is 1"),
    ({"model": {"input_channels": 3}, "data": {
        "source": "camvid", "path": ".", "mean": [0, 0, 0], "std": [1, 1, 1],
        "preprocess": {"phase_gradient": True}}},
     "data.preprocess.phase_gradient demodulates interferograms"),
    ({"model": {"input_channels": 4}, "data": {
        "source": "camvid", "path": ".", "mean": [0] * 4, "std": [1] * 4,
        "preprocess": {"fringe_amplitude": True}}},
     "data.preprocess.fringe_amplitude demodulates interferograms"),
    ({"export": {"layout": "NHWC"}}, "with layout NHWC, leave opencv, opencv_classic, opencv_ort out"),
    ({"train": {"mixed_precision": "mixed_float16", "strategy": "mirrored"}},
     "mixed_float16 is supported with strategy 'default' only"),
    ({"data": {"synthetic": {"bit_depth": 12}}}, "section 'data.synthetic'"),
    ({"train": {"epochs": 2, "steps_per_epoch": 5, "warmup_steps": 10}},
     "warmup_steps (10) must be shorter than the run"),
    ({"train": {"warmup_steps": 5, "lr_schedule": "constant"}},
     "warmup_steps needs lr_schedule 'cosine'"),
    ({"model": {"name": "icnet"}, "train": {"loss": "asymmetric"}},
     "set train.cascade: off to train ICNet with the asymmetric loss"),
    ({"train": {"class_weights": [1, 2], "class_weighting": "linknet_ln"}},
     "give class_weights or class_weighting, not both"),
    ({"data": {"class_colours": [[0, 0, 0]]}},
     "data.class_colours has 1 colours but model.num_classes is 2"),
    ({"data": {"class_colours": [[0, 0, 0], [255, 256, 0]]}},
     "class_colours are RGB triples of 0..255"),
    ({"data": {"class_colours": [[0, 0], [1, 2, 3]]}},
     "data.class_colours[0]: expected a list of 3 values, got 2"),
])
def test_out_of_range_and_inconsistent_values_are_named(write_yaml, content, expected):
    message, path = error_for(write_yaml, content)
    assert message.startswith(str(path)) and expected in message


def test_inconsistent_sections_are_rejected(write_yaml):
    message, _ = error_for(write_yaml, {"model": {"num_classes": 3}})
    assert "class_names has 2 names but model.num_classes is 3" in message


def test_malformed_yaml_reports_line_and_column(write_yaml):
    message, path = error_for(write_yaml, "train:\n  epochs: [1, 2\n  batch_size: 3\n")
    assert message.startswith(f"{path}:") and "malformed YAML" in message
    line = int(message.split(":")[1])
    assert line in (2, 3)


def test_overrides_are_validated_together_in_any_order(write_yaml):
    path = write_yaml({"train": {"epochs": 2, "steps_per_epoch": 50, "warmup_steps": 20}})
    config = load_config(path, ["train.steps_per_epoch=2", "train.warmup_steps=0"])
    assert config.train.steps_per_epoch == 2 and config.train.warmup_steps == 0
    with pytest.raises(ConfigError, match="--set train.steps_per_epoch=2, --set train.epochs=1: "
                                          ".*warmup_steps \\(20\\) must be shorter"):
        load_config(path, ["train.steps_per_epoch=2", "train.epochs=1"])


def test_overrides_apply_with_yaml_types(write_yaml):
    config = load_config(write_yaml(TINY_CONFIG),
                         ["train.epochs=7", "train.learning_rate=3e-4",
                          "data.class_names=[bg, cell]", "data.synthetic.height=96"])
    assert config.train.epochs == 7 and config.train.learning_rate == 3e-4
    assert config.data.class_names == ["bg", "cell"] and config.data.synthetic.height == 96


@pytest.mark.parametrize("override,expected", [
    ("train.epoch=3", "--set train.epoch=3: unknown key 'train.epoch'; did you mean "
                      "'train.epochs'?"),
    ("train.epochs=many", "--set train.epochs=many: train.epochs: expected an integer"),
    ("trian.epochs=3", "--set trian.epochs=3: 'trian' is not a section; did you mean 'train'?"),
    ("train.epochs", "--set train.epochs: expected section.key=value"),
    ("data.mean=[30000.0]", "--set data.mean=[30000.0]: section 'data': mean=[30000.0] "
                            "must be in 8-bit grey levels (at most 255)"),
    ("data.std=[16000.0]", "--set data.std=[16000.0]: section 'data': std=[16000.0] "
                           "must be in 8-bit grey levels (at most 255)"),
])
def test_bad_override_names_the_override(write_yaml, override, expected):
    message, _ = error_for(write_yaml, TINY_CONFIG, [override])
    assert message.startswith(expected)


def test_a_random_transpose_of_oblong_training_frames_is_refused(write_yaml):
    message, _ = error_for(write_yaml, TINY_CONFIG,
                           ["data.augment.crop=[32, 48]", "data.augment.transpose=true"])
    assert ("augment.transpose swaps rows and columns: it needs square training frames; "
            "received 32x48") in message
    config = load_config(write_yaml(TINY_CONFIG), ["data.augment.transpose=true"])
    assert config.data.augment.transpose


@pytest.mark.parametrize("overrides, expected", [
    (["data.augment.test_time=flips_and_transpose", "data.height=48"],
     "data.augment.test_time 'flips_and_transpose' needs square frames; received 48x64"),
    (["data.augment.test_time=flips", "model.name=icnet_temporal"],
     "data.augment.test_time 'flips': model 'icnet_temporal' is recurrent"),
    (["data.augment.test_time=rotations"], "data.augment.test_time='rotations' is not one of"),
])
def test_test_time_views_that_cannot_apply_are_refused(write_yaml, overrides, expected):
    message, _ = error_for(write_yaml, TINY_CONFIG, overrides)
    assert expected in message


def test_super_resolution_refuses_test_time_views():
    with pytest.raises(ConfigError, match="data.augment.test_time averages class "
                                          "probabilities: it is for segmentation"):
        load_config(REPO / "configs" / "sr_johnson_x4.yaml", ["data.augment.test_time=flips"])


def test_resolved_config_round_trips(tmp_path, write_yaml):
    config = load_config(write_yaml(TINY_CONFIG), ["train.seed=5"])
    save_config(config, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == config
    assert dataclasses.asdict(config) != dataclasses.asdict(Config())


def test_cli_config_error_exits_2_with_one_line_and_no_traceback(write_yaml):
    result = run_module("tfseg.train", "--config", write_yaml({"train": {"epoch": 3}}))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "unknown key 'train.epoch'; did you mean 'train.epochs'?" in result.stderr


def test_cli_unknown_model_option_is_refused_before_anything_is_written(write_yaml, tmp_path):
    config = write_yaml({**TINY_CONFIG, "model": {**TINY_CONFIG["model"],
                                                  "name": "fcn_resnet18",
                                                  "options": {"stm": "small"}}})
    result = run_module("tfseg.train", "--config", config, "--run-dir", tmp_path / "run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (f"{config}: model.options: model 'fcn_resnet18' has no option 'stm'; "
            f"did you mean 'stem'?") in result.stderr
    assert not (tmp_path / "run").exists()


def test_cli_missing_config_file_is_a_clean_error(tmp_path):
    result = run_module("tfseg.train", "--config", tmp_path / "nope.yaml")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "nope.yaml: cannot read config file" in result.stderr


@pytest.mark.parametrize("overrides, expected", [
    ({"train": {"best_metric": "psnr_y"}}, "is not a score of 2-class segmentation"),
    ({"model": {"num_classes": 3}, "data": {"class_names": ["a", "b", "c"]},
      "train": {"best_metric": "foreground_iou"}}, "is not a score of 3-class segmentation"),
    ({"model": {"name": "sr_johnson", "input_channels": 3},
      "data": {"source": "super_resolution", "mean": [0, 0, 0], "std": [1, 1, 1],
               "super_resolution": {"train": ["t"], "validation": ["v"]}},
      "train": {"loss": "pixel", "best_metric": "mean_iou"}}, "super-resolution keeps"),
    ({"train": {"loss": "pixel"}}, "is a super-resolution loss"),
    ({"model": {"name": "sr_johnson", "input_channels": 3},
      "data": {"mean": [0, 0, 0], "std": [1, 1, 1]}, "train": {"loss": "pixel"}},
     "needs data.source 'super_resolution'"),
])
def test_task_specific_choices_are_checked_together(write_yaml, overrides, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(write_yaml(overrides))
