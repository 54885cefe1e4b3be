#!/usr/bin/env python
"""Measures every model of the zoo at the seeds' input sizes on this machine's CPU.

For each case: trainable parameters, GFLOPs (2 x multiply-adds, counted by the TensorFlow
profiler on the frozen inference graph), median latency at batch 1 after warm-up (a
`tf.function` calling `model(x, training=False)` with a static input signature), the achieved
GFLOP/s, and the peak resident memory. Every case and option set runs in a fresh child process,
so one model's memory and thread pools never affect another's figures. The output is a Markdown
table with the issue's targets and the PyTorch reference timings next to the measurements:

    python benchmarks/models.py
    python benchmarks/models.py --models linknet sr_johnson --jit-compile off on \
        --dtypes float32 bfloat16 --json runs/models.json
"""

import argparse
import dataclasses
import importlib.metadata
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULT_PREFIX = "BENCHMARK_RESULT "
# Op types whose profiler count is 2 x their multiply-adds; element-wise work (bias, batch
# norm, activations) is left out, as in the papers' and the PyTorch counters' figures.
MULTIPLY_ADD_OPS = frozenset({"Conv2D", "Conv2DBackpropInput", "DepthwiseConv2dNative",
                              "MatMul", "BatchMatMulV2", "BatchMatMulV3"})


@dataclasses.dataclass
class Case:
    """One model at one input size, with the figures it is compared against.

    Args:
        model: str. Name in `tfseg.models.MODEL_BUILDERS`.
        height: int. Input height.
        width: int. Input width.
        channels: int. Input channels.
        options: dict. Keyword arguments of `tfseg.models.build` beyond the input shape.
        target_ms: float. The issue's latency target. Defaults to None (none set).
        pytorch_ms: float. The PyTorch reference on the project machine (MODELS.md).
            Defaults to None.
        reference_gflops: float. Published GFLOPs at this size (MODELS.md). Defaults to None.
    """

    model: str
    height: int
    width: int
    channels: int
    options: dict
    target_ms: float | None = None
    pytorch_ms: float | None = None
    reference_gflops: float | None = None


CASES = [
    Case("fcn32_vgg16", 768, 128, 1, {"num_classes": 2}),
    Case("fcn32_vgg16", 3072, 512, 1, {"num_classes": 2}),
    Case("fcn_resnet18", 768, 128, 1, {"num_classes": 2}, target_ms=900, pytorch_ms=1223,
         reference_gflops=107),
    Case("fcn_resnet18", 3072, 512, 1, {"num_classes": 2}, pytorch_ms=16400,
         reference_gflops=1717),
    # The PyTorch port runs a full-width dilated ResNet50 twice (294 GFLOPs): 5.7 s.
    Case("icnet", 1024, 1024, 1, {"num_classes": 2, "width": 1.0}, target_ms=400,
         pytorch_ms=5700),
    Case("icnet", 1024, 1024, 1, {"num_classes": 2, "width": 0.5}, target_ms=120,
         pytorch_ms=5700),
    Case("linknet", 360, 480, 3, {"num_classes": 12}, pytorch_ms=29.5),
    Case("linknet", 704, 960, 3, {"num_classes": 12}, target_ms=180, pytorch_ms=230),
    Case("linknet", 720, 960, 3, {"num_classes": 12}, pytorch_ms=190.5),
    Case("sr_johnson", 72, 72, 3, {"scale": 4}),
    Case("sr_johnson", 256, 256, 3, {"scale": 4}),
]
BASELINE_VARIANT = (False, "float32")


def main():
    names = sorted({case.model for case in CASES})
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=names, default=names, metavar="NAME",
                        help=f"models to measure (default: all of {', '.join(names)})")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per case")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed calls first; the first one traces (and compiles)")
    parser.add_argument("--jit-compile", nargs="+", choices=["off", "on"], default=["off"],
                        help="XLA compilation of the inference function; give both to compare")
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16"],
                        default=["float32"], help="compute precision (bfloat16: Keras "
                        "mixed_bfloat16 policy, float32 weights); give both to compare")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds before a case's child process is stopped")
    parser.add_argument("--json", type=Path, help="also write every result to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(RESULT_PREFIX + json.dumps(measure(**json.loads(args.child))), flush=True)
        return
    if args.repeats < 1 or args.warmup < 1:
        parser.error("--repeats and --warmup must be >= 1")
    variants = list(itertools.product([jit == "on" for jit in args.jit_compile], args.dtypes))
    results = []
    for case in (case for case in CASES if case.model in args.models):
        for jit_compile, dtype in variants:
            result = run_child(case, jit_compile=jit_compile, dtype=dtype, warmup=args.warmup,
                               repeats=args.repeats, timeout=args.timeout)
            outcome = (f"{result['median_ms']:.1f} ms" if result["status"] == "measured"
                       else f"{result['status']}: {result['reason']}")
            print(f"{describe(case)} [{variant_label(jit_compile, dtype)}]: {outcome}",
                  file=sys.stderr, flush=True)
            results.append(result)
    environment = describe_environment(args)
    print(render_markdown(results, environment))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"environment": environment, "results": results},
                                        indent=2) + "\n")


def run_child(case, *, jit_compile, dtype, warmup, repeats, timeout):
    """Measures one case in a fresh interpreter; returns its result, or the reason it has none."""
    spec = {"case": dataclasses.asdict(case), "jit_compile": jit_compile, "dtype": dtype,
            "warmup": warmup, "repeats": repeats}
    result = {**spec["case"], "jit_compile": jit_compile, "dtype": dtype}
    command = [sys.executable, __file__, "--child", json.dumps(spec)]
    try:
        process = subprocess.run(command, check=False, capture_output=True, text=True,
                                 timeout=timeout,
                                 env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    except subprocess.TimeoutExpired:
        return {**result, "status": "failed", "reason": f"no result within {timeout:.0f} s"}
    lines = [line for line in process.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if process.returncode != 0 or not lines:
        last = (process.stderr.strip().splitlines() or ["(no message)"])[-1]
        return {**result, "status": "failed",
                "reason": f"exit status {process.returncode}: {last}"}
    return {**result, **json.loads(lines[-1][len(RESULT_PREFIX):])}


def measure(case, *, jit_compile, dtype, warmup, repeats):
    """Runs in the child process: builds the case's model, times it and counts its work."""
    import keras
    import numpy as np
    import tensorflow as tf

    from tfseg import models

    if case["model"] not in models.MODEL_BUILDERS:
        return {"status": "skipped",
                "reason": "not registered in tfseg.models.MODEL_BUILDERS"}
    check_flop_counter()
    baseline_mib = peak_rss_mib()
    keras.config.set_dtype_policy("mixed_bfloat16" if dtype == "bfloat16" else "float32")
    shape = (1, case["height"], case["width"], case["channels"])
    model = models.build(case["model"], input_shape=shape[1:3], input_channels=shape[3],
                         **case["options"])
    infer = inference_function(model, shape, jit_compile=jit_compile)
    pixels = tf.constant(np.random.default_rng(0).normal(size=shape), tf.float32)
    started = time.perf_counter()
    outputs = infer(pixels)
    first_call_s = time.perf_counter() - started
    for _ in range(warmup - 1):
        infer(pixels)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        infer(pixels)
        seconds.append(time.perf_counter() - started)
    peak_mib = peak_rss_mib()  # before the FLOP count, whose frozen graph copies the weights
    flops, profiler_flops = count_flops(infer.get_concrete_function())
    median_s = statistics.median(seconds)
    return {"status": "measured",
            "output_shape": list(outputs.shape[1:]),
            "parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
            "gflops": flops / 1e9,
            "gflops_all_profiled_ops": profiler_flops / 1e9,
            "first_call_s": first_call_s,
            "median_ms": 1e3 * median_s,
            "min_ms": 1e3 * min(seconds),
            "max_ms": 1e3 * max(seconds),
            "gflop_per_s": flops / 1e9 / median_s,
            "peak_rss_mib": peak_mib,
            "rss_after_imports_mib": baseline_mib}


def inference_function(model, shape, *, jit_compile=False):
    """`model(x, training=False)` as a tf.function with a static input signature: the graph
    every export traces (TOOLCHAIN.md trap 1: never rely on the default training flag)."""
    import tensorflow as tf

    return tf.function(lambda pixels: model(pixels, training=False),
                       input_signature=[tf.TensorSpec(shape, tf.float32)],
                       jit_compile=jit_compile)


def count_flops(concrete_function):
    """FLOPs of one call, from the TF profiler on the frozen graph.

    Returns:
        (multiply-add FLOPs, FLOPs of every op the profiler has a count for).
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    graph = convert_variables_to_constants_v2(concrete_function).graph
    op_types = {node.name: node.op for node in graph.as_graph_def().node}
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=graph, cmd="scope", options=options)
    # Each node's own count (float_ops), by op type: the scope tree's totals nest.
    nodes, multiply_add = [profile], 0
    while nodes:
        node = nodes.pop()
        nodes.extend(node.children)
        if op_types.get(node.name) in MULTIPLY_ADD_OPS:
            multiply_add += node.float_ops
    return multiply_add, profile.total_float_ops


def check_flop_counter():
    """Counts a lone 3x3 convolution and a lone 3x3 stride-2 transposed convolution, whose
    FLOPs are known (2 x 16 x 12 input pixels x 3 x 3 x 8 x 5), so that a change in the
    profiler's op registry cannot silently change every figure."""
    import keras

    expected = 2 * 16 * 12 * 3 * 3 * 8 * 5
    inputs = keras.Input((16, 12, 8))
    for layer in (keras.layers.Conv2D(5, 3, padding="same"),
                  keras.layers.Conv2DTranspose(5, 3, strides=2, padding="same")):
        model = keras.Model(inputs, layer(inputs))
        counted, _ = count_flops(
            inference_function(model, (1, 16, 12, 8)).get_concrete_function())
        if counted != expected:
            raise RuntimeError(f"the FLOP counter gives {counted} for a lone "
                               f"{type(layer).__name__}; expected {expected}")


def peak_rss_mib():
    """High-water mark of this process's resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def describe(case):
    return f"{case.model} ({_options(case)}) {case.height}x{case.width}x{case.channels}"


def variant_label(jit_compile, dtype):
    return f"{dtype}, XLA {'on' if jit_compile else 'off'}"


def describe_environment(args):
    versions = {package: importlib.metadata.version(package)
                for package in ("tensorflow", "keras")}
    return {"cpu": _cpu_name(), "cores": len(os.sched_getaffinity(0)),
            "date": time.strftime("%Y-%m-%d"), "warmup": args.warmup, "repeats": args.repeats,
            **versions}


def _cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def render_markdown(results, environment):
    """The results table, the cases without results, and (for several option sets) the
    speed-up each set gives over float32 without XLA."""
    header = ("model", "options", "input -> output", "precision", "XLA", "parameters", "GFLOPs",
              "ref. GFLOPs", "median ms", "GFLOP/s", "peak RSS MiB", "first call s",
              "target ms", "PyTorch ms", "target")
    lines = [(f"{environment['cpu']}, {environment['cores']} cores; TensorFlow "
              f"{environment['tensorflow']}, Keras {environment['keras']}; "
              f"{environment['date']}. Batch 1, median of {environment['repeats']} calls "
              f"after {environment['warmup']} warm-up calls."), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    measured = [r for r in results if r["status"] == "measured"]
    for r in measured:
        case = _case(r)
        met = "" if case.target_ms is None else (
            "met" if r["median_ms"] <= case.target_ms else "**missed**")
        output = "x".join(map(str, r["output_shape"]))
        lines.append(
            f"| {case.model} | {_options(case)} | {case.height}x{case.width}x{case.channels} "
            f"-> {output} | {r['dtype']} | {'on' if r['jit_compile'] else 'off'} | "
            f"{r['parameters']:,} | {r['gflops']:.1f} | {_number(case.reference_gflops)} | "
            f"{r['median_ms']:.1f} | {r['gflop_per_s']:.0f} | {r['peak_rss_mib']:.0f} | "
            f"{r['first_call_s']:.1f} | {_number(case.target_ms)} | "
            f"{_number(case.pytorch_ms)} | {met} |")
    missing = [r for r in results if r["status"] != "measured"]
    if missing:
        lines += ["", "Not measured:"]
        lines += [f"- {_label(r)} [{variant_label(r['jit_compile'], r['dtype'])}]: "
                  f"{r['status']}: {r['reason']}" for r in missing]
    lines += render_speedups(measured)
    return "\n".join(lines)


def render_speedups(measured):
    """Median-latency ratio of each option set to float32 without XLA, per case."""
    variants = sorted({(r["jit_compile"], r["dtype"]) for r in measured} - {BASELINE_VARIANT})
    baselines = {_label(r): r for r in measured
                 if (r["jit_compile"], r["dtype"]) == BASELINE_VARIANT}
    if not variants or not baselines:
        return []
    lines = ["", "Speed-up over float32 without XLA (its median latency / the option's):", "",
             "| case | " + " | ".join(variant_label(*v) for v in variants) + " |",
             "|---|" + "---|" * len(variants)]
    by_variant = {(_label(r), r["jit_compile"], r["dtype"]): r for r in measured}
    for label, baseline in baselines.items():
        cells = []
        for jit_compile, dtype in variants:
            r = by_variant.get((label, jit_compile, dtype))
            cells.append("" if r is None else
                         f"x{baseline['median_ms'] / r['median_ms']:.2f} "
                         f"({r['median_ms']:.1f} ms)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _label(result):
    return describe(_case(result))


def _case(result):
    return Case(**{field.name: result[field.name] for field in dataclasses.fields(Case)})


def _options(case):
    return ", ".join(f"{key}={value}" for key, value in case.options.items())


def _number(value):
    return "" if value is None else f"{value:g}"


if __name__ == "__main__":
    main()
