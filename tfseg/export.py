"""`python -m tfseg.export --run-dir DIR`: export a trained run as a SavedModel and static-size
ONNX files, and prove that every runtime agrees with Keras.

    python -m tfseg.export --run-dir runs/default --size 128x128 --size 256x256

writes into `DIR/export`: `saved_model/` (raw pixels in, with `assets.extra/tfseg.json`),
`model.onnx` at the training size and `model_<H>x<W>.onnx` at any other `--size` (metadata
inside each), `labels.txt` (segmentation: one class name per line, in id order) and
`parity.json`: Keras against the SavedModel, onnxruntime and both OpenCV DNN engines on the
run's validation frames (resized to each ONNX size that differs from the training size). A
runtime outside the tolerance is named and the command exits with status 2, unless
`--skip-runtime` names it.

Every export calls the model with `training=False` explicitly (TOOLCHAIN.md trap 1), writes to a
temporary name and renames when complete, so an interrupted export never looks finished.
"""

import argparse
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tfseg.cli import parse_size
from tfseg.config import PreprocessConfig
from tfseg.errors import TfsegError, run_cli
from tfseg.files import write_text_atomic
from tfseg.onnx_conversion import INPUT_NAME, OUTPUT_NAME
from tfseg.runtimes import (
    RUNTIMES,
    RuntimeUnavailable,
    encode_metadata,
    from_keras,
    load,
    make_metadata,
    write_saved_model_metadata,
)

EXPORT_RUNTIMES = RUNTIMES[1:]   # every runtime but the Keras reference


class ParityError(TfsegError):
    """An exported model disagrees with Keras beyond the tolerance (message names the
    runtime)."""


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How closely a runtime must match Keras: logits for segmentation, PSNR for SR."""

    max_abs_diff: float = 1e-3
    min_argmax_agreement: float = 0.999   # a fraction
    min_psnr: float = 60.0                # dB, super-resolution outputs on 0..255


def export_saved_model(model, directory, metadata=None):
    """SavedModel with a `serving_default` signature: `pixels` (N, H, W, C) -> `logits`, and
    the tfseg `metadata` (see `tfseg.runtimes.make_metadata`) in `assets.extra/tfseg.json`."""
    import tensorflow as tf
    from keras.export import ExportArchive

    directory = Path(directory)
    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name=INPUT_NAME)
    archive = ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default",
                         lambda pixels: {OUTPUT_NAME: model(pixels, training=False)},
                         input_signature=[spec])
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    archive.write_out(str(partial), verbose=False)
    if metadata is not None:
        write_saved_model_metadata(partial, {**metadata, "layout": "NHWC"})
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(partial, directory)
    return directory


def export_onnx(model, path, *, opset=17, layout="NCHW", metadata=None, timeout=3600):
    """ONNX file at the model's static input size, batch 1.

    With layout "NCHW" the input and output are channels-first, so the blob from
    `cv2.dnn.blobFromImage` feeds the model directly. `metadata` (decoded, see
    `tfseg.runtimes.make_metadata`) is stored in the file's metadata_props; the tfseg
    version, input size, channels and layout always are, from the model itself.

    The conversion runs in a child process (`tfseg.onnx_conversion`) on a saved copy of the
    model: tf2onnx keeps a copy of every weight per optimiser pass under the default protobuf
    backend (2 GB extra for LinkNet, out of memory for FCN-32s), which the child avoids.

    Raises:
        TfsegError: the conversion failed; the message holds the converter's last line.
    """
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    with tempfile.TemporaryDirectory(prefix="tfseg-onnx-") as tmp:
        saved = Path(tmp) / "model.keras"
        model.save(saved)
        options = {"opset": opset, "layout": layout,
                   "metadata": encode_metadata(metadata or {})}
        try:
            run_child("tfseg.onnx_conversion", saved, partial, json.dumps(options),
                      what=f"{path}: ONNX conversion", timeout=timeout,
                      environment={"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"})
        except TfsegError:
            partial.unlink(missing_ok=True)
            raise
    os.replace(partial, path)
    return path


def run_child(module, *args, what, timeout, environment=None):
    """stdout of `python -m module args...` run in a child process (TensorFlow's notices
    off, `environment` added).

    Raises:
        TfsegError: "<what> failed: <the child's last error line>", or took too long.
    """
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(environment or {})}
    try:
        result = subprocess.run([sys.executable, "-m", module, *map(str, args)],
                                capture_output=True, text=True, timeout=timeout,
                                env=environment)
    except subprocess.TimeoutExpired:
        raise TfsegError(f"{what} took longer than {timeout} s") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise TfsegError(f"{what} failed: {last}")
    return result.stdout


def run_onnxruntime(onnx_path, images):
    """Outputs of the ONNX export `onnx_path` in onnxruntime for NHWC `images`, in the file's
    own layout (NCHW for an NCHW export), as `tfseg.opencv_dnn.run_opencv` returns them."""
    with load(onnx_path, "onnxruntime") as runtime:
        outputs = runtime(images)
    return outputs.transpose(0, 3, 1, 2) if runtime.metadata["layout"] == "NCHW" else outputs


def onnx_name(size, training_size):
    """`model.onnx` at the training size, `model_<H>x<W>.onnx` at any other."""
    return "model.onnx" if tuple(size) == tuple(training_size) else (
        f"model_{size[0]}x{size[1]}.onnx")


def compare(reference, outputs, task, tolerance):
    """One runtime's outputs against Keras's: max abs difference and argmax agreement
    (segmentation) or PSNR (super-resolution), and whether they pass `tolerance`."""
    if outputs.shape != reference.shape:
        return {"error": f"output shape {outputs.shape}, expected {reference.shape}",
                "passed": False}
    difference = np.abs(outputs.astype(np.float64) - reference)
    result = {"max_abs_diff": float(difference.max())}
    if task == "super_resolution":
        mse = float(np.mean(difference**2))
        result["psnr"] = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
        result["passed"] = result["psnr"] >= tolerance.min_psnr
    else:
        result["argmax_agreement"] = float(np.mean(outputs.argmax(-1) == reference.argmax(-1)))
        result["passed"] = (result["max_abs_diff"] <= tolerance.max_abs_diff
                            and result["argmax_agreement"] >= tolerance.min_argmax_agreement)
    return result


def run_parity(path, runtime, images, reference, *, task, tolerance):
    """Loads `path` in `runtime`, runs `images` and compares with `reference`; a runtime that
    fails to load or run fails by name (its error recorded) instead of stopping the export,
    and one that is not installed here is recorded as unavailable (it passes: nothing ran).
    A SavedModel is loaded in a fresh process, as a user's program would load it."""
    try:
        if runtime == "savedmodel":
            outputs, version = run_in_fresh_process(path, runtime, images)
        else:
            with load(path, runtime) as loaded:
                outputs, version = loaded(images), loaded.version
    except RuntimeUnavailable as error:
        return {"unavailable": str(error).removeprefix(f"{runtime}: "), "passed": True}
    except (TypeError, AttributeError, NameError):
        raise  # a bug here, not a runtime failure: keep the traceback
    except Exception as error:  # any runtime failure fails that runtime, by name
        return {"error": str(error).strip().splitlines()[-1], "passed": False}
    return {"version": version, **compare(reference, outputs, task, tolerance)}


def run_in_fresh_process(path, runtime, images, *, timeout=900):
    """(outputs, runtime version) of `path` in `runtime` run by a new Python process
    (`python -m tfseg.runtimes`), so nothing this process has built or cached is reused."""
    with tempfile.TemporaryDirectory(prefix="tfseg-parity-") as tmp:
        inputs, outputs = Path(tmp) / "inputs.npy", Path(tmp) / "outputs.npy"
        np.save(inputs, np.asarray(images, np.float32))
        version = run_child("tfseg.runtimes", path, runtime, inputs, outputs,
                            what=f"{path}: {runtime} in a fresh process", timeout=timeout)
        return np.load(outputs), version.strip()


def check_parity(exports, images, *, runtimes, task, tolerance=Tolerance(), skip=(),
                 report_path):
    """Compares every exported file in every runtime with Keras and writes a JSON report.

    Args:
        exports: list of (path, keras model) pairs: a SavedModel directory or ONNX file and the
            in-memory model it came from (the reference), at the file's input size.
        images: float32 (N, H, W, C) raw pixels at the first model's size; resized
            (bilinear) to each other model's size.
        runtimes: runtime names to check the ONNX files in ("onnxruntime" and the OpenCV
            DNN engines of `tfseg.opencv_dnn.RUNTIMES`); SavedModel directories are checked
            in "savedmodel".
        task: "segmentation" or "super_resolution".
        tolerance: `Tolerance`.
        skip: runtime names not run at all (listed in the report as skipped).
        report_path: where the JSON report goes.

    Returns:
        dict label -> result: the runtime name for files at the first model's size,
        "<runtime> <file name>" for the others. A result holds the runtime's "version" and
        its figures, an "error", or "unavailable" (why the runtime is not installed here).

    Raises:
        ParityError: a runtime failed or missed a tolerance; the message names it.
    """
    import tensorflow as tf

    results = {}
    first_size = exports[0][1].input_shape[1:3]
    for path, model in exports:
        path = Path(path)
        size = model.input_shape[1:3]
        sized = images if size == first_size else tf.image.resize(images, size).numpy()
        reference = from_keras(model)(sized)
        names = ["savedmodel"] if path.is_dir() else runtimes
        for runtime in (name for name in names if name not in skip):
            label = runtime if size == first_size else f"{runtime} {path.name}"
            result = run_parity(path, runtime, sized, reference, task=task,
                                tolerance=tolerance)
            results[label] = {"file": path.name, "runtime": runtime,
                              "input_size": list(size), **result}
    report = {"reference": "keras", "samples": len(images), "task": task,
              "tolerance": dataclasses.asdict(tolerance), "skipped": sorted(skip), "runtimes": results,
              "passed": all(r["passed"] for r in results.values())}
    write_json(report, report_path)
    failed = {label: r for label, r in results.items() if not r["passed"]}
    if failed:
        details = "; ".join(f"{label}: {describe(r)}" for label, r in failed.items())
        raise ParityError(f"exports disagree with Keras ({details}); see {report_path}; "
                          f"--skip-runtime NAME accepts a runtime that cannot match")
    return results


def describe(result):
    """One line of a runtime's parity figures (or why it did not run), and what ran it."""
    if "unavailable" in result:
        return f"not available: {result['unavailable']}"
    if "error" in result:
        return result["error"]
    return f"{_figures(result)} ({result['version']})"


def _figures(result):
    if "psnr" in result:
        return f"PSNR {result['psnr']:.1f} dB, max abs diff {result['max_abs_diff']:.2g}"
    return (f"max abs diff {result['max_abs_diff']:.2g}, "
            f"argmax agreement {100 * result['argmax_agreement']:.2f} %")


def metadata_for(config, layout):
    """The tfseg metadata of `config`'s exports (`tfseg.runtimes.make_metadata`)."""
    data, task = config.data, config.model.task
    size = [data.height, data.width]
    # Only interferograms are preprocessed (tfseg.data.preprocess); CamVid frames are used as
    # stored and SR inputs at any size.
    interferograms = data.source in ("synthetic", "interferograms")
    steps = data.preprocess if interferograms else PreprocessConfig(
        blur=0, background_every=0, clahe_clip_limit=0.0)
    preprocessing = {**dataclasses.asdict(steps),
                     "resize_to": [] if task == "super_resolution" else size,
                     "colour": "rgb" if config.model.input_channels == 3 else "gray"}
    return make_metadata(
        model=config.model.name, task=task, input_size=size,
        input_channels=config.model.input_channels, layout=layout, mean=data.mean,
        std=data.std, preprocessing=preprocessing,
        class_names=data.class_names if task == "segmentation" else None,
        class_colours=data.class_colours or None,
        scale=config.model.scale if task == "super_resolution" else None)


def metadata_at_size(metadata, size):
    """`metadata` of an export at `size` (H, W): that input size, and frames resized to it
    where the recipe resizes frames (a fully convolutional SR model resizes nothing)."""
    preprocessing = dict(metadata["preprocessing"])
    if preprocessing.get("resize_to"):
        preprocessing["resize_to"] = [int(v) for v in size]
    return {**metadata, "input_size": [int(v) for v in size], "preprocessing": preprocessing}


def models_at_sizes(config, model, sizes):
    """{(H, W): model} for each of `sizes`: `model` itself at its own size, copies holding
    its weights at the others (static exports need one network per size, TOOLCHAIN.md
    trap 5)."""
    from tfseg.training import build_model

    by_size = {}
    for size in map(tuple, sizes):
        if size == tuple(model.input_shape[1:3]):
            by_size[size] = model
        elif size not in by_size:
            by_size[size] = build_model(config, size)
            by_size[size].set_weights(model.get_weights())
    return by_size


def export_model(model, metadata, export_dir, images, *, onnx_models=None, saved_model=True,
                 onnx=True, opset=17, layout="NCHW", runtimes=EXPORT_RUNTIMES[1:], skip=(),
                 tolerance=Tolerance(), training_size=None):
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

    Returns:
        dict: "saved_model" (path), "onnx" (list of paths), "labels", "parity" (results per
        runtime, see `check_parity`).

    Raises:
        ParityError: a runtime not in `skip` failed or missed the tolerance.
        TfsegError: an export failed.
    """
    export_dir = Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    training_size = tuple(training_size or model.input_shape[1:3])
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
    return exported


def parity_images(validation, count, size):
    """The first `count` inputs of the `validation` batches (inputs, targets) as float32
    NHWC raw pixels, resized (bilinear) to `size` (H, W) where they differ."""
    import tensorflow as tf

    images = [image if tuple(image.shape[:2]) == tuple(size) else tf.image.resize(image, size)
              for image, _ in validation.unbatch().take(count)]
    return np.stack([np.asarray(image, np.float32) for image in images])


def export_from_config(model, config, export_dir, validation, *, sizes=(), layout=None,
                       opset=None, skip=()):
    """`export_model` of a run's float32 inference `model` with the options of
    `config.export` (arguments given here win), checked on the first `parity_samples`
    frames of the `validation` batches. `sizes` defaults to the training size (for a fully
    convolutional super-resolution model, the config's data.height x data.width)."""
    options = config.export
    layout = layout or options.layout
    size = tuple(model.input_shape[1:3])
    if None in size:
        size = (config.data.height, config.data.width)
    return export_model(
        model, metadata_for(config, layout), export_dir,
        parity_images(validation, options.parity_samples, size),
        onnx_models=models_at_sizes(config, model, sizes or [size]),
        saved_model=options.saved_model, onnx=options.onnx, opset=opset or options.opset,
        layout=layout, runtimes=options.parity_runtimes, skip=skip,
        tolerance=Tolerance(options.max_abs_diff, options.min_argmax_agreement),
        training_size=size)


def write_json(data, path):
    """Writes JSON atomically (temporary name, then rename); NaN becomes null (valid JSON)."""
    write_text_atomic(path, json.dumps(_finite_or_none(data), indent=2, allow_nan=False) + "\n")


def _finite_or_none(value):
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m tfseg.export",
        description="Export a trained run (SavedModel, ONNX per size, labels.txt) and check "
                    "every runtime against Keras.")
    parser.add_argument("--run-dir", type=Path, required=True, help="a tfseg.train run")
    parser.add_argument("--size", type=lambda text: parse_size(text, minimum=8), action="append", default=[],
                        metavar="HxW", help="static ONNX input size (repeatable; default: "
                        "the training size)")
    parser.add_argument("--layout", choices=["NCHW", "NHWC"], default=None,
                        help="ONNX layout (default: the config's export.layout)")
    parser.add_argument("--opset", type=int, default=None,
                        help="ONNX opset (default: the config's export.opset)")
    parser.add_argument("--skip-runtime", dest="skip", action="append", default=[],
                        choices=EXPORT_RUNTIMES, help="do not check this runtime "
                        "(repeatable)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from tfseg.data.pipeline import make_datasets
    from tfseg.runs import load_run

    config, model = load_run(args.run_dir)
    exported = export_from_config(model, config, args.run_dir / "export",
                                  make_datasets(config).validation, sizes=args.size,
                                  layout=args.layout, opset=args.opset, skip=args.skip)
    if "saved_model" in exported:
        print(f"SavedModel  {exported['saved_model']}")
    for path in exported["onnx"]:
        print(f"ONNX        {path}")
    for label, result in exported["parity"].items():
        print(f"parity      {label}: {describe(result)}")
    if args.skip:
        print(f"skipped     {', '.join(args.skip)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
