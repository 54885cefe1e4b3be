"""One case's model and exports (built once per case, in a child), and one runtime's latency
and peak memory on it (each row in a child of its own)."""

import math
import resource
import time
from pathlib import Path

import numpy as np

from tfseg.benchmarking.cases import Case, Variant
from tfseg.benchmarking.flops import count_flops
from tfseg.benchmarking.machine import peak_rss_mib, time_calls
from tfseg.data.preprocess import Preprocessing
from tfseg.deploy import runtimes
from tfseg.deploy.metadata import make_metadata

# tfseg modules that load TensorFlow are imported inside the jobs that use them, which run in
# child processes: the parent never loads TensorFlow, and each child only what its job needs.


def prepare_case(case, formats, directory):
    """Builds the case's float32 model, counts its work and writes the exports `formats`
    ("savedmodel", "onnx") under `directory`; an export that fails is recorded, not raised."""
    from tfseg.deploy.exports import export_onnx, export_saved_model

    case = Case(**case)
    model = build_model(case, "float32")
    directory = Path(directory)
    directory.mkdir(parents=True)
    metadata = export_metadata(case)
    exporters = {"savedmodel": lambda: export_saved_model(model, directory / "saved_model",
                                                          metadata),
                 "onnx": lambda: export_onnx(model, directory / "model.onnx",
                                             metadata=metadata)}
    artifacts = {}
    for name in formats:
        try:
            artifacts[name] = str(exporters[name]())
        except Exception as error:  # noqa: BLE001 (any failure fails this format's rows)
            artifacts[name] = {"error": _first_line(error)}
    return {"gflops": count_flops(model, (1, case.height, case.width, case.channels)) / 1e9,
            "parameters": sum(math.prod(w.shape) for w in model.trainable_weights),
            "artifacts": artifacts}


def measure_row(case, variant, artifact, repeats, warmup, batch):
    """Latency of one runtime on random pixels, and the peak memory of the process running
    it. OpenCV runs in `tfseg.deploy.opencv_dnn`'s worker process: its latency includes the
    pipe to the worker, and its peak memory is the worker's.

    A recurrent model streams, as `predict` runs a sequence: each call is the next `batch`
    frames, one at a time, from the state the previous call left (`Runtime.advance`); the row
    says whether the state changed over the timed calls (`state_changed`)."""
    case, variant = Case(**case), Variant(*variant)
    rss_after_imports = peak_rss_mib()
    pixels = np.random.default_rng(0).uniform(
        0, 255, (batch, case.height, case.width, case.channels)).astype(np.float32)
    started = time.perf_counter()
    try:
        runtime = (runtimes.from_keras(build_model(case, variant.dtype),
                                       export_metadata(case), batch_size=batch,
                                       jit_compile=variant.jit_compile)
                   if variant.runtime == "keras" else runtimes.load(artifact, variant.runtime))
    except runtimes.RuntimeUnavailable as error:
        return {"status": "unavailable", "reason": str(error)}
    loaded = time.perf_counter()
    with runtime:
        outputs = runtime(pixels)
        first_call_s = time.perf_counter() - loaded
        state = runtime.state
        timing = time_calls(lambda: runtime(pixels), warmup=warmup - 1, repeats=repeats)
        streamed = ({"state_changed": not np.array_equal(state, runtime.state)}
                    if runtime.recurrent else {})
    return {"runtime_version": runtime.version, "output_shape": list(outputs.shape[1:]),
            "load_s": loaded - started,
            "first_call_s": first_call_s,
            "median_ms": 1e3 * timing["median_s"], "p90_ms": 1e3 * timing["p90_s"],
            "min_ms": 1e3 * timing["min_s"], "max_ms": 1e3 * timing["max_s"],
            "images_per_s": batch / timing["median_s"],
            "peak_rss_mib": max(peak_rss_mib(), peak_rss_mib(resource.RUSAGE_CHILDREN)),
            "rss_after_imports_mib": rss_after_imports, **streamed}


def build_model(case, dtype):
    """The case's model (weights drawn with seed 0) computing in `dtype` (float32, or the
    mixed policy of bfloat16 or float16)."""
    import keras

    from tfseg import models

    keras.config.set_dtype_policy(dtype if dtype == "float32" else f"mixed_{dtype}")
    keras.utils.set_random_seed(0)
    return models.build(case.model, input_shape=(case.height, case.width),
                        input_channels=case.channels, **case.options)


def export_metadata(case):
    """The tfseg metadata the case's exports carry (`tfseg.deploy.metadata.make_metadata`)."""
    from tfseg.config.schema import RECURRENT_MODELS
    from tfseg.models import SEGMENTATION_MODELS

    if case.model in SEGMENTATION_MODELS:
        task = {"task": "segmentation",
                "class_names": [f"class_{i}" for i in range(case.options["num_classes"])]}
    else:
        task = {"task": "super_resolution", "scale": case.options["scale"]}
    return make_metadata(model=case.model, input_size=(case.height, case.width),
                         input_channels=case.channels,
                         layout="NCHW", mean=[0.0] * case.channels, std=[1.0] * case.channels,
                         preprocessing=Preprocessing(
                             resize_to=[case.height, case.width],
                             colour="gray" if case.channels == 1 else "rgb"),
                         recurrent=case.model in RECURRENT_MODELS, **task)


def _first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
