"""Presets: trained models shipped with tfseg, loaded by name (keras-hub's idea: the
architecture is code, a preset is data).

A preset is a folder named after it, made from a finished run by `tools/make_preset.py`:

- `config.yaml`: the run's own config, the recipe it was trained with. It alone defines the
  architecture (`model`) and the preprocessing (`data`), so `tfseg.models.from_config`
  builds the network as for the run itself;
- `model.weights.h5`: the inference model's weights (`keras.Model.save_weights`; float32, or
  float16 where a model would not otherwise fit `MAX_WEIGHTS_BYTES`);
- `MODEL_CARD.md`: recipe, data, training time and CPU, scores and the commands that
  reproduce them;
- `preset.json`: the registry entry: one-line description, task, model, weights dtype,
  size and sha256, and where the weights came from.

The packaged presets are the folders of `tfseg/pretrained/` (package data, so a wheel holds
them); the folders named in the `TFSEG_PRESETS` variable (separated by `os.pathsep`) are
searched first, so a user's (or a test's) presets need no change to the package. Everywhere a
model is named, `preset:NAME` names a preset: `python -m tfseg.predict --model preset:NAME`,
`python -m tfseg.evaluate --model preset:NAME`, `python -m tfseg.export --model preset:NAME`
and `train.init_from: preset:NAME`; `python -m tfseg.presets` lists them.

Finding a preset reads no weights and loads no TensorFlow, so an unknown name is refused at
once; Keras is imported only to build and load a model.
"""

import hashlib
import importlib.resources
import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from tfseg.config import load_config
from tfseg.utils.errors import TfsegError

PREFIX = "preset:"
ENVIRONMENT = "TFSEG_PRESETS"
CONFIG_NAME, WEIGHTS_NAME = "config.yaml", "model.weights.h5"
CARD_NAME, INFO_NAME = "MODEL_CARD.md", "preset.json"
FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, INFO_NAME)
# Issue 20's bound on a shipped preset's weights, in bytes (15 MB).
MAX_WEIGHTS_BYTES = 15 * 10**6
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
DTYPES = ("float32", "float16")   # of a preset's weights file


@dataclass(frozen=True)
class Preset:
    """A preset folder and its registry entry (`preset.json`).

    Attributes:
        name: str. The folder's name, as `preset:NAME` gives it.
        folder: Path. Holds `FILES`.
        info: dict. `preset.json`: "description", "task", "model", "weights" ("dtype",
            "bytes", "sha256", "checkpoint"), "source".
    """

    name: str
    folder: Path
    info: dict

    @property
    def description(self):
        return self.info.get("description", "")

    @property
    def reference(self):
        return f"{PREFIX}{self.name}"

    @property
    def config_path(self):
        return self.folder / CONFIG_NAME

    @property
    def weights_path(self):
        return self.folder / WEIGHTS_NAME

    @property
    def card_path(self):
        return self.folder / CARD_NAME


def is_preset(reference):
    """Whether `reference` (a str or Path given as a model) names a preset: `preset:NAME`."""
    return str(reference).startswith(PREFIX)


def preset_folders():
    """The folders presets are found in, first first: those of `TFSEG_PRESETS`, then the
    packaged `tfseg/pretrained/`."""
    extra = [Path(folder) for folder in os.environ.get(ENVIRONMENT, "").split(os.pathsep)
             if folder]
    return [*extra, Path(str(importlib.resources.files("tfseg") / "pretrained"))]


def presets():
    """{name: `Preset`} of every preset folder (one holding `preset.json`), by name; a name
    in an earlier folder of `preset_folders` hides the same name in a later one."""
    found = {}
    for root in preset_folders():
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if folder.name not in found and (folder / INFO_NAME).is_file():
                found[folder.name] = Preset(folder.name, folder, _read_info(folder))
    return found


def _read_info(folder):
    path = folder / INFO_NAME
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TfsegError(f"{path}: unreadable preset entry ({error})") from None
    if not isinstance(info, dict):
        raise TfsegError(f"{path}: expected a JSON object")
    return info


def known_line(found=None):
    """The presets there are, for error messages."""
    found = presets() if found is None else found
    if not found:
        return ("no preset is installed (the packaged ones are in tfseg/pretrained/; "
                f"{ENVIRONMENT} names folders of more)")
    return f"the presets are {', '.join(sorted(found))} (python -m tfseg.presets lists them)"


def find_preset(reference):
    """The `Preset` that `reference` (`preset:NAME`, or NAME) names.

    Raises:
        TfsegError: no such preset (one line listing the known ones), or a preset folder
            without one of `FILES`.
    """
    name = str(reference).removeprefix(PREFIX)
    found = presets()
    if name not in found:
        raise TfsegError(f"{PREFIX}{name}: no such preset; {known_line(found)}")
    preset = found[name]
    for file in FILES:
        if not (preset.folder / file).is_file():
            raise TfsegError(f"{preset.reference}: {preset.folder / file} is missing; "
                             f"reinstall tfseg or remake the preset (tools/make_preset.py)")
    return preset


def check_request(run_dir, name, root, replace):
    """TfsegError (one line) unless a preset `name` can be made in `root` from `run_dir`
    (`tfseg.runs.preset_maker`): a finished run, a valid name, no such preset unless
    `replace`."""
    run_dir = Path(run_dir)
    if not NAME_PATTERN.fullmatch(name):
        raise TfsegError(f"--name {name!r}: expected lower-case letters, digits and _, "
                         f"starting with a letter")
    for needed in (CONFIG_NAME, "metrics.json"):
        if not (run_dir / needed).is_file():
            raise TfsegError(f"{run_dir}: no {needed}; expected a finished tfseg run")
    if (Path(root) / name).exists() and not replace:
        raise TfsegError(f"{Path(root) / name}: exists; give --replace to remake it")


def preset_config(preset, overrides=()):
    """The preset's `Config` (its run's config.yaml) with `--set` `overrides`."""
    return load_config(preset.config_path, overrides)


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def weight_shapes(path):
    """{dataset path: shape} of a Keras `.weights.h5` file."""
    import h5py   # Keras's own dependency; imported with it

    shapes = {}
    try:
        with h5py.File(path, "r") as file:
            file.visititems(lambda name, item: shapes.__setitem__(name, item.shape)
                            if isinstance(item, h5py.Dataset) else None)
    except OSError as error:
        raise TfsegError(f"{path}: not a Keras weights file ({error})") from None
    return shapes


def model_weight_shapes(model):
    """{dataset path: shape} that `model.save_weights` writes: what a weights file must hold
    for `model`."""
    with tempfile.TemporaryDirectory(prefix="tfseg-preset-") as folder:
        path = Path(folder) / WEIGHTS_NAME
        model.save_weights(path)
        return weight_shapes(path)


def check_weights_fit(path, model, described):
    """TfsegError (one line) unless the weights file `path` holds exactly the variables of
    `model`, by path and shape. Keras alone would load a file of fewer layers with a
    warning, leaving the rest at their initial values."""
    held, needed = weight_shapes(path), model_weight_shapes(model)
    if held == needed:
        return
    missing = sorted(needed.keys() - held.keys())
    extra = sorted(held.keys() - needed.keys())
    wrong = sorted(key for key in needed.keys() & held.keys() if needed[key] != held[key])
    if wrong:
        why = (f"{wrong[0]} has shape {tuple(held[wrong[0]])}, the model needs "
               f"{tuple(needed[wrong[0]])}")
    elif missing:
        why = f"{len(missing)} variable(s) missing, e.g. {missing[0]}"
    else:
        why = f"{len(extra)} variable(s) the model lacks, e.g. {extra[0]}"
    raise TfsegError(f"{path}: the weights do not fit {described} ({why})")


def load_weights(path, model, described):
    """Loads the weights file `path` into `model` after `check_weights_fit`; float16 files
    are cast to the model's float32 variables."""
    check_weights_fit(path, model, described)
    with warnings.catch_warnings():   # the structure was checked above, exactly
        warnings.simplefilter("ignore")
        model.load_weights(path)


def check_intact(preset):
    """TfsegError unless the weights file is the one `preset.json` describes (sha256)."""
    expected = preset.info.get("weights", {}).get("sha256")
    if expected and file_sha256(preset.weights_path) != expected:
        raise TfsegError(f"{preset.weights_path}: damaged (its sha256 differs from "
                         f"{preset.folder / INFO_NAME}'s); reinstall tfseg or remake the "
                         f"preset")


def load_preset(reference, overrides=()):
    """(preset, config, model): the preset `reference` names, its config with `overrides`,
    and its float32 inference model (raw pixels to logits at the config's frame size, or SR
    pixels at any size) holding the preset's weights.

    Raises:
        TfsegError: unknown preset, a damaged weights file, or weights that do not fit the
            architecture of the preset's config.yaml.
    """
    from tfseg.models.from_config import build_model, dtype_policy   # deferred: Keras

    preset = find_preset(reference)
    config = preset_config(preset, overrides)
    check_intact(preset)
    # Super-resolution: fully convolutional, whole images of any size, as a run's model.
    saved = preset_config(preset)
    with dtype_policy("float32"):
        model = build_model(saved, (None, None) if saved.model.task == "super_resolution"
                            else None)
    load_weights(preset.weights_path, model,
                 f"the model of {preset.config_path} ({preset.reference})")
    return preset, config, model


def init_from_preset(reference, config, model):
    """Starts the training `model` of `config` from the preset's weights (`train.init_from:
    preset:NAME`): they are loaded into the inference model of `config` (checked to fit),
    then copied by layer name; layers only the training model has (ICNet's auxiliary cascade
    classifiers) keep their initial values and are named in a printed note. Returns the
    preset's description for the log line.

    Raises:
        TfsegError: unknown preset, damaged weights, or weights that do not fit the model of
            `config`.
    """
    import keras   # deferred, as in load_preset

    from tfseg.models import all_layers
    from tfseg.models.from_config import build_model, dtype_policy

    preset = find_preset(reference)
    check_intact(preset)
    with dtype_policy("float32"):
        source = build_model(config)
    load_weights(preset.weights_path, source,
                 f"the model of this config (train.init_from: {preset.reference})")
    layers = {layer.name: layer for layer in all_layers(source)}
    fresh = []
    for layer in all_layers(model):
        if layer.weights and not isinstance(layer, keras.Model):
            if layer.name in layers:
                layer.set_weights(layers[layer.name].get_weights())
            else:
                fresh.append(layer.name)
    if fresh:
        print(f"tfseg: {preset.reference} has no weights for {', '.join(fresh)} (training "
              f"only): they start from their initial values")
    return f"{preset.reference} ({preset.weights_path})"
