"""A preset made from a finished run (the library of `tools/make_preset.py`): the run's
config (as this tfseg reads it: keys of earlier versions in their current form), the weights of one of its checkpoints in the chosen dtype, the registry
entry `preset.json` and a model card filled with the run's own records (metrics.json: scores,
epochs and steps, training time, precision and machine).

The folder is built beside its destination and renamed into place when complete; weights over
`MAX_WEIGHTS_BYTES` are refused before anything is written.
"""

import datetime
import json
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np

import tfseg
from tfseg.config import save_config
from tfseg.data.preprocess import Preprocessing
from tfseg.runs.presets import (
    CARD_NAME,
    CONFIG_NAME,
    INFO_NAME,
    MAX_WEIGHTS_BYTES,
    PREFIX,
    WEIGHTS_NAME,
    check_request,
    file_sha256,
    load_weights,
)
from tfseg.runs.checkpoints import verified_checkpoints
from tfseg.runs.restore import load_run
from tfseg.utils.errors import TfsegError
from tfseg.utils.files import write_text_atomic

SEGMENTATION_SCORES = ("mean_iou", "foreground_iou", "pixel_accuracy", "mean_class_accuracy",
                       "frequency_weighted_iou", "mean_iiou", "sample_precision",
                       "sample_recall", "sample_f1")
SR_SCORES = ("psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y")
CHECK_FRAMES = 2   # random frames the stored weights are compared with the run's on


def save_weights(model, path, dtype):
    """`model.save_weights(path)`, with every float32 array stored as `dtype`."""
    model.save_weights(path)
    if dtype == "float32":
        return
    converted = path.with_name("converted." + path.name)
    with h5py.File(path, "r") as source, h5py.File(converted, "w") as target:
        for key, value in source.attrs.items():
            target.attrs[key] = value

        def copy(name, item):
            if isinstance(item, h5py.Dataset):
                data = item[()]
                target.create_dataset(name, data=data.astype(dtype)
                                      if data.dtype == np.float32 else data)
            else:
                target.require_group(name)
                for key, value in item.attrs.items():
                    target[name].attrs[key] = value

        source.visititems(copy)
    converted.replace(path)


def compare_with_run(model, stored, config):
    """{"max_abs_diff", "argmax_agreement"} of the model holding the stored weights against
    the run's own model on `CHECK_FRAMES` seeded random frames (0 and 1.0 in float32)."""
    height, width = config.data.height, config.data.width
    frames = np.random.default_rng(0).uniform(0, 255, (
        CHECK_FRAMES, height, width, config.model.input_channels)).astype(np.float32)
    run_out = np.asarray(model(frames, training=False), np.float32)
    stored_out = np.asarray(stored(frames, training=False), np.float32)
    result = {"max_abs_diff": float(np.abs(run_out - stored_out).max())}
    if config.model.task == "segmentation":
        result["argmax_agreement"] = float(np.mean(run_out.argmax(-1)
                                                   == stored_out.argmax(-1)))
    return result


def scores_of(metrics, checkpoint, task):
    """{score: value} of the checkpoint's weights as the run recorded them: metrics.json's
    final validation for "latest", the best epoch's history row for "best"."""
    keys = SEGMENTATION_SCORES if task == "segmentation" else SR_SCORES
    if checkpoint == "latest":
        return {key: metrics[key] for key in keys if key in metrics}
    best = metrics.get("best") or {}
    row = next((row for row in metrics.get("history", [])
                if row.get("epoch") == best.get("epoch")), {})
    return {key: row[f"validation_{key}"] for key in keys if f"validation_{key}" in row}


def model_card(name, description, config, metrics, info, cpu):
    """MODEL_CARD.md: what the preset is, how it was trained, how well it scores and the
    commands that reproduce each figure; the run's records fill it, `<!-- ... -->` marks what
    only a person can add."""
    data, model, weights = config.data, config.model, info["weights"]
    reference = PREFIX + name
    data_set = {"synthetic": "",
                "super_resolution": ' --set "data.super_resolution.train=[HR_FOLDER, ...]"'
                                    ' --set "data.super_resolution.validation=[HR_FOLDER]"',
                "tfds": ""}.get(data.source, " --set data.path=FOLDER")
    check = weights["check"]
    steps = Preprocessing.from_config(config).steps
    inputs = "raw pixels" + "".join(
        f" and {what} (`data.preprocess.{key}`)" for key, what in (
            ("phase_gradient", "their fringe phase's slopes"),
            ("fringe_amplitude", "their fringes' amplitude")) if getattr(steps, key))
    outputs = (f"{model.num_classes} classes ({', '.join(data.class_names)})"
               if model.task == "segmentation" else f"x{model.scale} upscaled pixels")
    agreement = (f", argmax agreement {100 * check['argmax_agreement']:.2f} %"
                 if "argmax_agreement" in check else "")
    where = "".join(f", `data.{key}: {getattr(data, key)}`" for key in ("path", "val_path")
                    if getattr(data, key, ""))
    precision = metrics.get("precision", {})
    seconds = metrics.get("train_seconds", 0)
    latest = weights["checkpoint"] == "latest"
    recorded = ("metrics.json, the final validation" if latest else
                f"the history row of the best epoch, {metrics.get('best', {}).get('epoch')}")
    rows = "\n".join(f"| {key} | {value:.4f} |" for key, value in info["scores"].items())
    per_class = metrics.get("per_class_iou") if latest else None
    if per_class:
        rows += "\n\nPer-class IoU: " + ", ".join(f"{cls} {value:.3f}"
                                                  for cls, value in per_class.items())
    return f"""# {reference}

{description}

<!-- What the model is for, and what it is not for. -->

## Model

`{model.name}` ({model.task}), options {dict(model.options)}: {inputs} in
({data.height}x{data.width}x{model.input_channels}; normalisation inside), {outputs} out.
Weights: {weights["dtype"]}, {weights["bytes"] / 1e6:.1f} MB, the run's {weights["checkpoint"]}
checkpoint ({info["source"]["checkpoint"]}); outputs against the run's own float32 weights:
max abs difference {check["max_abs_diff"]:.3g}{agreement}.

## Recipe and data

The recipe is `config.yaml` beside this card: the run's own config. Data: `data.source:
{data.source}`{where}.

<!-- The data set, its split and its licence. -->

## Training

{metrics.get("epochs")} epochs, {metrics.get("steps")} steps: {seconds / 60:.1f} min of training
({seconds} s; {metrics.get("total_seconds", "?")} s with the export and its checks) on {cpu}.
Precision {precision.get("policy", "?")}: {precision.get("reason", "not recorded")}.

## Scores

Validation, as the run recorded them ({recorded}):

| score | value |
|---|---|
{rows}

## Reproduce

```
python -m tfseg.evaluate --model {reference} --output evaluation-{name}{data_set}
python -m tfseg.export --model {reference} --output export-{name}
python -m tfseg.train --config tfseg/pretrained/{name}/config.yaml{data_set}
```

The first scores these weights (the figures above), the second exports them with the parity
checks, the last trains them again (its time depends on the CPU). Fine-tune with
`--set train.init_from={reference}`.
"""


def make_preset(run_dir, name, description, *, root, checkpoint="latest", dtype="float32",
                cpu=None, replace=False):
    """Makes the preset `name` in `root` from the finished run `run_dir`; returns its folder.

    Args:
        run_dir: Path. A finished `python -m tfseg.train` run (config.yaml, metrics.json,
            checkpoints).
        name: str. The preset's name (`preset:NAME`).
        description: str. One line, listed by `python -m tfseg.presets`.
        root: Path. The presets folder (the package's `tfseg/pretrained`).
        checkpoint: "latest" (the weights metrics.json's final scores are of) or "best".
        dtype: "float32" (exact) or "float16" (half the size; outputs differ slightly, the
            card says by how much).
        cpu: str. The training machine, where metrics.json does not record it.
        replace: bool. Remake an existing preset of that name.

    Raises:
        TfsegError: not a finished run, a bad name, an existing preset, no checkpoint, or
            weights over `MAX_WEIGHTS_BYTES` (nothing is written).
    """
    run_dir, root = Path(run_dir), Path(root)
    check_request(run_dir, name, root, replace)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config, model = load_run(run_dir, checkpoint)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.partial-", dir=root) as building:
        building = Path(building)
        weights = building / WEIGHTS_NAME
        save_weights(model, weights, dtype)
        size = weights.stat().st_size
        if size > MAX_WEIGHTS_BYTES:
            raise TfsegError(f"{run_dir}: its weights take {size / 1e6:.1f} MB in {dtype}, "
                             f"over a preset's {MAX_WEIGHTS_BYTES / 1e6:.0f} MB"
                             f"{'; try --dtype float16' if dtype == 'float32' else ''}")
        stored = _fresh_copy(config, model)
        load_weights(weights, stored, f"the model of {run_dir / CONFIG_NAME}")
        save_config(config, building / CONFIG_NAME)
        info = {"name": name, "description": description, "task": config.model.task,
                "model": config.model.name,
                "weights": {"file": WEIGHTS_NAME, "dtype": dtype, "bytes": size,
                            "sha256": file_sha256(weights), "checkpoint": checkpoint,
                            "check": compare_with_run(model, stored, config)},
                "scores": scores_of(metrics, checkpoint, config.model.task),
                "source": {"run": str(run_dir), "checkpoint": _checkpoint_name(run_dir,
                                                                                checkpoint),
                           "tfseg": tfseg.__version__,
                           "made": datetime.date.today().isoformat()}}
        write_text_atomic(building / INFO_NAME, json.dumps(info, indent=2) + "\n")
        write_text_atomic(building / CARD_NAME, model_card(
            name, description, config, metrics, info,
            cpu or metrics.get("machine") or "a CPU the run did not record (give --cpu)"))
        building.chmod(0o755)   # TemporaryDirectory makes it private
        target = root / name
        if target.exists():
            shutil.rmtree(target)
        building.rename(target)
        building.mkdir()   # for TemporaryDirectory's clean-up
    return target


def _fresh_copy(config, model):
    """A new float32 model of `config` of `model`'s input size, for the stored weights."""
    from tfseg.models.from_config import build_model, dtype_policy

    with dtype_policy("float32"):
        return build_model(config, tuple(model.input_shape[1:3]))


def _checkpoint_name(run_dir, checkpoint):
    """The checkpoint `load_run` restores, e.g. "ckpt-2000" ("best/ckpt-1600")."""
    folder = Path(run_dir) / "checkpoints" / ("best" if checkpoint == "best" else "")
    verified, _ = verified_checkpoints(folder, with_state=False)
    name = verified[-1][0].name if verified else "?"
    return f"best/{name}" if checkpoint == "best" else name
