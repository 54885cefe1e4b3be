"""The out-of-distribution scorecard of `python -m tfseg.evaluate --robustness`: a run (or an
export) scored along each axis of variation of the training generator, at levels inside and
beyond the run's training ranges, and on a set from an independent renderer.

Axes (`AXES`) are fields of `tfseg.config.SyntheticSpec`; the run's own `data.synthetic`
gives each one's training range (low, high), or its single value. Two are about time:
still samples (`resident_probability`: samples that stay in view, which a model subtracting
the sequence's mean frame loses) and background drift (`vibration`: a global phase jitter
plus a slow wander of the same rms). Per axis the levels are the range's ends and middle
(inside), and levels beyond it (outside): `step` and 2 x `step` below the low end and above
the high end (`scale` "add"; the step defaults to half the range's
width, a quarter of the value when the range is one value), or a factor `step` and its square
(`scale` "mul"). A cell renders the run's held-out sequences (`data.val_seed`, split
validation) with that one field fixed at the level and every other factor at its training
range, so the cells of an axis differ in that factor only. Levels the generator refuses (a
negative noise, too many fringes for the frame) are left out with a note, as are axes whose
field the generator does not have. A run trained on folders of frames is scored around its
config's `data.synthetic` (`--set data.synthetic.KEY=VALUE` to the values its frames were
made with), with a note saying so.

The independent set is rendered by `tfseg.data.holography` (an off-axis holography forward
model sharing no code with the training generator), at the run's synthetic frame size and
sequence length (`independent_spec`), written as sequence folders with rois.json
(`tfseg.data.synthetic_folders`) and read back as `data.source: interferograms` reads a user's
data (a recurrent model's config reads each folder as one whole sequence).

Every cell is scored by `tfseg.deploy.evaluation.score`, the validation of training runs and
of `python -m tfseg.evaluate` (a recurrent model runs each held-out sequence whole, in order,
its state reset to zeros per sequence): foreground IoU, pixel precision and recall of the foreground
class, and the sample-level precision, recall and F1 where the validation gives them.
Written: `robustness.csv`, `robustness.md` (a table, outside cells marked), `robustness.json`
and `robustness.png` (a panel per axis, drawn with OpenCV), and `independent_set/`.
"""

import dataclasses
import math
import shutil
from dataclasses import dataclass

import cv2
import numpy as np

from tfseg.config import SyntheticSpec
from tfseg.data.holography import HolographySpec, render_sequence
from tfseg.data.synthetic_folders import write_sequences
from tfseg.deploy.evaluation import evaluation_batches, open_model, score, write_csv
from tfseg.deploy.metadata import check_preprocessing
from tfseg.utils.errors import TfsegError
from tfseg.utils.files import write_json, write_text_atomic
from tfseg.utils.images import write_png


@dataclass(frozen=True)
class Axis:
    """One axis of the scorecard.

    field: the `SyntheticSpec` field varied (rename here when the generator's changes).
    label: its name in the table and the plot.
    scale: "add" (levels beyond at `step`, 2 `step`) or "mul" (at x / `step`, `step`^2).
    step: see `scale`; None: half the training range's width (a quarter of its value when
        the range is one value).
    period: the field repeats with this period (an angle): no level is outside a training
        range that spans it.
    levels: explicit levels instead (a choice such as the bit depth, or probabilities).
    """

    field: str
    label: str
    scale: str = "add"
    step: float | None = None
    period: float | None = None
    levels: tuple = ()


AXES = (
    Axis("fringes", "carrier fringes"),
    Axis("fringe_angle", "carrier angle (deg)", step=45.0, period=180.0),
    Axis("aberration", "aberration"),
    Axis("falloff", "illumination falloff"),
    Axis("vignetting", "vignetting"),
    Axis("visibility", "fringe visibility", step=0.1),
    Axis("exposure", "exposure"),
    Axis("read_noise", "read noise"),
    Axis("shot_noise", "shot noise"),
    Axis("fixed_pattern", "fixed-pattern noise"),
    Axis("blur", "defocus blur (px)"),
    Axis("dust", "dust"),
    Axis("object_dust_probability", "dust in the object beam", levels=(0.0, 0.5, 1.0)),
    Axis("sample_size", "sample size", scale="mul", step=1.5),
    Axis("sample_phase", "sample phase (rad)", scale="mul", step=1.5),
    Axis("irregularity", "outline irregularity"),
    Axis("cluster_probability", "cluster probability", levels=(0.0, 1.0)),
    Axis("empty_probability", "empty-sequence probability", levels=(0.0, 0.5)),
    Axis("resident_probability", "still-sample probability", levels=(0.0, 0.3, 1.0)),
    Axis("vibration", "background drift (vibration, rad)"),
    Axis("flicker", "laser flicker"),
    Axis("bit_depth", "bit depth", levels=(8, 16)),
)
TRAINING = "training ranges"
INDEPENDENT = "independent renderer"
COLUMNS = ("axis", "field", "level", "training", "inside", "frames", "foreground_iou",
           "precision", "recall", "sample_precision", "sample_recall", "sample_f1")


@dataclass(frozen=True)
class Cell:
    """One cell: the `value` given to `axis.field` (None: the run's own spec), whether it
    lies inside the training range, and the spec it renders."""

    axis: str
    field: str
    level: str
    training: str
    inside: bool
    spec: SyntheticSpec | None


def training_range(spec, field):
    """(low, high) of `field` in `spec`, and whether the field holds a pair."""
    value = getattr(spec, field)
    if isinstance(value, (tuple, list)):
        return (float(value[0]), float(value[1])), True
    return (float(value), float(value)), False


def axis_levels(axis, low, high, integer):
    """[(level, inside)] of `axis` for a training range (low, high), sorted by level."""
    def inside(level):
        if axis.period is not None:
            return high - low >= axis.period or (level - low) % axis.period <= high - low
        return low - 1e-9 <= level <= high + 1e-9

    if axis.levels:
        levels = set(axis.levels) | {low, high}
        if axis.field.endswith("_probability"):
            # A probability's frames are those of training when both kinds occur in it.
            return sorted((level, level == low or (0 < low < 1) or
                           (level == 0 and low < 1) or (level == 1 and low > 0))
                          for level in levels)
        return sorted((level, inside(level)) for level in levels)
    levels = {low, high, (low + high) / 2}
    if axis.period is None or high - low < axis.period:
        if axis.scale == "mul":
            levels |= {low / axis.step, low / axis.step**2, high * axis.step,
                       high * axis.step**2}
        else:
            step = axis.step or ((high - low) / 2 if high > low else abs(high) / 4)
            if step:
                levels |= {low - step, low - 2 * step, high + step, high + 2 * step}
    if low >= 0:   # a quantity that cannot be negative: no level below 0
        levels = {level for level in levels if level >= 0}
    if integer:
        levels = {float(round(level)) for level in levels}
    levels = {round(level, 6) for level in levels}
    return sorted((level, inside(level)) for level in levels)


def format_level(value):
    return f"{value:.4g}"


def cells_of(spec, axes=AXES):
    """The scorecard's cells for the training spec `spec` (the run's `data.synthetic`):
    first the spec itself, then each axis's levels; and notes on what was left out."""
    cells = [Cell(TRAINING, "", "", "", True, spec)]
    notes = []
    names = {field.name for field in dataclasses.fields(SyntheticSpec)}
    for axis in axes:
        if axis.field not in names:
            notes.append(f"axis {axis.label!r}: the generator has no field {axis.field!r}; "
                         f"left out")
            continue
        (low, high), pair = training_range(spec, axis.field)
        integer = isinstance(getattr(spec, axis.field), int) or (
            pair and all(isinstance(v, int) for v in getattr(spec, axis.field)))
        training = (format_level(low) if low == high
                    else f"{format_level(low)}..{format_level(high)}")
        for level, inside in axis_levels(axis, low, high, integer):
            value = int(level) if integer else level
            try:
                cell_spec = dataclasses.replace(spec, **{
                    axis.field: (value, value) if pair else value})
            except ValueError as error:
                notes.append(f"axis {axis.label!r}: level {format_level(level)} left out "
                             f"({error})")
                continue
            cells.append(Cell(axis.label, axis.field, format_level(level), training, inside,
                              cell_spec))
    return cells, notes


def independent_spec(spec, network_size=None):
    """The independent renderer's spec for a run whose frames are `spec` and whose network
    takes `network_size` (H, W; default the frames' size): the frames' size, sequence length
    and sample count; the renderer's own optics otherwise, scaled with the frame so a pixel
    stays 0.39 um and a sample the same fraction of the frame as at 128x128, and its 12-20
    carrier fringes per 128 network pixels (at most a quarter of the frame's pixels)."""
    short = min(spec.height, spec.width)
    network = min(network_size) if network_size else short
    scale = short / 128
    fringes = tuple(min(short / 4, value * network / 128) for value in (12.0, 20.0))
    return HolographySpec(height=spec.height, width=spec.width,
                          frames_per_sequence=spec.frames_per_sequence,
                          samples=(0, spec.max_samples), fringes=fringes,
                          field_of_view=50.0 * scale, sample_diameter=(8.0 * scale,
                                                                       16.0 * scale),
                          supersample=2 if short <= 512 else 1)


def _row(cell, report):
    foreground = next(row for row in report["per_class"] if row["id"] == 1)
    row = {"axis": cell.axis, "field": cell.field, "level": cell.level,
           "training": cell.training, "inside": cell.inside, "frames": report["frames"],
           "foreground_iou": report["foreground_iou"],
           "precision": foreground["precision"], "recall": foreground["recall"]}
    for key in ("sample_precision", "sample_recall", "sample_f1"):
        row[key] = report.get(key, float("nan"))
    return {key: float(value) if isinstance(value, np.floating) else value
            for key, value in row.items()}


def _with_data(config, **changes):
    return dataclasses.replace(config, data=dataclasses.replace(config.data, **changes))


def cell_configs(config, *, sequences, folder, axes=AXES):
    """[(cell, config)]: each cell of `axes` (`cells_of`) and the independent set, with the
    run's `config` whose validation data (`evaluation_batches`) is that cell's held-out
    sequences: `sequences` synthetic ones (`data.val_seed`), or the independent set,
    rendered into `folder` (replaced when it exists) and read back as `data.source:
    interferograms` reads a user's sequence folders. A recurrent model's config gives whole
    sequences (`tfseg.data.pipeline`), a per-frame model's their frames. Also the notes on
    what `cells_of` left out."""
    spec = config.data.synthetic
    cells, notes = cells_of(spec, axes)
    jobs = [(cell, _with_data(config, source="synthetic", synthetic=cell.spec,
                              val_sequences=sequences, val_frame_stride=1, cache="none"))
            for cell in cells]
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    write_sequences(folder, independent_spec(spec, (config.data.height, config.data.width)),
                    sequences=sequences,
                    seed=config.data.val_seed, render=render_sequence)
    independent = Cell(INDEPENDENT, "", "", "", False, None)
    jobs.append((independent, _with_data(
        config, source="interferograms", path=str(folder), val_path=str(folder),
        labels="rois", cache="none")))
    return jobs, notes


def scorecard(runtime, config, *, sequences, folder, axes=AXES, progress=print):
    """Scores `runtime` on every cell and on the independent set (`cell_configs`), each by
    `tfseg.deploy.evaluation.score`: a recurrent model runs each held-out sequence whole,
    its frames in order, from a zero state.

    Args:
        runtime: a `tfseg.deploy.runtimes` runtime (entered).
        config: the run's `Config` (a two-class interferogram segmentation run).
        sequences: held-out sequences per cell (each of data.synthetic.frames_per_sequence
            frames).
        folder: Path. The independent set is written here (replaced when it exists).
        axes: the axes scored (default every one, `AXES`).
        progress: callable taking one line per scored cell.

    Returns:
        (rows, notes): one dict per cell (`COLUMNS`), the training-range cell first and the
        independent set last; notes on left-out levels and axes, and the runtime's notes.
    """
    jobs, notes = cell_configs(config, sequences=sequences, folder=folder, axes=axes)
    rows, runtime_notes = [], set()
    for cell, cell_config in jobs:
        report = score(runtime, cell_config,
                       evaluation_batches(cell_config, "validation", runtime))
        runtime_notes.update(report["notes"])
        rows.append(_row(cell, report))
        row = rows[-1]
        progress(f"{row['axis']:<28} {row['level']:>8} {'in ' if row['inside'] else 'OUT'} "
                 f"foreground IoU {row['foreground_iou']:.4f}  precision "
                 f"{row['precision']:.4f}  recall {row['recall']:.4f}")
    return rows, notes + sorted(runtime_notes)


def markdown_table(rows):
    """The scorecard as a Markdown table; cells outside the training ranges in bold."""
    lines = ["| axis | level | training | inside | frames | foreground IoU | precision | "
             "recall | sample F1 |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        mark = "in" if row["inside"] else "**out**"
        lines.append(f"| {row['axis']} | {row['level']} | {row['training']} | {mark} | "
                     f"{row['frames']} | {_number(row['foreground_iou'])} | "
                     f"{_number(row['precision'])} | {_number(row['recall'])} | "
                     f"{_number(row['sample_f1'])} |")
    return "\n".join(lines) + "\n"


def _number(value):
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


PANEL = (200, 280)   # height, width of one axis's panel
_IN, _OUT, _GREY = (200, 90, 20), (30, 30, 220), (150, 150, 150)   # BGR


def plot(rows, columns=4):
    """uint8 BGR picture: a panel per axis (foreground IoU per level, filled dots inside the
    training range, hollow outside), the training-range score as a grey line, and a last
    panel with the training-range and independent-set scores as bars."""
    baseline = next((row["foreground_iou"] for row in rows if row["axis"] == TRAINING),
                     float("nan"))
    axes = list(dict.fromkeys(row["axis"] for row in rows
                              if row["axis"] not in (TRAINING, INDEPENDENT)))
    panels = [_axis_panel(name, [row for row in rows if row["axis"] == name], baseline)
              for name in axes]
    panels.append(_summary_panel(rows))
    while len(panels) % columns:
        panels.append(np.full((*PANEL, 3), 255, np.uint8))
    grid = [np.hstack(panels[i:i + columns]) for i in range(0, len(panels), columns)]
    return np.vstack(grid)


def _frame(title):
    image = np.full((*PANEL, 3), 255, np.uint8)
    height, width = PANEL
    left, top, bottom, right = 38, 24, height - 34, width - 10
    cv2.putText(image, title[:34], (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                cv2.LINE_AA)
    cv2.rectangle(image, (left, top), (right, bottom), (0, 0, 0), 1)
    for tick in (0.0, 0.5, 1.0):
        y = round(bottom - tick * (bottom - top))
        cv2.line(image, (left - 3, y), (left, y), (0, 0, 0), 1)
        cv2.putText(image, f"{tick:.1f}", (8, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return image, (left, top, bottom, right)


def _y(value, top, bottom):
    return round(bottom - min(max(value, 0.0), 1.0) * (bottom - top))


def _axis_panel(name, rows, baseline):
    image, (left, top, bottom, right) = _frame(name)
    if math.isfinite(baseline):
        y = _y(baseline, top, bottom)
        for x in range(left, right, 8):
            cv2.line(image, (x, y), (min(x + 4, right), y), _GREY, 1)
    count = len(rows)
    xs = [round(left + (i + 0.5) * (right - left) / count) for i in range(count)]
    points = [(x, _y(row["foreground_iou"], top, bottom)) for x, row in zip(xs, rows)
              if row["foreground_iou"] is not None and math.isfinite(row["foreground_iou"])]
    if len(points) > 1:
        cv2.polylines(image, [np.array(points, np.int32)], False, (80, 80, 80), 1, cv2.LINE_AA)
    for index, (x, row) in enumerate(zip(xs, rows)):
        value = row["foreground_iou"]
        if value is not None and math.isfinite(value):
            colour = _IN if row["inside"] else _OUT
            cv2.circle(image, (x, _y(value, top, bottom)), 4, colour,
                       -1 if row["inside"] else 1, cv2.LINE_AA)
        cv2.putText(image, row["level"][:6], (x - 14, bottom + 14 + 10 * (index % 2)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.3, (0, 0, 0), 1, cv2.LINE_AA)
    return image


def _summary_panel(rows):
    image, (left, top, bottom, right) = _frame("training vs independent set")
    bars = [row for row in rows if row["axis"] in (TRAINING, INDEPENDENT)]
    width = (right - left) // max(1, 2 * len(bars))
    for i, row in enumerate(bars):
        value = row["foreground_iou"]
        x = left + width // 2 + 2 * i * width
        if value is not None and math.isfinite(value):
            cv2.rectangle(image, (x, _y(value, top, bottom)), (x + width, bottom),
                          _IN if row["inside"] else _OUT, -1)
            cv2.putText(image, f"{value:.3f}", (x, _y(value, top, bottom) - 4),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(image, row["axis"].split()[0], (x - 4, bottom + 14),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, "filled: inside training, hollow: outside", (6, PANEL[0] - 4),
                cv2.FONT_HERSHEY_SIMPLEX, 0.3, (0, 0, 0), 1, cv2.LINE_AA)
    return image


def check_run(config):
    """TfsegError unless `config` is a run the scorecard applies to (a two-class background /
    sample segmentation); a note when its training ranges are not its data's."""
    if config.model.task != "segmentation" or config.model.num_classes != 2:
        raise TfsegError("--robustness scores background / sample segmentation runs (two "
                         f"classes); this is a {config.model.task} model of "
                         f"{config.model.num_classes} classes")
    if config.data.source != "synthetic":
        return (f"the run trained on data.source {config.data.source!r}: the training ranges "
                f"are its config's data.synthetic (set them with --set data.synthetic.KEY="
                f"VALUE to those its frames were made with)")
    return None


def robustness_to_folder(*, run_dir=None, model_path=None, config_path=None, runtime_name=None,
                         overrides=(), output=None, sequences=8):
    """`python -m tfseg.evaluate --robustness`: scores a run or an exported model (see
    `tfseg.deploy.evaluation.open_model`) on every cell, prints each line, writes
    robustness.csv, .md, .json and .png and independent_set/ into `output` (default: the
    run, else the model's folder). Returns the rows."""
    config, runtime, source = open_model(run_dir=run_dir, model_path=model_path,
                                         config_path=config_path, runtime_name=runtime_name,
                                         overrides=overrides)
    source_note = check_run(config)
    output = output or run_dir or model_path.parent
    output.mkdir(parents=True, exist_ok=True)
    with runtime:
        check_preprocessing(runtime.metadata, config, source)
        print(f"robustness of {source} ({runtime.name}; {runtime.version}): {sequences} "
              f"held-out sequences of {config.data.synthetic.frames_per_sequence} frames "
              f"per cell")
        rows, notes = scorecard(runtime, config, sequences=sequences,
                                folder=output / "independent_set")
    notes = ([source_note] if source_note else []) + notes
    for note in notes:
        print(f"note: {note}")
    write_csv([{key: row[key] for key in COLUMNS} for row in rows], output / "robustness.csv")
    write_text_atomic(output / "robustness.md", markdown_table(rows))
    write_json({"model": source, "runtime": runtime.name, "runtime_version": runtime.version,
                "sequences_per_cell": sequences, "independent_spec": dataclasses.asdict(
                    independent_spec(config.data.synthetic,
                                     (config.data.height, config.data.width))),
                "rows": rows, "notes": notes}, output / "robustness.json")
    write_png(output / "robustness.png", plot(rows))
    print(f"written to {output / 'robustness.csv'}, robustness.md, robustness.json, "
          f"robustness.png and independent_set/")
    return rows
