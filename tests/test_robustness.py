"""The out-of-distribution scorecard (`python -m tfseg.evaluate --robustness`,
tfseg.deploy.robustness): its levels inside and beyond the training ranges, its table and
plot, and (slow) a tiny run scored end to end."""

import copy
import csv
import dataclasses
import json
import math

import cv2
import numpy as np
import pytest
from conftest import TINY_CONFIG

from tfseg import evaluate
from tfseg.cli import run_cli
from tfseg.config import Config, SyntheticSpec, from_dict
from tfseg.deploy import robustness
from tfseg.deploy.robustness import AXES, INDEPENDENT, TRAINING, Axis, axis_levels, cells_of

SPEC_FIELDS = {field.name for field in dataclasses.fields(SyntheticSpec)}


def levels(axis, low, high, integer=False):
    return [(level, inside) for level, inside in axis_levels(axis, low, high, integer)]


def test_a_range_gives_its_ends_and_middle_inside_and_two_steps_beyond_each_end():
    assert levels(Axis("f", "f"), 10.0, 22.0) == [   # 10 - 2 x 6 < 0 is left out
        (4.0, False), (10.0, True), (16.0, True), (22.0, True), (28.0, False), (34.0, False)]
    # One value: steps of a quarter of it; a factor for "mul" axes; none below 0.
    assert levels(Axis("f", "f"), 16.0, 16.0) == [
        (8.0, False), (12.0, False), (16.0, True), (20.0, False), (24.0, False)]
    assert levels(Axis("f", "f", scale="mul", step=2.0), 1.0, 4.0) == [
        (0.25, False), (0.5, False), (1.0, True), (2.5, True), (4.0, True), (8.0, False),
        (16.0, False)]
    assert levels(Axis("f", "f"), 0.0, 0.02) == [
        (0.0, True), (0.01, True), (0.02, True), (0.03, False), (0.04, False)]
    assert levels(Axis("dust", "dust"), 0.0, 5.0, integer=True) == [
        (0.0, True), (2.0, True), (5.0, True), (8.0, False), (10.0, False)]


def test_periodic_choice_and_probability_axes():
    # An angle range spanning its period has nothing outside it.
    assert all(inside for _, inside in levels(Axis("a", "a", step=45.0, period=180.0),
                                              0.0, 180.0))
    assert levels(Axis("a", "a", step=45.0, period=180.0), 0.0, 90.0) == [
        (0.0, True), (45.0, True), (90.0, True), (135.0, False), (180.0, True)]
    assert levels(Axis("bit_depth", "b", levels=(8, 16)), 8.0, 8.0) == [
        (8, True), (16, False)]
    # Probabilities: a level is inside when the frames it makes occur in training.
    axis = Axis("cluster_probability", "c", levels=(0.0, 1.0))
    assert levels(axis, 0.2, 0.2) == [(0.0, True), (0.2, True), (1.0, True)]
    assert levels(axis, 0.0, 0.0) == [(0.0, True), (1.0, False)]
    # Still samples: none, the default share, all; a run with none has seen neither other.
    still = next(axis for axis in AXES if axis.field == "resident_probability")
    assert levels(still, 0.3, 0.3) == [(0.0, True), (0.3, True), (1.0, True)]
    assert levels(still, 0.0, 0.0) == [(0.0, True), (0.3, False), (1.0, False)]


def test_cells_cover_every_axis_of_the_generator_and_hold_the_others_at_training():
    spec = SyntheticSpec(height=64, width=64, fringes=12.0)
    cells, notes = cells_of(spec)
    assert cells[0].axis == TRAINING and cells[0].spec == spec
    present = [axis for axis in AXES if axis.field in SPEC_FIELDS]
    # Every factor of the generator is an axis.
    assert {axis.field for axis in present} == SPEC_FIELDS - {
        "height", "width", "frames_per_sequence", "max_samples"}
    assert [axis.label for axis in present] == list(dict.fromkeys(
        cell.axis for cell in cells[1:]))
    for axis in AXES:
        if axis.field not in SPEC_FIELDS:
            assert any(f"no field {axis.field!r}" in note for note in notes)
    for cell in cells[1:]:
        changed = {field for field in SPEC_FIELDS
                   if getattr(cell.spec, field) != getattr(spec, field)}
        assert changed <= {cell.field}
        value = getattr(cell.spec, cell.field)
        assert (value[0] == value[1]) if isinstance(value, tuple) else True
    by_axis = {}
    for cell in cells[1:]:
        by_axis.setdefault(cell.field, []).append(cell.inside)
    # Carrier fringes, sample size and phase all have levels on both sides.
    for field in ("fringes", "sample_size", "sample_phase"):
        assert True in by_axis[field] and False in by_axis[field]
    # 64 pixels hold at most 16 fringes: more is left out with the generator's reason.
    assert all(cell.spec.fringes <= 16 if not isinstance(cell.spec.fringes, tuple)
               else cell.spec.fringes[1] <= 16 for cell in cells)


def test_the_independent_spec_fits_the_frames_and_the_network():
    spec = robustness.independent_spec(SyntheticSpec(height=32, width=32, max_samples=2,
                                                     frames_per_sequence=3, fringes=6.0))
    assert (spec.height, spec.width, spec.frames_per_sequence, spec.samples) == (32, 32, 3,
                                                                                 (0, 2))
    assert spec.fringes == (3.0, 5.0) and spec.pixel_size == pytest.approx(50 / 128)
    # 512x512 frames for a 256x256 network: 24-40 fringes, samples 16 % to 31 % of the frame.
    spec = robustness.independent_spec(SyntheticSpec(height=512, width=512, fringes=20.0),
                                       (256, 256))
    assert spec.fringes == (24.0, 40.0) and spec.sample_diameter == (32.0, 64.0)
    assert spec.field_of_view == 200.0


def fake_rows():
    rows = [{"axis": TRAINING, "field": "", "level": "", "training": "", "inside": True,
             "frames": 64, "foreground_iou": 0.8, "precision": 0.85, "recall": 0.9,
             "sample_precision": 0.7, "sample_recall": 0.8, "sample_f1": 0.75}]
    for index, level in enumerate(("8", "16", "24")):
        rows.append({**rows[0], "axis": "carrier fringes", "field": "fringes", "level": level,
                     "training": "16", "inside": level == "16",
                     "foreground_iou": 0.5 + 0.1 * index})
    rows.append({**rows[0], "axis": INDEPENDENT, "inside": False, "foreground_iou": 0.3,
                 "sample_f1": float("nan")})
    return rows


def test_markdown_table_marks_cells_outside_training():
    table = robustness.markdown_table(fake_rows()).splitlines()
    assert table[0].startswith("| axis | level | training | inside |")
    assert len(table) == 2 + 5
    assert "| carrier fringes | 8 | 16 | **out** |" in table[3]
    assert "| carrier fringes | 16 | 16 | in |" in table[4]
    assert table[-1].endswith("| 0.300 | 0.850 | 0.900 | n/a |")


def test_plot_has_a_panel_per_axis_and_a_summary():
    image = robustness.plot(fake_rows(), columns=4)
    assert image.dtype == np.uint8 and image.shape == (robustness.PANEL[0],
                                                       4 * robustness.PANEL[1], 3)
    assert (image != 255).any()


def test_runs_of_other_tasks_are_refused_and_folder_runs_noted():
    config = from_dict(Config, {**TINY_CONFIG, "data": {
        **TINY_CONFIG["data"], "source": "interferograms", "path": "x"}}, source="test")
    assert "data.source 'interferograms'" in robustness.check_run(config)
    assert robustness.check_run(from_dict(Config, TINY_CONFIG, source="test")) is None
    three = from_dict(Config, {**TINY_CONFIG, "model": {**TINY_CONFIG["model"],
                                                         "num_classes": 3},
                               "data": {**TINY_CONFIG["data"],
                                        "class_names": ["background", "a", "b"]}},
                      source="test")
    with pytest.raises(robustness.TfsegError, match="two classes"):
        robustness.check_run(three)


def test_robustness_arguments_are_checked_before_tensorflow(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("{}\n")
    for extra, message in ((["--samples", "2"], "--split and --samples do not apply"),
                           (["--robustness-sequences", "0"], "--robustness-sequences 0")):
        assert run_cli(evaluate.main, ["--run-dir", str(tmp_path), "--robustness",
                                       *extra]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_scorecard_of_a_tiny_run_end_to_end(tmp_path):
    from tfseg.training.loop import train

    config = copy.deepcopy(TINY_CONFIG)
    config["data"].update(height=32, width=32, mean=[100.0], std=[50.0])
    config["data"]["synthetic"] = {"height": 32, "width": 32, "frames_per_sequence": 3,
                                   "fringes": 6.0, "max_samples": 2}
    config["data"]["preprocess"] = {"background_every": 0}
    config["train"].update(epochs=1, steps_per_epoch=3, class_weights=[1.0, 4.0])
    config["export"] = {"saved_model": False, "onnx": False}
    run_dir = tmp_path / "run"
    train(from_dict(Config, config, source="test"), run_dir)

    assert run_cli(evaluate.main, ["--run-dir", str(run_dir), "--robustness",
                                   "--robustness-sequences", "1",
                                   "--output", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    with open(out / "robustness.csv") as file:
        rows = list(csv.DictReader(file))
    spec = SyntheticSpec(height=32, width=32, frames_per_sequence=3, fringes=6.0,
                         max_samples=2)
    cells, _ = cells_of(spec)
    # Every cell: the training ranges, each axis's every level, the independent set.
    assert [(row["axis"], row["level"]) for row in rows] == [
        (cell.axis, cell.level) for cell in cells] + [(INDEPENDENT, "")]
    assert [row["inside"] for row in rows[:-1]] == [str(cell.inside) for cell in cells]
    assert {row["axis"] for row in rows} >= {axis.label for axis in AXES
                                             if axis.field in SPEC_FIELDS}
    scores = [float(row["foreground_iou"]) for row in rows]
    for key in ("foreground_iou", "precision", "recall"):
        values = [float(row[key]) for row in rows]
        assert all(0 <= value <= 1 for value in values if not math.isnan(value)), key
    assert all(int(row["frames"]) == 3 for row in rows[:-1])
    assert int(rows[-1]["frames"]) == 3
    # Other data, other scores.
    assert len({round(score, 6) for score in scores if not math.isnan(score)}) > 3
    report = json.loads((out / "robustness.json").read_text())
    assert len(report["rows"]) == len(rows) and report["sequences_per_cell"] == 1
    assert (out / "robustness.md").read_text().count("\n") == len(rows) + 2
    picture = cv2.imread(str(out / "robustness.png"))
    assert picture is not None and picture.shape[1] == 4 * robustness.PANEL[1]
    assert len(list((out / "independent_set").glob("sequence_*/rois.json"))) == 1
