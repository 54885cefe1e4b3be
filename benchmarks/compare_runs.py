#!/usr/bin/env python
"""Scores of groups of finished runs side by side, per seed and as mean and spread: the
tables of docs/results.md that compare recipes over several seeds.

    python benchmarks/compare_runs.py "recurrent=runs/t128_s*" "per-frame=runs/i128_s*" \
        --cells "still-sample probability=1" "independent renderer" "sample phase (rad)=0.5"

Each group is LABEL=GLOB of run folders. Per run it reads `metrics.json` (the final
validation: foreground IoU, sample F1, training seconds) and, for each `--cells` entry, the
matching row of `RUN/robustness/robustness.json` (`python -m tfseg.evaluate --run-dir RUN
--robustness --output RUN/robustness`): "AXIS=LEVEL" as its table writes them, or an axis
alone (its first row). Prints one Markdown
table, then each group's mean difference from the first group.
"""

import argparse
import glob
import json
import statistics
import sys
from pathlib import Path


def read_run(folder, cells):
    """{column: value} of one finished run; a missing scorecard cell is None."""
    metrics = json.loads((folder / "metrics.json").read_text())
    row = {"foreground IoU": metrics["foreground_iou"], "sample F1": metrics.get("sample_f1"),
           "train s": metrics.get("train_seconds")}
    scorecard = folder / "robustness" / "robustness.json"
    rows = json.loads(scorecard.read_text())["rows"] if scorecard.is_file() else []
    for cell in cells:
        axis, _, level = cell.partition("=")
        found = [r for r in rows if r["axis"] == axis and (not level or str(r["level"]) == level)]
        row[cell] = found[0]["foreground_iou"] if found else None
    return row


def summary(values, digits=3):
    """"mean ± sd" of the numbers among `values` (sd over seeds, n - 1)."""
    numbers = [v for v in values if v is not None]
    if not numbers:
        return "-"
    if len(numbers) == 1:
        return f"{numbers[0]:.{digits}f}"
    return f"{statistics.mean(numbers):.{digits}f} ± {statistics.stdev(numbers):.{digits}f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("groups", nargs="+", metavar="LABEL=GLOB")
    parser.add_argument("--cells", nargs="*", default=[], metavar="AXIS[=LEVEL]",
                        help="scorecard cells to add as columns (foreground IoU)")
    args = parser.parse_args(argv)
    columns = ["foreground IoU", "sample F1", *args.cells, "train s"]
    groups = {}
    for group in args.groups:
        label, _, pattern = group.partition("=")
        folders = sorted(Path(p) for p in glob.glob(pattern) if Path(p, "metrics.json").is_file())
        if not folders:
            sys.exit(f"{group}: no finished run (metrics.json) matches {pattern!r}")
        groups[label] = folders
    print("| group | run | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 2) + "|")
    means = {}
    for label, folders in groups.items():
        runs = [read_run(folder, args.cells) for folder in folders]
        for folder, run in zip(folders, runs):
            cells = ["-" if run[c] is None else f"{run[c]:.0f}" if c == "train s"
                     else f"{run[c]:.3f}" for c in columns]
            print(f"| {label} | {folder.name} | " + " | ".join(cells) + " |")
        print(f"| **{label}** | mean ± sd | "
              + " | ".join(summary([run[c] for run in runs], 0 if c == "train s" else 3)
                           for c in columns) + " |")
        means[label] = {c: statistics.mean(v for v in (run[c] for run in runs) if v is not None)
                        for c in columns if any(run[c] is not None for run in runs)}
    first, *others = means
    for label in others:
        print(f"\n{label} - {first}: " + ", ".join(
            f"{c} {means[label][c] - means[first][c]:+.3f}" for c in columns[:-1]
            if c in means[label] and c in means[first]))


if __name__ == "__main__":
    main()
