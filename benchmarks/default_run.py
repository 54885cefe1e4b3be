#!/usr/bin/env python
"""Times the embedded default end to end, as a user runs it, and reports its accuracy.

Runs `python -m tfseg.train` (no arguments: configs/default.yaml) `--repeats` times in fresh
run directories, and prints the wall time of each whole command (TensorFlow start-up, data,
training, validation, export and parity included) with the precision it chose, the
validation figures from its metrics.json and the parity of its exports. The CPU's model and
precision-relevant features head the output and its summary, since both decide the time. The
README's figures come from this script:

    python benchmarks/default_run.py --repeats 3

`--avx2-only` measures an AVX2-only CPU (such as a Zen 3) on an AVX-512 machine: oneDNN is
capped at AVX2 (ONEDNN_MAX_CPU_ISA=AVX2, which its kernels dispatch on at run time) and
tfseg.utils.hardware reads a copy of /proc/cpuinfo without the AVX-512 and AMX flags, so `auto`
picks float32 as it would there. The instruction set is then the Zen 3's; clock, caches and
memory stay this machine's, so the time is an estimate, and the output says so.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tfseg.utils import hardware

REPO = Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget-seconds", type=float, default=300.0,
                        help="report whether the median run stays within this wall time")
    parser.add_argument("--min-foreground-iou", type=float, default=0.8)
    parser.add_argument("--avx2-only", action="store_true",
                        help="mask AVX-512 and AMX: run as an AVX2-only CPU would")
    parser.add_argument("train_args", nargs="*", metavar="-- TRAIN_ARG",
                        help="extra `python -m tfseg.train` arguments after `--`, to time a "
                             "variant of the default (e.g. -- --set train.seed=1)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    runs = []
    with tempfile.TemporaryDirectory(prefix="tfseg-bench-") as tmp:
        environment = dict(os.environ)
        if args.avx2_only:
            environment.update(avx2_only_environment(Path(tmp) / "cpuinfo"))
            os.environ["TFSEG_CPUINFO"] = environment["TFSEG_CPUINFO"]
        machine = hardware.cpu_info().describe()
        print(f"machine: {machine}", flush=True)
        for repeat in range(args.repeats):
            run_dir = Path(tmp) / f"run{repeat}"
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "tfseg.train", "--run-dir",
                                     str(run_dir), *args.train_args], cwd=REPO,
                                    capture_output=True, text=True,
                                    env=environment)
            seconds = time.perf_counter() - started
            if result.returncode != 0:
                sys.exit(f"run {repeat} failed:\n{result.stderr[-2000:]}")
            metrics = json.loads((run_dir / "metrics.json").read_text())
            parity = json.loads((run_dir / "export" / "parity.json").read_text())["runtimes"]
            runs.append({"seconds": round(seconds, 1), "frames": metrics["frames"],
                         "precision": metrics["precision"]["policy"], **{
                key: None if metrics[key] is None else round(metrics[key], 4)
                for key in ("foreground_iou", "mean_iou", "pixel_accuracy")},
                "parity_max_abs_diff": {name: result.get("max_abs_diff")
                                        for name, result in parity.items()}})
            print(json.dumps(runs[-1]), flush=True)
    median = statistics.median(r["seconds"] for r in runs)
    iou = statistics.median(r["foreground_iou"] or 0.0 for r in runs)
    print(f"\nmachine: {machine}; python -m tfseg.train (configs/default.yaml) "
          f"{' '.join(args.train_args)} in {runs[0]['precision']}")
    print(f"median wall time {median:.0f} s over {len(runs)} runs "
          f"({'within' if median <= args.budget_seconds else 'OVER'} {args.budget_seconds:.0f} s)")
    print(f"validation foreground IoU {iou:.3f} on {runs[0]['frames']} held-out frames "
          f"({'meets' if iou >= args.min_foreground_iou else 'BELOW'} "
          f"{args.min_foreground_iou})")


def avx2_only_environment(cpuinfo_copy):
    """Variables that make this machine compute as an AVX2-only CPU (see the module notes):
    oneDNN capped at AVX2, and a /proc/cpuinfo copy without AVX-512 / AMX flags, its model
    name marked, for tfseg.utils.hardware."""
    masked = re.compile(r"\s(avx512\w*|amx\w*)(?=\s|$)")
    lines = []
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key = line.partition(":")[0].strip()
        if key == "flags":
            line = masked.sub("", line)
        elif key == "model name":
            line += " (AVX-512 and AMX masked: an AVX2-only estimate)"
        lines.append(line)
    cpuinfo_copy.write_text("\n".join(lines) + "\n")
    return {"ONEDNN_MAX_CPU_ISA": "AVX2", "TFSEG_CPUINFO": str(cpuinfo_copy)}


if __name__ == "__main__":
    main()
