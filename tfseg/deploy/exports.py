"""A trained model's exports: a SavedModel and static-size ONNX files (with the tfseg
metadata), `labels.txt`, and the parity of every runtime with Keras (`tfseg.deploy.parity`).
The library of `python -m tfseg.export`, and the end of every training run.

Every export calls the model with `training=False` explicitly (TOOLCHAIN.md trap 1). An export
folder is all or nothing: every format and the parity report are built in a temporary folder
beside it, swapped in only when all of them are written and agree with Keras
(`tfseg.utils.files.replacing_folder`); a failed, interrupted or killed export leaves the
previous one as it was.
"""

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf
from keras.export import ExportArchive

from tfseg.data.pipeline import make_datasets
from tfseg.deploy.metadata import (
    STATE_INPUT,
    encode_metadata,
    metadata_at_size,
    metadata_for,
    state_metadata,
    write_saved_model_metadata,
)
from tfseg.deploy.onnx_conversion import INPUT_NAME, OUTPUT_NAME
from tfseg.deploy.parity import ParityError, Tolerance, check_parity, describe
from tfseg.deploy.precisions import CALIBRATION_FRAMES, check_precisions, describe_precision
from tfseg.deploy.quantization import PrecisionJob, export_precisions
from tfseg.deploy.runtimes import (
    EXPORT_RUNTIMES,
    frame_input_shape,
    model_state_shape,
    step_outputs,
)
from tfseg.models.from_config import build_model
from tfseg.runs.presets import load_preset
from tfseg.runs.restore import load_run
from tfseg.utils.errors import TfsegError
from tfseg.utils.files import replacing_folder, write_failure, write_text_atomic
from tfseg.utils.processes import run_child

# Frames the parity of a preset's export is checked on when its data cannot be read here.
RANDOM_FRAMES = 4
# The fewest frames a recurrent model's exports are run over, as one sequence, to show that
# each runtime's state stays with Keras's.
SEQUENCE_FRAMES = 50


def export_saved_model(model, directory, metadata=None):
    """SavedModel with a `serving_default` signature: `pixels` (N, H, W, C) -> `logits`, and
    the tfseg `metadata` (`tfseg.deploy.metadata.make_metadata`) in `assets.extra/tfseg.json`.

    A recurrent step model's signature also takes the state, `state_in` (N, h, w, S), and
    returns the next one, `state`; the metadata describes it (`state_metadata`)."""
    directory = Path(directory)
    spec = tf.TensorSpec([None, *frame_input_shape(model)[1:]], tf.float32, name=INPUT_NAME)
    state_shape = model_state_shape(model)
    archive = ExportArchive()
    archive.track(model)
    if state_shape is None:
        archive.add_endpoint("serving_default",
                             lambda pixels: {OUTPUT_NAME: model(pixels, training=False)},
                             input_signature=[spec])
    else:
        archive.add_endpoint("serving_default",
                             lambda pixels, state_in: step_outputs(model, pixels, state_in),
                             input_signature=[spec, tf.TensorSpec([None, *state_shape],
                                                                  tf.float32,
                                                                  name=STATE_INPUT)])
        metadata = metadata and {**metadata, **state_metadata(state_shape, "NHWC")}
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        archive.write_out(str(partial), verbose=False)
    except tf.errors.OpError as error:   # TensorFlow's writer, on a full or read-only disk
        raise OSError(write_failure(error)) from None
    if metadata is not None:
        write_saved_model_metadata(partial, {**metadata, "layout": "NHWC"})
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(partial, directory)
    return directory


def export_onnx(model, path, *, opset=17, layout="NCHW", metadata=None, timeout=3600):
    """ONNX file at the model's static input size, batch 1.

    With layout "NCHW" the input and output are channels-first, so the blob from
    `cv2.dnn.blobFromImage` feeds the model directly. `metadata` (decoded, see
    `tfseg.deploy.metadata.make_metadata`) is stored in the file's metadata_props; the tfseg
    version, input size, channels and layout always are, from the model itself.

    The conversion runs in a child process (`tfseg.deploy.onnx_conversion`) on a saved copy
    of the model: tf2onnx keeps a copy of every weight per optimiser pass under the default
    protobuf backend (2 GB extra for LinkNet, out of memory for FCN-32s), which the child
    avoids.

    Raises:
        TfsegError: the conversion failed; the message holds the converter's last line.
    """
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    # Beside the output, so that a killed export's copy goes with its temporary folder.
    with tempfile.TemporaryDirectory(prefix=".tfseg-onnx-", dir=path.parent) as tmp:
        saved = Path(tmp) / "model.keras"
        model.save(saved)
        options = {"opset": opset, "layout": layout,
                   "metadata": encode_metadata(metadata or {})}
        try:
            run_child("tfseg.deploy.onnx_conversion", saved, partial, json.dumps(options),
                      what=f"{path}: ONNX conversion", timeout=timeout,
                      environment={"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"})
        except TfsegError:
            partial.unlink(missing_ok=True)
            raise
    os.replace(partial, path)
    return path


def onnx_name(size, training_size):
    """`model.onnx` at the training size, `model_<H>x<W>.onnx` at any other."""
    return "model.onnx" if tuple(size) == tuple(training_size) else (
        f"model_{size[0]}x{size[1]}.onnx")


def models_at_sizes(config, model, sizes):
    """{(H, W): model} for each of `sizes`: `model` itself at its own size, copies holding
    its weights at the others (static exports need one network per size, TOOLCHAIN.md
    trap 5)."""
    by_size = {}
    for size in map(tuple, sizes):
        if size == frame_input_shape(model)[1:3]:
            by_size[size] = model
        elif size not in by_size:
            by_size[size] = build_model(config, size)
            by_size[size].set_weights(model.get_weights())
    return by_size


def export_model(model, metadata, export_dir, images, *, onnx_models=None, saved_model=True,
                 onnx=True, opset=17, layout="NCHW", runtimes=EXPORT_RUNTIMES[1:], skip=(),
                 tolerance=Tolerance(), training_size=None, precisions=None):
    """Writes every export of a model and checks them all against Keras.

    Args:
        model: keras model at the training size (the SavedModel comes from it).
        metadata: dict. The tfseg metadata (`metadata_for` or `make_metadata`).
        export_dir: Path. Output folder, created if needed.
        images: float32 (N, H, W, C) raw pixels at the training size for the parity check.
        onnx_models: dict (H, W) -> keras model (`models_at_sizes`): one ONNX file per
            size. Defaults to `model` at its own size.
        saved_model, onnx: bool. Which formats to write.
        opset: int. ONNX opset.
        layout: "NCHW" or "NHWC", of the ONNX files.
        runtimes: runtimes the ONNX files are checked in (with OpenCV dropped for NHWC
            files, which OpenCV DNN cannot feed).
        skip: runtime names not checked.
        tolerance: `Tolerance`.
        training_size: (H, W), the size written as `model.onnx` (others get their size in
            the name). Defaults to `model`'s input size; give it for a fully convolutional
            model.
        precisions: `tfseg.deploy.quantization.PrecisionJob` or None: copies of every ONNX
            file in other precisions, written once the float32 files pass, and their
            figures (not held to `tolerance`) added to the parity report.

    Returns:
        dict: "saved_model" (path), "onnx" (list of paths), "labels", "parity" (results per
        runtime, see `check_parity`), "precisions" (with `precisions`: figures per file, see
        `export_precisions`).

    Raises:
        ParityError: a runtime not in `skip` failed or missed the tolerance; `export_dir` is
            unchanged and the new files are in `<export_dir>.rejected` for a look.
        TfsegError: an export failed or could not be written; `export_dir` is unchanged.
    """
    export_dir = Path(export_dir)
    rejected = export_dir.with_name(export_dir.name + ".rejected")
    try:
        with replacing_folder(export_dir) as build:
            try:
                exported = _export_into(model, metadata, build, images, onnx_models=onnx_models,
                                        saved_model=saved_model, onnx=onnx, opset=opset,
                                        layout=layout, runtimes=runtimes, skip=skip,
                                        tolerance=tolerance, training_size=training_size,
                                        precisions=precisions)
            except ParityError as error:
                shutil.rmtree(rejected, ignore_errors=True)
                os.replace(build, rejected)
                raise ParityError(f"{str(error).replace(str(build), str(rejected))}; "
                                  f"{export_dir} is unchanged") from None
    except OSError as error:
        raise TfsegError(f"{export_dir}: cannot write the export ({write_failure(error)}); "
                         f"the previous export is unchanged") from None
    shutil.rmtree(rejected, ignore_errors=True)
    return {key: ([export_dir / path.name for path in value] if key == "onnx" else
                  export_dir / value.name if key in ("saved_model", "labels") else value)
            for key, value in exported.items()}


def _export_into(model, metadata, export_dir, images, *, onnx_models, saved_model, onnx, opset,
                 layout, runtimes, skip, tolerance, training_size, precisions):
    """`export_model`'s work, written into the empty folder `export_dir`."""
    training_size = tuple(training_size or frame_input_shape(model)[1:3])
    exported, checks = {"onnx": []}, []
    if saved_model:
        exported["saved_model"] = export_saved_model(model, export_dir / "saved_model",
                                                     metadata)
        checks.append((exported["saved_model"], model))
    for size, sized_model in (onnx_models or {training_size: model}).items() if onnx else ():
        path = export_onnx(sized_model, export_dir / onnx_name(size, training_size),
                           opset=opset, layout=layout, metadata=metadata_at_size(metadata, size))
        exported["onnx"].append(path)
        checks.append((path, sized_model))
    if metadata.get("class_names"):
        exported["labels"] = export_dir / "labels.txt"
        write_text_atomic(exported["labels"], "".join(f"{name}\n"
                                                      for name in metadata["class_names"]))
    if layout == "NHWC":
        runtimes = [name for name in runtimes if not name.startswith("opencv")]
    exported["parity"] = check_parity(checks, images, runtimes=runtimes,
                                      task=metadata["task"], tolerance=tolerance, skip=skip,
                                      report_path=export_dir / "parity.json") if checks else {}
    if precisions and precisions.precisions and exported["onnx"]:
        exported["precisions"] = export_precisions(
            precisions, exported["onnx"], images, runtimes=list(dict.fromkeys(["onnxruntime", *runtimes])),
            skip=skip, report_path=export_dir / "parity.json")
    return exported


def uncached_validation(config):
    """`config`'s validation batches, not cached: an export reads a few of them for parity
    (a cache read in part and released makes tf.data warn) and the rest once per scored
    precision and runtime."""
    return make_datasets(dataclasses.replace(
        config, data=dataclasses.replace(config.data, cache="none"))).validation


def parity_images(validation, count, size):
    """The first `count` inputs of the `validation` batches (inputs, targets) as float32
    NHWC raw pixels, resized (bilinear) to `size` (H, W) where they differ."""
    images = [image if tuple(image.shape[:2]) == tuple(size) else tf.image.resize(image, size)
              for image, _ in validation.unbatch().take(count)]
    return np.stack([np.asarray(image, np.float32) for image in images])


def parity_sequence(validation, count, size):
    """One sequence of at least `count` frames for a recurrent model's parity: every frame of
    the `validation` batches (whole sequences (B, N, H, W, C), or frames), sequence after
    sequence, then run back and forth (N-2 .. 0, 1 .. N-1, ...) until `count` are reached;
    float32 NHWC raw pixels resized (bilinear) to `size` (H, W) where they differ."""
    frames = []
    for inputs, _ in validation:
        inputs = np.asarray(inputs, np.float32)
        frames.extend(inputs.reshape(-1, *inputs.shape[-3:]))
        if len(frames) >= count:
            break
    frames = np.stack(frames)
    if tuple(frames.shape[1:3]) != tuple(size):
        frames = tf.image.resize(frames, size).numpy()
    cycle = np.concatenate([np.arange(len(frames)), np.arange(len(frames) - 2, 0, -1)])
    return frames[np.resize(cycle, max(count, len(frames)))]


def export_from_config(model, config, export_dir, validation, *, sizes=(), layout=None,
                       opset=None, skip=(), precisions=("float32",),
                       calibration_frames=CALIBRATION_FRAMES):
    """`export_model` of a run's float32 inference `model` with the options of
    `config.export` (arguments given here win), checked on the first `parity_samples`
    frames of the `validation` batches. Each ONNX file gets a copy in every other of
    `precisions` ("float16", "int8": `tfseg.deploy.quantization`; int8 calibrated on
    `calibration_frames` training frames of `config`). A recurrent step model is checked on one sequence of
    at least `SEQUENCE_FRAMES` frames (`parity_sequence`), its validation batches whole
    sequences (B, N, H, W, C) or frames. `sizes` defaults to the training size (for a fully
    convolutional super-resolution model, the config's data.height x data.width)."""
    options = config.export
    layout = layout or options.layout
    size = frame_input_shape(model)[1:3]
    if None in size:
        size = (config.data.height, config.data.width)
    recurrent = model_state_shape(model) is not None
    job = PrecisionJob(check_precisions(precisions, recurrent=recurrent), config,
                       calibration_frames)
    images = (parity_images(validation, options.parity_samples, size) if not recurrent else
              parity_sequence(validation, max(options.parity_samples, SEQUENCE_FRAMES), size))
    return export_model(
        model, metadata_for(config, layout), export_dir, images,
        onnx_models=models_at_sizes(config, model, sizes or [size]),
        saved_model=options.saved_model, onnx=options.onnx, opset=opset or options.opset,
        layout=layout, runtimes=options.parity_runtimes, skip=skip,
        tolerance=Tolerance(options.max_abs_diff, options.min_argmax_agreement),
        training_size=size, precisions=job)


def export_from_run_dir(run_dir, *, sizes=(), layout=None, opset=None, skip=(), **precisions):
    """`export_from_config` of the latest checkpoint of run `run_dir` into `run_dir/export`,
    checked on the run's validation frames; prints what it wrote and each runtime's parity.
    `precisions`: `export_from_config`'s precisions and calibration_frames."""
    config, model = load_run(run_dir)
    exported = export_from_config(model, config, Path(run_dir) / "export",
                                  uncached_validation(config), sizes=sizes,
                                  layout=layout, opset=opset, skip=skip, **precisions)
    print_exported(exported, skip)
    return exported


def export_preset(reference, output, *, sizes=(), layout=None, opset=None, skip=(),
                  overrides=(), **precisions):
    """`export_from_config` of the preset `reference` (`preset:NAME`) into the folder
    `output`, checked on the validation frames of its config with `overrides` (e.g.
    `data.path=FOLDER`); prints what it wrote and each runtime's parity.

    Without overrides, a preset whose data cannot be read here (CamVid, the SR sets: data
    the user may not have) is checked on `RANDOM_FRAMES` seeded random frames instead, and
    a line says so: agreement on them is agreement of the computation, not a score.
    """
    preset, config, model = load_preset(reference, overrides)
    try:
        validation = uncached_validation(config)
        note = None
    except TfsegError as error:
        if overrides:
            raise
        validation = random_frames(config)
        note = (f"parity on {RANDOM_FRAMES} seeded random frames: the data of "
                f"{preset.config_path} cannot be read here ({str(error).splitlines()[0]}); "
                f"give --set data.path=FOLDER to check on its frames")
    exported = export_from_config(model, config, Path(output), validation, sizes=sizes,
                                  layout=layout, opset=opset, skip=skip, **precisions)
    print_exported(exported, skip)
    if note:
        print(f"note        {note}")
    return exported


def random_frames(config, count=None):
    """Batches (1 frame each) of `count` (default `RANDOM_FRAMES`) uniform random float32
    raw frames of the config's size and channels in 0..255, seeded, as (frame, frame)."""
    count = count or RANDOM_FRAMES
    frames = np.random.default_rng(0).uniform(0, 255, (
        count, config.data.height, config.data.width, config.model.input_channels))
    frames = frames.astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((frames, frames)).batch(1)


def print_exported(exported, skip):
    """What an export wrote, and each runtime's parity, one line each."""
    if "saved_model" in exported:
        print(f"SavedModel  {exported['saved_model']}")
    for path in exported["onnx"]:
        print(f"ONNX        {path}")
    for label, result in exported["parity"].items():
        print(f"parity      {label}: {describe(result)}")
    for name, result in exported.get("precisions", {}).items():
        print(f"precision   {describe_precision(name, result)}")
    if skip:
        print(f"skipped     {', '.join(skip)}")
