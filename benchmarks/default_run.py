#!/usr/bin/env python
"""Times the embedded default end to end, as a user runs it, and reports its accuracy.

Runs `python -m tfseg.train` (no arguments: configs/default.yaml) `--repeats` times in fresh
run directories, and prints the wall time of each whole command (TensorFlow start-up, data,
training, validation, export and parity included) with the precision it chose, the
validation figures from its metrics.json and the parity of its exports. The CPU's model and
precision-relevant features head the output and its summary, since both decide the time. The
README's figures come from this script:

    python benchmarks/default_run.py --repeats 3
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tfseg.hardware import cpu_info

REPO = Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget-seconds", type=float, default=300.0,
                        help="report whether the median run stays within this wall time")
    parser.add_argument("--min-foreground-iou", type=float, default=0.8)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    machine = cpu_info().describe()
    print(f"machine: {machine}", flush=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="tfseg-bench-") as tmp:
        for repeat in range(args.repeats):
            run_dir = Path(tmp) / f"run{repeat}"
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "tfseg.train", "--run-dir",
                                     str(run_dir)], cwd=REPO, capture_output=True, text=True)
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
    print(f"\nmachine: {machine}; python -m tfseg.train (configs/default.yaml) in "
          f"{runs[0]['precision']}")
    print(f"median wall time {median:.0f} s over {len(runs)} runs "
          f"({'within' if median <= args.budget_seconds else 'OVER'} {args.budget_seconds:.0f} s)")
    print(f"validation foreground IoU {iou:.3f} on {runs[0]['frames']} held-out frames "
          f"({'meets' if iou >= args.min_foreground_iou else 'BELOW'} "
          f"{args.min_foreground_iou})")


if __name__ == "__main__":
    main()
