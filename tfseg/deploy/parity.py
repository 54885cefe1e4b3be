"""Parity of exports with Keras: every exported file run in every runtime on the same
frames, compared with the in-memory model, and reported in `parity.json`. A SavedModel is
checked in a fresh process (`python -m tfseg.runtimes`), as a user's program would load it.

A recurrent model's frames are one sequence, run frame by frame from a zero state in every
runtime, each carrying its own state: the report gives the largest difference over all
frames, at the last frame (a state that drifts apart shows there) and of the states."""

import dataclasses
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfseg.deploy.runtimes import (
    RuntimeUnavailable,
    frame_input_shape,
    from_keras,
    load,
    states_file,
)
from tfseg.utils.errors import TfsegError
from tfseg.utils.files import write_json
from tfseg.utils.processes import run_child


class ParityError(TfsegError):
    """An exported model disagrees with Keras beyond the tolerance (message names the
    runtime)."""


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How closely a runtime must match Keras: logits for segmentation, PSNR for SR."""

    max_abs_diff: float = 1e-3
    min_argmax_agreement: float = 0.999   # a fraction
    min_psnr: float = 60.0                # dB, super-resolution outputs on 0..255


def run_onnxruntime(onnx_path, images):
    """Outputs of the ONNX export `onnx_path` in onnxruntime for NHWC `images`, in the file's
    own layout (NCHW for an NCHW export), as `tfseg.deploy.opencv_dnn.run_opencv` returns them."""
    with load(onnx_path, "onnxruntime") as runtime:
        outputs = runtime(images)
    return outputs.transpose(0, 3, 1, 2) if runtime.metadata["layout"] == "NCHW" else outputs


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


def compare_sequence(reference, outputs, task, tolerance):
    """`compare` of (outputs, states) pairs: for a recurrent model (states not None), also
    the difference at the last frame and of the states after each frame, which must pass
    `tolerance.max_abs_diff` too."""
    (expected, expected_states), (actual, states) = reference, outputs
    result = compare(expected, actual, task, tolerance)
    if expected_states is None or "error" in result:
        return result
    if states is None or states.shape != expected_states.shape:
        return {"error": f"states of shape {getattr(states, 'shape', None)}, expected "
                         f"{expected_states.shape}", "passed": False}
    state_difference = np.abs(states.astype(np.float64) - expected_states)
    result.update(frames=len(actual),
                  last_frame_max_abs_diff=float(np.abs(actual[-1].astype(np.float64)
                                                       - expected[-1]).max()),
                  state_max_abs_diff=float(state_difference.max()),
                  last_state_max_abs_diff=float(state_difference[-1].max()))
    result["passed"] = (result["passed"]
                        and result["state_max_abs_diff"] <= tolerance.max_abs_diff)
    return result


def run_model(runtime, images):
    """(outputs, states) of a loaded `runtime` on `images`: a recurrent model's run as one
    sequence (`Runtime.run_sequence`), None for the states of others."""
    return runtime.run_sequence(images) if runtime.recurrent else (runtime(images), None)


def run_parity(path, runtime, images, reference, *, task, tolerance):
    """Loads `path` in `runtime`, runs `images` and compares with `reference` ((outputs,
    states), `run_model`); a runtime that fails to load or run fails by name (its error
    recorded) instead of stopping the export, and one that is not installed here is recorded
    as unavailable (it passes: nothing ran). A SavedModel is loaded in a fresh process, as a
    user's program would load it."""
    try:
        if runtime == "savedmodel":
            *outputs, version = run_in_fresh_process(path, runtime, images)
        else:
            with load(path, runtime) as loaded:
                outputs, version = run_model(loaded, images), loaded.version
    except RuntimeUnavailable as error:
        return {"unavailable": str(error).removeprefix(f"{runtime}: "), "passed": True}
    except (TypeError, AttributeError, NameError):
        raise  # a bug here, not a runtime failure: keep the traceback
    except Exception as error:  # any runtime failure fails that runtime, by name
        return {"error": str(error).strip().splitlines()[-1], "passed": False}
    return {"version": version, **compare_sequence(reference, tuple(outputs), task, tolerance)}


def run_in_fresh_process(path, runtime, images, *, timeout=900):
    """(outputs, states, runtime version) of `path` in `runtime` run by a new Python process
    (`python -m tfseg.runtimes`), so nothing this process has built or cached is reused;
    states as `run_model` gives them."""
    with tempfile.TemporaryDirectory(prefix="tfseg-parity-") as tmp:
        inputs, outputs = Path(tmp) / "inputs.npy", Path(tmp) / "outputs.npy"
        np.save(inputs, np.asarray(images, np.float32))
        version = run_child("tfseg.runtimes", path, runtime, inputs, outputs,
                            what=f"{path}: {runtime} in a fresh process", timeout=timeout)
        states = states_file(outputs)
        return (np.load(outputs), np.load(states) if states.exists() else None,
                version.strip())


def check_parity(exports, images, *, runtimes, task, tolerance=Tolerance(), skip=(),
                 report_path):
    """Compares every exported file in every runtime with Keras and writes a JSON report.

    Args:
        exports: list of (path, keras model) pairs: a SavedModel directory or ONNX file and the
            in-memory model it came from (the reference), at the file's input size.
        images: float32 (N, H, W, C) raw pixels at the first model's size; resized
            (bilinear) to each other model's size. For a recurrent model: the frames of one
            sequence, in order.
        runtimes: runtime names to check the ONNX files in ("onnxruntime" and the OpenCV
            DNN engines of `tfseg.deploy.opencv_dnn.RUNTIMES`); SavedModel directories are checked
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
    results = {}
    first_size = frame_input_shape(exports[0][1])[1:3]
    for path, model in exports:
        path = Path(path)
        size = frame_input_shape(model)[1:3]
        sized = images if size == first_size else tf.image.resize(images, size).numpy()
        reference = run_model(from_keras(model), sized)
        names = ["savedmodel"] if path.is_dir() else runtimes
        for runtime in (name for name in names if name not in skip):
            label = runtime if size == first_size else f"{runtime} {path.name}"
            result = run_parity(path, runtime, sized, reference, task=task,
                                tolerance=tolerance)
            results[label] = {"file": path.name, "runtime": runtime,
                              "input_size": list(size), **result}
    report = {"reference": "keras", "samples": len(images), "task": task,
              "recurrent": reference[1] is not None,
              "tolerance": dataclasses.asdict(tolerance), "skipped": sorted(skip), "runtimes": results,
              "passed": all(r["passed"] for r in results.values())}
    write_json(report, report_path)
    failed = {label: r for label, r in results.items() if not r["passed"]}
    if failed:
        details = "; ".join(f"{label}: {describe(r)}" for label, r in failed.items())
        raise ParityError(f"exports disagree with Keras ({details}); see {report_path}; "
                          f"--skip-runtime NAME accepts a runtime that cannot match")
    return results


def record_precisions(report_path, precisions):
    """Adds the figures of an export's copies in other precisions
    (`tfseg.deploy.quantization.export_precisions`) to the parity report `report_path`, under
    "precisions": reported, never held to the tolerance (the report's "passed" is float32's)."""
    report = json.loads(Path(report_path).read_text())
    write_json({**report, "precisions": precisions}, report_path)


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
    figures = (f"max abs diff {result['max_abs_diff']:.2g}, "
               f"argmax agreement {100 * result['argmax_agreement']:.2f} %")
    if "frames" in result:
        figures += (f" over {result['frames']} frames of one sequence (last frame "
                    f"{result['last_frame_max_abs_diff']:.2g}; state "
                    f"{result['state_max_abs_diff']:.2g})")
    return figures
