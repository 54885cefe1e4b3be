"""`python -m tfseg.bench`'s work: every measurement in its own child process, then the
report printed and written."""

import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tfseg
from tfseg.benchmarking.cases import (
    ARTIFACTS,
    baseline_key,
    cases_of,
    row_key,
    rows_of,
    slug,
)
from tfseg.benchmarking.ceiling import cpu_ceiling
from tfseg.benchmarking.children import run_child
from tfseg.benchmarking.training import TRAIN_RECIPES, pytorch_arguments
from tfseg.benchmarking.report import SCHEMA, compare, render_comparison, render_markdown
from tfseg.utils.errors import TfsegError
from tfseg.utils.files import write_text_atomic
from tfseg.utils.hardware import cpu_info

# PyTorch's side of `--train --pytorch`, in the source tree (not installed with tfseg).
PYTORCH_SCRIPT = Path(tfseg.__file__).resolve().parents[1] / "benchmarks" / "pytorch_reference.py"


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
    machine = measure_machine(args.timeout)
    settings = {"repeats": args.repeats, "warmup": args.warmup, "batch": args.batch}
    auto = machine["precision"]["policy"].removeprefix("mixed_")
    rows, pipelines = [], []
    if args.train:
        rows = [row for recipe in recipes_of(args) for row in
                measure_recipe(recipe, args, auto, machine["ceilings"])]
    else:
        variants = rows_of(args, auto=auto)
        with tempfile.TemporaryDirectory(prefix="tfseg-bench-") as exports:
            for case in cases_of(args):
                rows += measure_case(case, variants, settings, Path(exports), args.timeout,
                                     machine["ceilings"])
        judge_against_baselines(rows)
        with tempfile.TemporaryDirectory(prefix="tfseg-bench-data-") as scratch:
            work_dir = args.work_dir or Path(scratch)
            pipelines = [measure_pipeline(name, args, work_dir) for name in args.pipelines]
    for row in rows:   # each row names its machine, read on its own too
        row["cpu"] = cpu_info().describe()
    return {"schema": SCHEMA, "command": command, "date": time.strftime("%Y-%m-%d %H:%M"),
            "mode": "train" if args.train else "inference", "machine": machine,
            "versions": machine.pop("versions"), **settings, "rows": rows,
            "pipelines": pipelines}


def measure_machine(timeout):
    """The machine section of the report: the CPU (model, flags, cores), its two ceilings
    (`tfseg.benchmarking.ceiling`'s theoretical one and a measured matmul's), the precision
    training picks here, the TOOLCHAIN.md anchors and the versions."""
    machine = run_child({"job": "machine"}, timeout=timeout)
    if machine["status"] != "ok":
        raise TfsegError(f"the machine's reference measurements failed: {machine['reason']}")
    cpu = cpu_info()
    return {"cpu": cpu.model, "cpu_features": cpu.features, "cores": cpu.cores,
            "precision": machine["precision"],
            "ceilings": {"cpu": cpu_ceiling(),
                         "matmul_gflop_per_s": machine["matmul_gflop_per_s"]},
            "anchors": machine["anchors"], "versions": machine["versions"]}


def add_throughput(row, gflop_per_s, ceilings):
    """The row's achieved GFLOP/s and its fractions of the CPU's and the matmul's ceilings."""
    row.update(gflop_per_s=gflop_per_s,
               cpu_fraction=gflop_per_s / ceilings["cpu"]["gflop_per_s"]
               if ceilings["cpu"]["gflop_per_s"] else None,
               matmul_fraction=gflop_per_s / ceilings["matmul_gflop_per_s"])


def measure_case(case, variants, settings, exports, timeout, ceilings):
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
        if case.baseline:
            row["baseline"] = {"key": baseline_key(case, variant, settings["batch"]),
                               "model": case.baseline, "ratio": case.baseline_ratio}
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
            add_throughput(row, row["gflops"] * row["images_per_s"], ceilings)
        rows.append(_progress(row))
    return rows


def judge_against_baselines(rows):
    """Gives each row judged against a baseline row (`Case.baseline`) measured in the same
    run its median over the baseline's (`baseline["measured"]`) and its target: the
    baseline's median x `baseline["ratio"]`."""
    measured = {row["key"]: row for row in rows if row["status"] == "ok"}
    for row in rows:
        reference = measured.get(row.get("baseline", {}).get("key"))
        if reference:
            row["target_ms"] = row["baseline"]["ratio"] * reference["median_ms"]
            if row["status"] == "ok":
                row["baseline"]["measured"] = row["median_ms"] / reference["median_ms"]


def _progress(row):
    print(f"{row['key']}: " + (f"{row['median_ms']:.1f} ms" if row["status"] == "ok"
                               else f"{row['status']}: {row['reason']}"), file=sys.stderr,
          flush=True)
    return row


def recipes_of(args):
    """The `--train` recipes whose model is among `--models`, in `TRAIN_RECIPES`' order."""
    from tfseg.config import load_config
    from tfseg.config.recipes import recipe_path

    return [recipe for recipe in TRAIN_RECIPES
            if load_config(recipe_path(recipe)).model.name in args.models]


def measure_recipe(recipe, args, auto, ceilings):
    """The `--train` rows of one recipe: one child per precision and XLA setting, then, with
    `--pytorch`, the same network's PyTorch training step and the images/s ratio."""
    size = list(args.size) if args.size else None
    rows, reference = [], None
    for dtype in dict.fromkeys(auto if dtype == "auto" else dtype for dtype in args.dtypes):
        for jit in args.jit_compile:
            row = {"recipe": recipe, "dtype": dtype, "jit_compile": jit == "on",
                   **run_child({"job": "train", "recipe": recipe, "dtype": dtype,
                                "jit_compile": jit == "on", "size": size, "batch": args.batch,
                                "warmup": args.warmup, "repeats": args.repeats},
                               timeout=args.timeout)}
            row["key"] = train_row_key(row, args)
            if row["status"] == "ok":
                add_throughput(row, row["gflops_per_step"] * 1e3 / row["median_ms"], ceilings)
                if args.pytorch and reference is None:
                    reference = run_pytorch(args.pytorch, row, args)
                if reference:
                    row["pytorch"] = reference
            rows.append(_progress(row))
    return rows


def train_row_key(row, args):
    """A `--train` row's identity across runs (what `--compare` matches)."""
    size = "x".join(map(str, args.size)) if args.size else "recipe size"
    return (f"train {row['recipe']} {row['dtype']}" + (" XLA" if row["jit_compile"] else "")
            + f" {size} batch {args.batch or 'recipe'}")


def run_pytorch(python, row, args):
    """`benchmarks/pytorch_reference.py --train` for `row`'s network, batch and size, run by
    the interpreter `python`; its result dict, {"status": "failed", "reason"}, or None when
    it has no such network."""
    arguments = pytorch_arguments(row)
    if arguments is None:
        return None
    with tempfile.TemporaryDirectory(prefix="tfseg-bench-torch-") as scratch:
        output = Path(scratch) / "torch.json"
        command = [str(python), str(PYTORCH_SCRIPT), *arguments, "--warmup", str(args.warmup),
                   "--repeats", str(args.repeats), "--json", str(output)]
        try:
            process = subprocess.run(command, capture_output=True, text=True,
                                     timeout=args.timeout)
        except (OSError, subprocess.TimeoutExpired) as error:
            return {"status": "failed", "reason": str(error).splitlines()[0][:300]}
        if process.returncode != 0 or not output.is_file():
            last = (process.stderr.strip().splitlines() or ["(no message)"])[-1]
            return {"status": "failed",
                    "reason": f"exit status {process.returncode}: {last[:300]}"}
        return {"status": "ok", **json.loads(output.read_text())["rows"][0]}


def measure_pipeline(name, args, work_dir):
    """One input pipeline's images per second, in its own child process; synthetic frames
    are written into `work_dir`."""
    result = run_child({"job": "pipeline", "name": name, "data_dir": str(args.data_dir),
                        "work_dir": str(work_dir), "frames": args.frames,
                        "limit": args.limit}, timeout=args.timeout)
    print(f"pipeline {name}: {result['status']}", file=sys.stderr, flush=True)
    return {"key": f"pipeline {name}", "name": name, **result}
