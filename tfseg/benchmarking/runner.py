"""`python -m tfseg.bench`'s work: every measurement in its own child process, then the
report printed and written."""

import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from tfseg.benchmarking.cases import ARTIFACTS, cases_of, row_key, rows_of, slug
from tfseg.benchmarking.children import run_child
from tfseg.benchmarking.machine import REFERENCE_CONV
from tfseg.benchmarking.report import SCHEMA, compare, render_comparison, render_markdown
from tfseg.utils.errors import TfsegError
from tfseg.utils.files import write_text_atomic
from tfseg.utils.hardware import cpu_info


def benchmark(args, *, command):
    """Measures what `args` (`tfseg.bench.parse_args`) asks for, prints the table, writes the
    requested files and, with `--compare`, prints the ratios to the old report."""
    report = run_benchmark(args, command=command)
    markdown = render_markdown(report)
    print(markdown)
    for path, text in ((args.markdown, markdown), (args.json, json.dumps(report, indent=2))):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, text + "\n")
    if args.old:
        print("\n" + render_comparison(compare(report, args.old), args.compare))
    return report


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
    with tempfile.TemporaryDirectory(prefix="tfseg-bench-data-") as scratch:
        work_dir = args.work_dir or Path(scratch)
        pipelines = [measure_pipeline(name, args, work_dir) for name in args.pipelines]
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
                          "formats": formats, "directory": str(exports / slug(case))},
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


def measure_pipeline(name, args, work_dir):
    """One input pipeline's images per second, in its own child process; synthetic frames
    are written into `work_dir`."""
    result = run_child({"job": "pipeline", "name": name, "data_dir": str(args.data_dir),
                        "work_dir": str(work_dir), "frames": args.frames,
                        "limit": args.limit}, timeout=args.timeout)
    print(f"pipeline {name}: {result['status']}", file=sys.stderr, flush=True)
    return {"key": f"pipeline {name}", "name": name, **result}
