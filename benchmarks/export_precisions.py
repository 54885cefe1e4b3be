"""Latency and size of the float32, int8 and float16 ONNX exports in onnxruntime (issue 22
part 4), for LinkNet at 704x960x3 and ICNet 1.0 at 1024x1024x1 (the seeds' sizes, the bench's
cases), with seeded random weights and randomised batch norm statistics:

    python benchmarks/export_precisions.py [--repeats 10] [--calibration-frames 8] [--json F]

int8 is calibrated on seeded uniform random frames (0..255): these rows measure speed and
size, not accuracy (the export's parity report scores accuracy on a run's own data). Prints a
markdown table: median and p90 latency at batch 1 after warm-up (the precisions take turns,
call by call), speed-up over float32, file size and size ratio, and argmax agreement / max abs
difference with float32 on one frame.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from tfseg.benchmarking.cases import CASES
from tfseg.benchmarking.rows import build_model, export_metadata
from tfseg.deploy import runtimes
from tfseg.deploy.exports import export_onnx
from tfseg.deploy.precisions import precision_path
from tfseg.deploy.quantization import write_precision
from tfseg.utils.hardware import cpuinfo_fields, cpuinfo_path
from tfseg.models import randomize_batch_norm

SEED_CASES = [case for case in CASES if (case.model, case.options.get("width")) in (
    ("linknet", None), ("icnet", 1.0))]


def measure_case(case, directory, repeats, calibration_frames):
    """Rows (one per precision) of one case."""
    model = build_model(case, "float32")
    randomize_batch_norm(model)
    float32 = export_onnx(model, directory / "model.onnx", metadata=export_metadata(case))
    rng = np.random.default_rng(0)
    shape = (case.height, case.width, case.channels)
    frames = rng.uniform(0, 255, (calibration_frames, *shape)).astype(np.float32)
    pixels = rng.uniform(0, 255, (1, *shape)).astype(np.float32)
    paths = {"float32": float32,
             "int8": write_precision(float32, "int8", frames),
             "float16": write_precision(float32, "float16")}
    assert all(path == precision_path(float32, name) for name, path in paths.items())
    loaded = {name: runtimes.load(path, "onnxruntime") for name, path in paths.items()}
    seconds = interleaved_seconds(loaded, pixels, repeats)
    reference = loaded["float32"](pixels)
    rows = []
    for name, runtime in loaded.items():
        outputs = runtime(pixels)
        rows.append({"model": case.label, "input": case.shape, "precision": name,
                     "median_ms": 1e3 * np.median(seconds[name]),
                     "p90_ms": 1e3 * np.percentile(seconds[name], 90),
                     "mb": paths[name].stat().st_size / 1e6,
                     "argmax_agreement": float(np.mean(outputs.argmax(-1)
                                                       == reference.argmax(-1))),
                     "max_abs_diff": float(np.abs(outputs - reference).max()),
                     "runtime": runtime.version})
        runtime.close()
    for row in rows:
        row["speedup"] = rows[0]["median_ms"] / row["median_ms"]
        row["smaller"] = rows[0]["mb"] / row["mb"]
    return rows


def interleaved_seconds(loaded, pixels, repeats, warmup=2):
    """{precision: seconds of each of `repeats` calls}, the precisions taking turns call by
    call after `warmup` calls each, so that load from other processes, which drifts, falls
    on all of them alike."""
    seconds = {name: [] for name in loaded}
    for index in range(warmup + repeats):
        for name, runtime in loaded.items():
            started = time.perf_counter()
            runtime(pixels)
            if index >= warmup:
                seconds[name].append(time.perf_counter() - started)
    return seconds


def markdown(rows):
    lines = ["| model | input | precision | median ms | p90 ms | vs float32 | MB | smaller "
             "| argmax agreement | max abs diff |", "|---" * 10 + "|"]
    lines += [f"| {r['model']} | {r['input']} | {r['precision']} | {r['median_ms']:.0f} | "
              f"{r['p90_ms']:.0f} | {r['speedup']:.2f}x | {r['mb']:.1f} | {r['smaller']:.2f}x "
              f"| {100 * r['argmax_agreement']:.2f} % | {r['max_abs_diff']:.3g} |"
              for r in rows]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--calibration-frames", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tfseg-precisions-") as tmp:
        for index, case in enumerate(SEED_CASES):
            directory = Path(tmp) / str(index)
            directory.mkdir()
            rows += measure_case(case, directory, args.repeats, args.calibration_frames)
    cpu = cpuinfo_fields(cpuinfo_path()).get("model name", "unknown CPU")
    print(f"{cpu}; {rows[0]['runtime']}; batch 1, median of {args.repeats} calls after 2 "
          f"warm-up calls each, the precisions taking turns")
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
