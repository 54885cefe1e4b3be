"""The report of `python -m tfseg.bench`: its JSON (read back for `--compare`), the Markdown
tables, the fastest runtime per model, and new / old ratios."""

import json
from pathlib import Path

from tfseg.benchmarking.machine import TOOLCHAIN_ANCHORS
from tfseg.utils.errors import TfsegError
from tfseg.utils.hardware import FEATURE_FLAGS

PEAK_TARGET = 0.5
SCHEMA = "tfseg.bench/1"


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
    """The header (machine, ceilings, versions, command), then the table of inference rows
    with the fastest runtime of each model against the target and the pipelines' table, or
    the table of `--train` rows with the PyTorch ratios."""
    machine, versions = report["machine"], report["versions"]
    sections = [f"Machine: {describe_machine(machine)}. TensorFlow {versions['tensorflow']}, "
                f"Keras {versions['keras']}, onnxruntime {versions['onnxruntime']}, OpenCV "
                f"{versions['opencv']}, tfseg {versions['tfseg']}; {report['date']}.",
                ceilings_line(machine["ceilings"]), f"Command: `{report['command']}`",
                _anchor_line(machine["anchors"])]
    if report.get("mode") == "train":
        return "\n\n".join(sections + train_sections(report))
    if report["rows"]:
        sections += [
            (f"Batch {report['batch']}; median and p90 of {report['repeats']} calls after "
             f"{report['warmup']} warm-up calls, each row in its own process. GFLOPs: 2 x "
             f"multiply-adds per image; % CPU / % matmul: achieved GFLOP/s over the two "
             f"ceilings above. OpenCV runs in tfseg.deploy.opencv_dnn's worker process (its "
             f"latency includes the pipe to it)."),
            _table(("model", "input", "runtime", "precision", "median ms", "p90 ms", "images/s",
                    "GFLOPs", "GFLOP/s", "% CPU", "% matmul", "peak RSS MiB", "target ms",
                    "status"),
                   [_row_cells(r) for r in report["rows"]]),
            (f"Fastest runtime per model (target: >= {100 * PEAK_TARGET:.0f} % of the "
             f"measured matmul's throughput):"),
            "\n".join(f"- {line}" for line in fastest_runtimes(report["rows"])),
            *baseline_sections(report["rows"])]
    if report["pipelines"]:
        sections += ["Input pipelines (images per second):",
                     _table(("data set", "images", "pipeline, first epoch", "pipeline, cached",
                             "plain OpenCV loop", "training step", "status"),
                            [_pipeline_cells(p) for p in report["pipelines"]])]
    return "\n\n".join(sections)


def describe_machine(machine):
    """E.g. "AMD EPYC 7B13, 2 cores, CPU flags avx2 fma; Keras precision auto: float32 (...)"."""
    features = " ".join(machine["cpu_features"]) or f"none of {', '.join(FEATURE_FLAGS)}"
    precision = machine["precision"]
    return (f"{machine['cpu']}, {machine['cores']} cores, CPU flags {features}; Keras "
            f"precision auto: {precision['policy']} ({precision['reason']})")


def ceilings_line(ceilings):
    """The two float32 ceilings every row's % columns divide by, and where they come from."""
    cpu = ceilings["cpu"]
    return (f"Ceilings (float32): CPU **{cpu['gflop_per_s']:.0f} GFLOP/s** = {cpu['formula']} "
            f"(clock from {cpu['clock_source']}); measured 4096^3 matmul "
            f"**{ceilings['matmul_gflop_per_s']:.0f} GFLOP/s**.")


def train_sections(report):
    """The `--train` table, and a tfseg / PyTorch images/s line per row that has one."""
    rows = report["rows"]
    ratios = [line for line in map(ratio_line, rows) if line]
    return [(f"One training step (forward, backward, optimizer update; loss read back) on a "
             f"fixed random batch, data excluded, built as `python -m tfseg.train` builds it; "
             f"median and p90 of {report['repeats']} steps after {report['warmup']} warm-up "
             f"steps, each row in its own process. A recurrent recipe's batch is clips "
             f"(batch x frames x input) and its images/s count every frame of a clip, the "
             f"warm-up frames too, as training's images_per_second. GFLOP per step: the "
             f"forward pass's 2 x multiply-adds x 3 (the usual estimate of forward + "
             f"backward); % CPU / % matmul: achieved GFLOP/s over the two ceilings above."),
            _table(("recipe", "model", "batch x input", "precision", "median ms", "p90 ms",
                    "images/s", "GFLOP/step", "GFLOP/s", "% CPU", "% matmul", "peak RSS MiB",
                    "status"), [_train_cells(row) for row in rows]),
            *(["tfseg / PyTorch (images/s; PyTorch float32, eager, Adam, cross-entropy):",
               "\n".join(f"- {line}" for line in ratios)] if ratios else [])]


def ratio_line(row):
    """"recipe precision: tfseg N img/s / PyTorch M img/s = R x" for a measured row with a
    PyTorch reference; why not, when PyTorch failed; None without one."""
    reference = row.get("pytorch")
    if row["status"] != "ok" or not reference:
        return None
    label = f"{row['recipe']} ({row['model']}, {row['batch']}x{row['input']}, " \
            f"{_precision(row)})"
    if reference["status"] != "ok":
        return f"{label}: PyTorch {reference['status']}: {reference['reason']}"
    return (f"{label}: tfseg {row['images_per_s']:.2f} img/s / PyTorch "
            f"{reference['images_per_s']:.2f} img/s = "
            f"**{row['images_per_s'] / reference['images_per_s']:.2f}x** (PyTorch "
            f"{reference['median_ms']:.1f} ms/step, {reference['parameters']:,} parameters; "
            f"tfseg {row['median_ms']:.1f} ms/step, {row['parameters']:,})")


def _train_cells(row):
    cells = [row["recipe"], row.get("model", ""),
             f"{row['batch']}x{row['input']}" if "batch" in row else "", _precision(row)]
    if row["status"] != "ok":
        return cells + [""] * 8 + [f"{row['status']}: {_escape(row['reason'])}"]
    return cells + [f"{row['median_ms']:.1f}", f"{row['p90_ms']:.1f}",
                    f"{row['images_per_s']:.2f}", f"{row['gflops_per_step']:.2f}",
                    *_throughput_cells(row), f"{row['peak_rss_mib']:.0f}", "ok"]


def _throughput_cells(row):
    return [f"{row['gflop_per_s']:.0f}", _percent(row["cpu_fraction"]),
            _percent(row["matmul_fraction"])]


def _percent(fraction):
    return "" if fraction is None else f"{100 * fraction:.0f} %"


def _table(header, rows):
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(cells) + " |" for cells in rows)])


def _row_cells(row):
    cells = [row["model"] + "".join(f", {k}={v}" for k, v in row["options"].items()
                                    if k not in ("num_classes", "scale")),
             row["input"], row["runtime"], _precision(row)]
    target = _target(row)
    if row["status"] != "ok":
        return cells + [""] * 8 + [target, f"{row['status']}: {_escape(row['reason'])}"]
    met = row["median_ms"] <= row["target_ms"] if row["target_ms"] else None
    return cells + [f"{row['median_ms']:.1f}", f"{row['p90_ms']:.1f}",
                    f"{row['images_per_s']:.2f}", f"{row['gflops']:.2f}",
                    *_throughput_cells(row), f"{row['peak_rss_mib']:.0f}",
                    target + {None: "", True: " (met)", False: " (**missed**)"}[met], "ok"]


def _target(row):
    """The target cell: the issue's latency, or a baseline row's median x the ratio allowed."""
    baseline = row.get("baseline")
    if not baseline:
        return _number(row["target_ms"])
    allowed = f"{baseline['ratio']:g}x {baseline['model']}"
    return (f"{row['target_ms']:.1f} ({allowed})" if row["target_ms"]
            else f"{allowed}, not measured")


def baseline_sections(rows):
    """The heading and one line per row judged against a baseline row: its median over the
    baseline's, against the ratio allowed, and whether a recurrent model's state changed."""
    lines = []
    for row in rows:
        baseline = row.get("baseline")
        if not baseline or "measured" not in baseline:
            continue
        met = "met" if baseline["measured"] <= baseline["ratio"] else "**missed**"
        state = ({True: "; the state changed over the timed calls",
                  False: "; **the state did not change** over the timed calls"}
                 [row["state_changed"]] if "state_changed" in row else "")
        lines.append(f"{_row_cells(row)[0]} {row['input']}, {row['runtime']} "
                     f"({_precision(row)}): {baseline['measured']:.2f}x {baseline['model']} "
                     f"(target <= {baseline['ratio']:g}x: {met}){state}")
    return ["Latency over the baseline's (same options, input and runtime; a recurrent "
            "model: one frame per call, its state fed from the previous call):",
            "\n".join(f"- {line}" for line in lines)] if lines else []


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
            f"{row['gflop_per_s']:.0f} GFLOP/s = {100 * row['matmul_fraction']:.0f} % of the "
            f"matmul's ({'met' if row['matmul_fraction'] >= PEAK_TARGET else '**missed**'})"
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
