"""`python -m tfseg.bench`: speed of every model in every runtime on this machine.

Per model (at the seeds' input sizes) and runtime (Keras, SavedModel, onnxruntime, OpenCV DNN
new and classic engines): median and p90 latency after warm-up, images per second, GFLOPs per
image, the achieved GFLOP/s and its fraction of this machine's own convolution throughput
(measured on the same run), and the peak resident memory of the process that ran it. With
`--pipelines`, the images per second of the input pipelines too. Prints one Markdown table;
`--json` and `--markdown` also write the results, `--compare OLD.json` prints new / old ratios.

Every measurement runs in a fresh child process, so each row's peak memory is that runtime's
own, thread pools and compiled graphs never carry over, and a runtime that fails or crashes
fails its row only:

    python -m tfseg.bench --json runs/bench.json --markdown runs/bench.md
    python -m tfseg.bench --models linknet --runtimes keras onnxruntime --dtypes float32 bfloat16
    python -m tfseg.bench --models --pipelines
"""

import argparse
import dataclasses
import json
import math
import os
import re
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import typing
from pathlib import Path

from tfseg.cli import parse_size
from tfseg.errors import TfsegError, run_cli
from tfseg.files import write_text_atomic
from tfseg.hardware import FEATURE_FLAGS, choose_precision, cpu_info, gpus
from tfseg.runtimes import RUNTIMES

# Keras compute precisions; "auto" is the one `train.mixed_precision: auto` picks here.
DTYPES = ("auto", "float32", "bfloat16", "float16")
# What each runtime loads: the in-memory Keras model, the SavedModel or the ONNX file.
ARTIFACTS = {"keras": None, "savedmodel": "savedmodel",
             **{name: "onnx" for name in RUNTIMES[2:]}}   # onnxruntime and OpenCV DNN
# Graph ops whose work is multiply-adds (counted 2 FLOPs each, as the papers do); element-wise
# work (bias, batch norm, activations, resizing, pooling) is left out.
MULTIPLY_ADD_OPS = ("Conv2D", "Conv2DBackpropInput", "DepthwiseConv2dNative", "MatMul",
                    "BatchMatMulV2", "BatchMatMulV3")
# The machine's reference: a 3x3 convolution, 64 -> 64 channels, on one 256x256 image
# (TOOLCHAIN.md: about 420 GFLOP/s on the project machine).
REFERENCE_CONV = {"size": 256, "channels": 64, "kernel": 3}
# The same machine's figures in TOOLCHAIN.md, re-measured by every run to show how fast the
# machine is today: the 3x3 convolution above, a 4096^3 float32 matmul, and
# keras.applications ResNet50 (no top, weights=None) on one 512x512x3 image in a tf.function.
TOOLCHAIN_ANCHORS = {"conv_gflop_per_s": 420.0, "matmul_gflop_per_s": 270.0,
                     "resnet50_ms": 115.0}
PEAK_TARGET = 0.5
RESULT_PREFIX = "TFSEG_BENCH_RESULT "
REPO = Path(__file__).resolve().parent.parent
SCHEMA = "tfseg.bench/1"


class Variant(typing.NamedTuple):
    """How a row runs its case: the runtime, and for Keras the precision and XLA."""

    runtime: str
    dtype: str = "float32"
    jit_compile: bool = False

    @property
    def label(self):
        return f"{self.runtime} {self.dtype}" + (" XLA" if self.jit_compile else "")


@dataclasses.dataclass(frozen=True)
class Case:
    """One model at one input size.

    Args:
        model: str. Name in `tfseg.models.MODEL_BUILDERS`.
        height: int. Input height.
        width: int. Input width.
        channels: int. Input channels.
        options: dict. Keyword arguments of `tfseg.models.build` beyond the input shape.
        target_ms: float. The issue's median latency target at batch 1. Defaults to None.
    """

    model: str
    height: int
    width: int
    channels: int
    options: dict
    target_ms: float | None = None

    @property
    def label(self):
        options = ", ".join(f"{key}={value}" for key, value in self.options.items())
        return f"{self.model} ({options})"

    @property
    def shape(self):
        return f"{self.height}x{self.width}x{self.channels}"


# The seeds' input sizes (MODELS.md) and the issue's latency targets.
CASES = (
    Case("fcn32_vgg16", 768, 128, 1, {"num_classes": 2}),
    Case("fcn_resnet18", 768, 128, 1, {"num_classes": 2}, target_ms=900),
    Case("icnet", 1024, 1024, 1, {"num_classes": 2, "width": 1.0}, target_ms=400),
    Case("icnet", 1024, 1024, 1, {"num_classes": 2, "width": 0.5}, target_ms=120),
    Case("linknet", 704, 960, 3, {"num_classes": 12}, target_ms=180),
    Case("sr_johnson", 72, 72, 3, {"scale": 4}),
)
MODEL_NAMES = tuple(dict.fromkeys(case.model for case in CASES))
PIPELINES = ("interferograms", "camvid", "sr")


class _Parser(argparse.ArgumentParser):
    """Argument errors become a `TfsegError`: one line on stderr and exit status 2."""

    def error(self, message):
        raise TfsegError(message)


def parse_args(argv):
    """Command-line arguments of `python -m tfseg.bench`, checked."""
    parser = _Parser(prog="python -m tfseg.bench",
                     description="Latency, throughput, GFLOP/s and memory of every model in "
                                 "every runtime, and the input pipelines' images per second.")
    parser.add_argument("--models", nargs="*", choices=MODEL_NAMES, default=MODEL_NAMES,
                        metavar="NAME", help=f"models at their seed sizes (default: all of "
                        f"{', '.join(MODEL_NAMES)}; none: no model rows)")
    parser.add_argument("--size", type=parse_size, metavar="HxW",
                        help="input size for every model instead of its seed size")
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=RUNTIMES,
                        metavar="RUNTIME", help=f"default: all of {', '.join(RUNTIMES)}")
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=["auto"],
                        help="compute precision of the keras runtime (Keras mixed_bfloat16 "
                             "or mixed_float16 policy); default: auto, the one training picks "
                             "on this machine (the exported runtimes run float32)")
    parser.add_argument("--jit-compile", nargs="+", choices=("off", "on"), default=["off"],
                        help="XLA compilation of the keras runtime's function; give both "
                             "to compare")
    parser.add_argument("--repeats", type=_positive, default=10, help="timed calls per row")
    parser.add_argument("--warmup", type=_positive, default=3,
                        help="untimed calls first (the first one traces or loads lazily)")
    parser.add_argument("--batch", type=_positive, default=1, help="images per call")
    parser.add_argument("--timeout", type=_positive, default=3600,
                        help="seconds one child process may take before its row fails")
    parser.add_argument("--pipelines", nargs="*", choices=PIPELINES, metavar="NAME",
                        help=f"also measure the input pipelines ({', '.join(PIPELINES)}; "
                             f"all when no name is given)")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data",
                        help="folder holding camvid/ and sr/ for the pipelines")
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "bench-data",
                        help="where the pipelines' synthetic 3072x3072 frames are written once")
    parser.add_argument("--frames", type=_positive, default=20,
                        help="interferogram frames of the pipeline measurement")
    parser.add_argument("--limit", type=_positive, default=96,
                        help="CamVid / SR images per pipeline pass")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the results here")
    parser.add_argument("--markdown", type=Path, metavar="OUT", help="write the table here")
    parser.add_argument("--compare", type=Path, metavar="OLD.json",
                        help="print new / old ratios against an earlier --json file")
    args = parser.parse_args(argv)
    args.old = read_results(args.compare) if args.compare else None
    args.pipelines = PIPELINES if args.pipelines == [] else args.pipelines or ()
    if args.models and not rows_of(args):
        raise TfsegError("no rows to measure: bfloat16, float16 and XLA apply to the keras "
                         "runtime only")
    if not args.models and not args.pipelines:
        raise TfsegError("nothing to measure: give --models NAME... or --pipelines")
    return args


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def cases_of(args):
    """The selected cases, at `--size` when given."""
    return [dataclasses.replace(case, height=args.size[0], width=args.size[1])
            if args.size else case for case in CASES if case.model in args.models]


def rows_of(args, auto="float32"):
    """The variants measured for each case: Keras at each precision (`auto` stands for
    "auto") and XLA setting; the exported runtimes once, float32 graphs without XLA, when
    float32 or auto is asked for."""
    dtypes = dict.fromkeys(auto if dtype == "auto" else dtype for dtype in args.dtypes)
    exported = "off" in args.jit_compile and not {"float32", "auto"}.isdisjoint(args.dtypes)
    rows = []
    for runtime in args.runtimes:
        if runtime == "keras":
            rows += [Variant(runtime, dtype, jit == "on") for dtype in dtypes
                     for jit in args.jit_compile]
        elif exported:
            rows.append(Variant(runtime))
    return rows


def main(argv=None):
    """Measures, prints the table, writes the requested files; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    report = run_benchmark(args, command="python -m tfseg.bench " + shlex.join(argv))
    markdown = render_markdown(report)
    print(markdown)
    for path, text in ((args.markdown, markdown), (args.json, json.dumps(report, indent=2))):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, text + "\n")
    if args.old:
        print("\n" + render_comparison(compare(report, args.old), args.compare))
    return 0


def run_benchmark(args, *, command):
    """Every measurement of `args`, each in its own child process; returns the report."""
    machine = run_child({"job": "machine"}, timeout=args.timeout)
    if machine["status"] != "ok":
        raise TfsegError(f"the machine's reference convolution failed: {machine['reason']}")
    settings = {"repeats": args.repeats, "warmup": args.warmup, "batch": args.batch}
    variants = rows_of(args, auto=machine["precision"]["policy"].removeprefix("mixed_"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="tfseg-bench-") as exports:
        for case in cases_of(args):
            rows += measure_case(case, variants, settings, Path(exports), args.timeout,
                                 machine["conv_gflop_per_s"])
    pipelines = [measure_pipeline(name, args) for name in args.pipelines]
    cpu = cpu_info()
    return {"schema": SCHEMA, "command": command, "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": {"cpu": cpu.model, "cpu_features": cpu.features, "cores": cpu.cores,
                        "precision": machine["precision"],
                        "conv_gflop_per_s": machine["conv_gflop_per_s"],
                        "reference_conv": REFERENCE_CONV, "anchors": machine["anchors"]},
            "versions": machine["versions"], **settings, "rows": rows, "pipelines": pipelines}


def measure_case(case, variants, settings, exports, timeout, peak_gflop_per_s):
    """The rows of one case: its exports are made once, then each runtime runs alone."""
    formats = sorted({ARTIFACTS[variant.runtime] for variant in variants} - {None})
    prepared = run_child({"job": "prepare", "case": dataclasses.asdict(case),
                          "formats": formats, "directory": str(exports / _slug(case))},
                         timeout=timeout)
    rows = []
    for variant in variants:
        row = {"key": row_key(case, variant, settings["batch"]), "model": case.model,
               "options": case.options, "input": case.shape, **variant._asdict(),
               "target_ms": case.target_ms}
        if prepared["status"] != "ok":
            row.update(status="failed", reason=f"build or export: {prepared['reason']}")
        else:
            artifact = prepared["artifacts"].get(ARTIFACTS[variant.runtime])
            row.update(gflops=prepared["gflops"], parameters=prepared["parameters"])
            if isinstance(artifact, dict):  # the export this runtime needs failed
                row.update(status="failed", reason=f"export: {artifact['error']}")
            else:
                row.update(run_child({"job": "row", "case": dataclasses.asdict(case),
                                      "variant": variant, "artifact": artifact, **settings},
                                     timeout=timeout))
        if row["status"] == "ok":
            achieved = row["gflops"] * row["images_per_s"]
            row.update(gflop_per_s=achieved, peak_fraction=achieved / peak_gflop_per_s)
        print(f"{row['key']}: " + (f"{row['median_ms']:.1f} ms" if row["status"] == "ok"
                                   else f"{row['status']}: {row['reason']}"), file=sys.stderr,
              flush=True)
        rows.append(row)
    return rows


def measure_pipeline(name, args):
    """One input pipeline's images per second, in its own child process."""
    result = run_child({"job": "pipeline", "name": name, "data_dir": str(args.data_dir),
                        "work_dir": str(args.work_dir), "frames": args.frames,
                        "limit": args.limit}, timeout=args.timeout)
    print(f"pipeline {name}: {result['status']}", file=sys.stderr, flush=True)
    return {"key": f"pipeline {name}", "name": name, **result}


def row_key(case, variant, batch):
    """The row's identity across runs (what `--compare` matches)."""
    return f"{case.label} {case.shape} {variant.label} batch {batch}"


def _slug(case):
    return re.sub(r"[^A-Za-z0-9.]+", "_", f"{case.label}_{case.shape}").strip("_")


# --- Child processes -------------------------------------------------------------------------


def run_child(spec, *, timeout):
    """Runs one job of `spec` in a fresh interpreter.

    Returns:
        The job's result dict with "status": "ok", or "status": "failed" and a one-line
        "reason" (the child's last error line, its signal or the timeout).
    """
    process = subprocess.Popen(
        [sys.executable, "-c", "import tfseg.bench; tfseg.bench.child()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        stdout, stderr = process.communicate(json.dumps(spec), timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"no result within {timeout} s"}
    finally:
        if process.poll() is None:  # timed out or interrupted: stop its whole process
            os.killpg(process.pid, signal.SIGKILL)  # group (the ONNX converter, OpenCV's
            process.communicate()                   # worker), started as a new session
    results = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if process.returncode == 0 and results:
        return {"status": "ok", **json.loads(results[-1][len(RESULT_PREFIX):])}
    if process.returncode < 0:
        return {"status": "failed", "reason": f"crashed (signal {-process.returncode})"}
    last = (stderr.strip().splitlines() or ["(no message)"])[-1]
    return {"status": "failed", "reason": f"exit status {process.returncode}: {last[:300]}"}


def child():
    """Entry point of a child process: reads a job spec on stdin, prints its result."""
    spec = json.loads(sys.stdin.read())
    jobs = {"machine": measure_machine, "prepare": prepare_case, "row": measure_row,
            "pipeline": run_pipeline}
    result = jobs[spec.pop("job")](**spec)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def measure_machine():
    """This machine's reference convolution throughput, and the runtimes' versions (OpenCV's
    as the OpenCV DNN worker imports it, see `tfseg.opencv_dnn.python`)."""
    import keras
    import numpy as np
    import onnxruntime
    import tensorflow as tf

    import tfseg
    from tfseg.opencv_dnn import installed_engines

    size, channels, kernel = (REFERENCE_CONV[k] for k in ("size", "channels", "kernel"))
    images = tf.random.normal((1, size, size, channels))
    filters = tf.random.normal((kernel, kernel, channels, channels))
    conv = tf.function(lambda x: tf.nn.conv2d(x, filters, 1, "SAME"))
    seconds = time_calls(lambda: conv(images).numpy(), warmup=3, repeats=20)["median_s"]
    flops = 2 * size * size * kernel * kernel * channels * channels
    matrix = tf.random.normal((4096, 4096))
    matmul = tf.function(lambda x: tf.linalg.matmul(x, x))
    matmul_s = time_calls(lambda: matmul(matrix).numpy(), warmup=1, repeats=5)["median_s"]
    resnet = keras.applications.ResNet50(include_top=False, weights=None,
                                         input_shape=(512, 512, 3))
    resnet_call = tf.function(lambda x: resnet(x, training=False))
    image = tf.random.uniform((1, 512, 512, 3))
    resnet_s = time_calls(lambda: resnet_call(image).numpy(), warmup=2, repeats=10)["median_s"]
    return {"precision": dataclasses.asdict(choose_precision(cpu_info(), gpus())),
            "conv_gflop_per_s": flops / 1e9 / seconds,
            "anchors": {"conv_gflop_per_s": flops / 1e9 / seconds,
                        "matmul_gflop_per_s": 2 * 4096 ** 3 / 1e9 / matmul_s,
                        "resnet50_ms": 1e3 * resnet_s},
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                         "onnxruntime": onnxruntime.__version__, "opencv": installed_engines()[1],
                         "numpy": np.__version__, "tfseg": tfseg.__version__}}


def prepare_case(case, formats, directory):
    """Builds the case's float32 model, counts its work and writes the exports `formats`
    ("savedmodel", "onnx") under `directory`; an export that fails is recorded, not raised."""
    from tfseg.export import export_onnx, export_saved_model

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
    it. OpenCV runs in `tfseg.runtimes`' worker process: its latency includes the pipe to the
    worker, and its peak memory is the worker's."""
    import numpy as np

    from tfseg import runtimes

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
        timing = time_calls(lambda: runtime(pixels), warmup=warmup - 1, repeats=repeats)
    return {"runtime_version": runtime.version, "output_shape": list(outputs.shape[1:]),
            "load_s": loaded - started,
            "first_call_s": first_call_s,
            "median_ms": 1e3 * timing["median_s"], "p90_ms": 1e3 * timing["p90_s"],
            "min_ms": 1e3 * timing["min_s"], "max_ms": 1e3 * timing["max_s"],
            "images_per_s": batch / timing["median_s"],
            "peak_rss_mib": max(peak_rss_mib(), peak_rss_mib(resource.RUSAGE_CHILDREN)),
            "rss_after_imports_mib": rss_after_imports}


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
    """The tfseg metadata the case's exports carry (`tfseg.runtimes.make_metadata`)."""
    from tfseg.models import SEGMENTATION_MODELS
    from tfseg.runtimes import make_metadata

    if case.model in SEGMENTATION_MODELS:
        task = {"task": "segmentation",
                "class_names": [f"class_{i}" for i in range(case.options["num_classes"])]}
    else:
        task = {"task": "super_resolution", "scale": case.options["scale"]}
    return make_metadata(model=case.model, input_size=(case.height, case.width),
                         input_channels=case.channels,
                         layout="NCHW", mean=[0.0] * case.channels, std=[1.0] * case.channels,
                         preprocessing={"resize_to": [case.height, case.width],
                                        "colour": "gray" if case.channels == 1 else "rgb"},
                         **task)


def count_flops(model, shape):
    """FLOPs (2 x multiply-adds) of `model(x, training=False)` on a float32 input of `shape`.

    Counted on the traced TensorFlow graph, so every convolution, transposed convolution and
    dense layer counts as often as it runs (a shared trunk twice) at the size it runs at. A
    transposed convolution counts 2 x input pixels x k x k x C_in x C_out: each input pixel is
    spread over a k x k window.
    """
    import tensorflow as tf

    function = tf.function(lambda pixels: model(pixels, training=False))
    graph = function.get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph
    return sum(_op_flops(op) for op in _operations(graph) if op.type in MULTIPLY_ADD_OPS)


def _operations(graph):
    """The graph's ops, with those of the functions it calls (Keras runs a grouped
    convolution as a nested XLA function) in place of each call."""
    for op in graph.get_operations():
        if op.type in ("PartitionedCall", "StatefulPartitionedCall"):
            yield from _operations(graph._get_function(op.get_attr("f").name).graph)
        else:
            yield op


def _op_flops(op):
    if op.type == "Conv2DBackpropInput":  # inputs: output sizes, filter, the layer's input
        return 2 * math.prod(op.inputs[2].shape[:-1]) * math.prod(op.inputs[1].shape)
    if op.type in ("Conv2D", "DepthwiseConv2dNative"):  # per output pixel: the whole filter
        # (a depthwise filter is (kh, kw, C, multiplier); a grouped one (kh, kw, C/g, C_out))
        return 2 * math.prod(op.outputs[0].shape[:-1]) * math.prod(op.inputs[1].shape)
    # Matrix products: output elements x the contracted dimension.
    transposed = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
    return 2 * math.prod(op.outputs[0].shape) * op.inputs[0].shape[-2 if transposed else -1]


def time_calls(call, *, warmup, repeats):
    """Median, p90, minimum and maximum seconds of `repeats` calls after `warmup` calls."""
    import numpy as np

    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return {"median_s": statistics.median(seconds), "p90_s": float(np.percentile(seconds, 90)),
            "min_s": min(seconds), "max_s": max(seconds)}


def peak_rss_mib(who=resource.RUSAGE_SELF):
    """High-water mark of resident memory (Linux reports KiB): this process's, or with
    RUSAGE_CHILDREN the largest of its finished child processes'."""
    return resource.getrusage(who).ru_maxrss / 1024


def _first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


# --- Input pipelines -------------------------------------------------------------------------


def run_pipeline(name, data_dir, work_dir, frames, limit):
    """Images per second of one input pipeline: in a first epoch (parallel decode and
    preprocessing in tf.data maps) and in later ones (served from its cache), next to a plain
    Python loop doing the same work with OpenCV one image at a time (the seeds' loaders, which
    redo everything every epoch) and to what one training step of the matching model consumes.
    """
    data_dir, work_dir = Path(data_dir), Path(work_dir)
    if name == "interferograms":
        return interferogram_pipeline(work_dir, frames)
    if not data_dir.is_dir():
        raise TfsegError(f"{data_dir}: missing; the {name} pipeline reads its real images")
    return camvid_pipeline(data_dir, limit) if name == "camvid" else sr_pipeline(data_dir,
                                                                                limit)


def images_per_second(iterate, count):
    """Images per second of `iterate()` (which yields `count` images), after one warm-up."""
    iterate()
    started = time.perf_counter()
    iterate()
    return count / (time.perf_counter() - started)


def pipeline_rates(dataset, plain_loop, count, train_step, batch_size):
    """The figures of a data set whose tf.data pipeline yields `count` frames per pass,
    drawn in batches of `batch_size` as the training step consumes them."""
    def iterate(data):
        def run():
            for _ in data.batch(batch_size).prefetch(4):
                pass
        return run

    return {"images": count, "pipeline_img_s": images_per_second(iterate(dataset), count),
            "cached_img_s": images_per_second(iterate(dataset.cache()), count),
            "plain_loop_img_s": images_per_second(plain_loop, count),
            "train_step_img_s": train_step}


def interferogram_pipeline(work_dir, frames):
    """Synthetic 3072x3072 8-bit BMP frames (written once by tools/make_interferograms.py),
    3x3 blur, background of every 10th frame, CLAHE (clip 5, tiles 20), resize to 1024x1024
    (the seed's ICNet path)."""
    import cv2
    import numpy as np

    from tfseg.config import DataConfig, PreprocessConfig
    from tfseg.data import interferograms, preprocess

    root = work_dir / "interferograms-3072"
    if not root.exists():
        subprocess.run([sys.executable, "tools/make_interferograms.py", "--out", str(root),
                        "--sequences", "1", "--frames", str(frames), "--size", "3072x3072",
                        "--fringes", "80"], cwd=REPO, check=True)
    config = DataConfig(source="interferograms", path=str(root), height=1024, width=1024,
                        cache="none", preprocess=PreprocessConfig(
                            blur=3, background_every=10, clahe_clip_limit=5.0,
                            clahe_tile_grid=20))
    records = interferograms.read_sequence(root / "sequence_000")
    background = interferograms.sequence_background(records, config.preprocess)
    dataset = interferograms.folder_frames(records, {records[0].path.parent: background}, config)
    clahe = cv2.createCLAHE(clipLimit=5.0, tileGridSize=(20, 20))

    def plain_loop():  # the seed's loader: numpy in float64, one frame at a time
        for record in records:
            frame = cv2.blur(cv2.imread(str(record.path), cv2.IMREAD_GRAYSCALE), (3, 3))
            image = np.clip(frame - 0.9 * background, 0, 255).round().astype(np.uint8)
            cv2.resize(clahe.apply(image), (1024, 1024), interpolation=cv2.INTER_CUBIC)
            mask = preprocess.boxes_to_mask(interferograms.pixel_boxes(record, frame.shape),
                                            *frame.shape)
            cv2.resize(mask, (1024, 1024), interpolation=cv2.INTER_NEAREST)

    return pipeline_rates(dataset, plain_loop, len(records),
                          train_step_rate("icnet", (1024, 1024), 1, 2, batch_size=2, width=0.5),
                          batch_size=2)


def camvid_pipeline(data_dir, limit):
    """The SegNet train split of CamVid (480x360 PNG image + label PNG, RGB float)."""
    import cv2
    import numpy as np

    from tfseg.data import camvid

    root = data_dir / "camvid"
    dataset = camvid.read_segnet(root, "train").take(limit)
    pairs = camvid.segnet_pairs(root, "train")[:limit]

    def plain_loop():
        for image, label in pairs:
            cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB).astype(np.float32)
            cv2.imread(str(label), cv2.IMREAD_UNCHANGED)

    return pipeline_rates(dataset, plain_loop, limit,
                          train_step_rate("linknet", (320, 480), 3, 12, batch_size=8),
                          batch_size=8)


def sr_pipeline(data_dir, limit):
    """Random 288x288 patches of T91 + BSD200 with LR by Gaussian blur + bicubic x4. Patches
    are random per epoch, so the pipeline caches the decoded HR images, not patches: a pass
    visits every usable image once, the first one decoding them."""
    import cv2
    import numpy as np

    from tfseg.data import super_resolution

    folders = [data_dir / "sr" / "t91", data_dir / "sr" / "bsd200"]
    skipped = []
    dataset = super_resolution.training_pairs(folders, factor=4, patch_size=288,
                                              skipped=skipped)
    paths = [p for p in super_resolution.list_hr_images(folders) if str(p) not in skipped]
    rng = np.random.default_rng(0)

    def plain_loop():
        for path in paths[:limit]:
            image = cv2.imread(str(path))
            y, x = (rng.integers(0, s - 288 + 1) for s in image.shape[:2])
            cv2.resize(cv2.GaussianBlur(image[y:y + 288, x:x + 288], (7, 7), 1.0), (72, 72),
                       interpolation=cv2.INTER_CUBIC)

    batch_size = 8   # the training step's below
    stream = iter(dataset.batch(batch_size).prefetch(4))

    def one_pass():
        batches = -(-len(paths) // batch_size)
        started = time.perf_counter()
        for _ in range(batches):
            next(stream)
        return batches * batch_size / (time.perf_counter() - started)

    first, cached = one_pass(), one_pass()
    return {"images": len(paths), "pipeline_img_s": first, "cached_img_s": cached,
            "plain_loop_img_s": images_per_second(plain_loop, min(limit, len(paths))),
            "train_step_img_s": train_step_rate("sr_johnson", (72, 72), 3, None,
                                                batch_size=8, loss="pixel")}


def train_step_rate(name, size, channels, num_classes, *, batch_size, loss="ce", **options):
    """Images per second of one optimizer step (forward, backward, Adam) on random data."""
    import keras
    import tensorflow as tf

    from tfseg import models

    task = {"num_classes": num_classes} if num_classes else {"scale": 4}
    model = models.build(name, input_shape=size, input_channels=channels, **task, **options)
    optimizer = keras.optimizers.Adam(1e-4)
    images = tf.random.uniform((batch_size, *size, channels), 0, 255)
    targets = (tf.zeros((batch_size, *size), tf.int32) if loss == "ce"
               else tf.zeros((batch_size, size[0] * 4, size[1] * 4, channels)))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            outputs = model(images, training=True)
            value = (tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                targets, outputs, from_logits=True)) if loss == "ce"
                else tf.reduce_mean(tf.abs(outputs - targets)))
        gradients = tape.gradient(value, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return value

    step()
    timing = time_calls(lambda: float(step()), warmup=0, repeats=5)
    return batch_size / timing["median_s"]


# --- Reports ---------------------------------------------------------------------------------


def read_results(path):
    """An earlier `--json` report, checked enough to compare against."""
    try:
        report = json.loads(Path(path).read_text())
    except OSError as error:
        raise TfsegError(f"{path}: cannot read ({error.strerror})") from None
    except ValueError as error:
        raise TfsegError(f"{path}: not JSON ({error})") from None
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise TfsegError(f"{path}: not a tfseg.bench report (expected schema {SCHEMA!r})")
    return report


def _anchor_line(anchors):
    """This machine today next to the figures TOOLCHAIN.md recorded for it."""
    names = {"conv_gflop_per_s": ("3x3 convolution", "GFLOP/s", 1),
             "matmul_gflop_per_s": ("4096^3 matmul", "GFLOP/s", 1),
             "resnet50_ms": ("ResNet50 512x512", "ms", -1)}
    parts = [f"{label} {anchors[key]:.0f} {unit} (TOOLCHAIN.md: "
             f"{TOOLCHAIN_ANCHORS[key]:.0f}; {(anchors[key] / TOOLCHAIN_ANCHORS[key]) ** sign:.2f}x)"
             for key, (label, unit, sign) in names.items()]
    return ("This machine today against TOOLCHAIN.md's figures for it (speed ratio): "
            + "; ".join(parts) + ".")


def render_markdown(report):
    """The header (machine, versions, command), the table of rows, the fastest runtime of each
    model against the target, and the pipelines' table when measured."""
    machine, versions = report["machine"], report["versions"]
    conv = machine["reference_conv"]
    features = " ".join(machine["cpu_features"]) or f"none of {', '.join(FEATURE_FLAGS)}"
    precision = machine["precision"]
    sections = [(f"Machine: {machine['cpu']}, {machine['cores']} cores, CPU features "
                 f"{features}; Keras precision auto: {precision['policy']} "
                 f"({precision['reason']}); measured "
                 f"{conv['kernel']}x{conv['kernel']} convolution ({conv['channels']} -> "
                 f"{conv['channels']} channels, {conv['size']}x{conv['size']}, float32): "
                 f"**{machine['conv_gflop_per_s']:.0f} GFLOP/s**. TensorFlow "
                 f"{versions['tensorflow']}, Keras {versions['keras']}, onnxruntime "
                 f"{versions['onnxruntime']}, OpenCV {versions['opencv']}, tfseg "
                 f"{versions['tfseg']}; {report['date']}."),
                f"Command: `{report['command']}`"]
    if "anchors" in machine:
        sections.append(_anchor_line(machine["anchors"]))
    if report["rows"]:
        sections += [
            (f"Batch {report['batch']}; median and p90 of {report['repeats']} calls after "
             f"{report['warmup']} warm-up calls, each row in its own process. GFLOPs: 2 x "
             f"multiply-adds per image; % of peak: achieved GFLOP/s over the measured "
             f"convolution's. OpenCV runs in tfseg.runtimes' worker process (its latency "
             f"includes the pipe to it)."),
            _table(("model", "input", "runtime", "precision", "median ms", "p90 ms", "images/s",
                    "GFLOPs", "GFLOP/s", "% of peak", "peak RSS MiB", "target ms", "status"),
                   [_row_cells(r) for r in report["rows"]]),
            (f"Fastest runtime per model (target: >= {100 * PEAK_TARGET:.0f} % of the "
             f"measured convolution throughput):"),
            "\n".join(f"- {line}" for line in fastest_runtimes(report["rows"]))]
    if report["pipelines"]:
        sections += ["Input pipelines (images per second):",
                     _table(("data set", "images", "pipeline, first epoch", "pipeline, cached",
                             "plain OpenCV loop", "training step", "status"),
                            [_pipeline_cells(p) for p in report["pipelines"]])]
    return "\n\n".join(sections)


def _table(header, rows):
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(cells) + " |" for cells in rows)])


def _row_cells(row):
    cells = [row["model"] + "".join(f", {k}={v}" for k, v in row["options"].items()
                                    if k not in ("num_classes", "scale")),
             row["input"], row["runtime"], _precision(row)]
    target = _number(row["target_ms"])
    if row["status"] != "ok":
        return cells + [""] * 7 + [target, f"{row['status']}: {_escape(row['reason'])}"]
    met = row["median_ms"] <= row["target_ms"] if row["target_ms"] else None
    return cells + [f"{row['median_ms']:.1f}", f"{row['p90_ms']:.1f}",
                    f"{row['images_per_s']:.2f}", f"{row['gflops']:.2f}",
                    f"{row['gflop_per_s']:.0f}", f"{100 * row['peak_fraction']:.0f} %",
                    f"{row['peak_rss_mib']:.0f}",
                    target + {None: "", True: " (met)", False: " (**missed**)"}[met], "ok"]


def _pipeline_cells(pipeline):
    if pipeline["status"] != "ok":
        return [pipeline["name"], "", "", "", "", "",
                f"failed: {_escape(pipeline['reason'])}"]
    return [pipeline["name"], str(pipeline["images"])] + [
        f"{pipeline[key]:.1f}" for key in ("pipeline_img_s", "cached_img_s",
                                           "plain_loop_img_s", "train_step_img_s")] + ["ok"]


def fastest_runtimes(rows):
    """One line per model and input: its fastest runtime and whether it reaches the target."""
    best = {}
    for row in rows:
        case = (row["model"], json.dumps(row["options"]), row["input"])
        if row["status"] == "ok" and (case not in best or
                                      row["median_ms"] < best[case]["median_ms"]):
            best[case] = row
    return [f"{row['model']} {row['input']}: {row['runtime']} ({_precision(row)}), "
            f"{row['gflop_per_s']:.0f} GFLOP/s = {100 * row['peak_fraction']:.0f} % "
            f"({'met' if row['peak_fraction'] >= PEAK_TARGET else '**missed**'})"
            for row in best.values()]


COMPARED = ("median_ms", "p90_ms", "images_per_s", "peak_rss_mib", "pipeline_img_s",
            "cached_img_s", "plain_loop_img_s", "train_step_img_s")


def compare(new, old):
    """new / old ratio of each measured figure, for every row measured in both reports.

    Returns:
        list of {"key", figure: ratio...}, in the new report's order; a row missing from
        either report, or failed in either, has no figures.
    """
    before = {row["key"]: row for row in old["rows"] + old["pipelines"]}
    ratios = []
    for row in new["rows"] + new["pipelines"]:
        previous = before.get(row["key"], {})
        ratios.append({"key": row["key"], **{
            figure: row[figure] / previous[figure] for figure in COMPARED
            if row.get(figure) and previous.get(figure)}})
    return ratios


def render_comparison(ratios, old_path):
    """The ratios of `compare` as a Markdown table."""
    figures = [f for f in COMPARED if any(f in ratio for ratio in ratios)]
    return f"Ratios new / old (old: {old_path}):\n\n" + _table(
        ["row", *figures], [[ratio["key"]] + [f"{ratio[f]:.3f}" if f in ratio else ""
                                              for f in figures] for ratio in ratios])


def _precision(row):
    return row["dtype"] + (", XLA" if row["jit_compile"] else "")


def _number(value):
    return "" if value is None else f"{value:g}"


def _escape(text):
    return text.replace("|", "\\|")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
