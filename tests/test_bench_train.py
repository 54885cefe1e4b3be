"""`python -m tfseg.bench --train`: its arguments, the CPU ceiling from a /proc/cpuinfo, the
training table and the tfseg / PyTorch ratio lines, one tiny row end to end, and
benchmarks/pytorch_reference.py's training mode (with an interpreter that has PyTorch)."""

import json
import math
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from conftest import CPUINFO, REPO, run_module

from tfseg import bench
from tfseg.benchmarking import ceiling, runner
from tfseg.benchmarking.report import SCHEMA, ratio_line, render_markdown
from tfseg.benchmarking.training import pytorch_arguments
from tfseg.cli import run_cli

# An interpreter with PyTorch (not a tfseg dependency): TFSEG_TORCH_PYTHON, or the venv that
# benchmarks/pytorch_reference.py's header installs.
TORCH_PYTHON = os.environ.get("TFSEG_TORCH_PYTHON") or "/work/torchenv/bin/python"
needs_torch = pytest.mark.skipif(
    not shutil.which(TORCH_PYTHON),
    reason=f"no interpreter with PyTorch at {TORCH_PYTHON} (set TFSEG_TORCH_PYTHON; "
           f"benchmarks/pytorch_reference.py says how to install one)")
CEILINGS = {"cpu": {"gflop_per_s": 400.0, "clock_source": "cpuinfo",
                    "formula": "2 cores x 3.12 GHz x 8 FP32 lanes x 2 FMA x 2"},
            "matmul_gflop_per_s": 200.0}
# A measured default-recipe row and the PyTorch step of the same network.
ROW = {"recipe": "default", "model": "linknet", "options": {"width": 0.5}, "num_classes": 2,
       "batch": 8, "input": "128x128x1", "dtype": "float32", "jit_compile": False,
       "status": "ok", "median_ms": 200.0, "p90_ms": 210.0, "images_per_s": 40.0,
       "gflops_per_step": 20.0, "gflop_per_s": 100.0, "cpu_fraction": 0.25,
       "matmul_fraction": 0.5, "parameters": 2885602, "peak_rss_mib": 900.0,
       "pytorch": {"status": "ok", "images_per_s": 25.0, "median_ms": 320.0,
                   "parameters": 2885602}}


def test_train_arguments_select_recipes_by_model():
    args = bench.parse_args(["--train", "--models", "linknet", "fcn_resnet18", "--size",
                             "64x96", "--batch", "2", "--jit-compile", "off", "on"])
    assert (args.train, args.size, args.batch, args.jit_compile) == (
        True, (64, 96), 2, ["off", "on"])
    assert runner.recipes_of(args) == ["default", "linknet_camvid",
                                       "fcn_resnet18_interferogram"]
    every = bench.parse_args(["--train"])
    assert every.batch is None   # each recipe's own batch
    assert runner.recipes_of(every) == [
        "default", "linknet_camvid", "fcn_resnet18_interferogram",
        "fcn32_vgg16_interferogram", "icnet_interferogram", "icnet_temporal_interferogram",
        "sr_johnson_x4"]
    assert bench.parse_args([]).batch == 1   # inference: one image per call


@pytest.mark.parametrize("argv, message", [
    (["--train", "--pipelines"], "--train times training steps: measure --pipelines"),
    (["--train", "--runtimes", "onnxruntime"], "--runtimes does not apply"),
    (["--train", "--models"], "give --train --models NAME"),
    (["--pytorch", "python"], "--pytorch compares training steps: give it with --train"),
    (["--train", "--pytorch", "/missing/python"], "--pytorch /missing/python: no such"),
])
def test_bad_train_arguments_give_one_line(argv, message, capsys):
    assert run_cli(bench.main, argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and error.count("\n") == 1


@pytest.mark.parametrize("flags, lanes", [
    ("fpu sse2 avx avx2 fma avx512f avx512bw", 16), ("fpu sse2 avx avx2 fma", 8),
    ("fpu sse2", 4)])
def test_cpu_ceiling_is_cores_clock_lanes_and_two_fmas(flags, lanes, tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Xeon(R) Gold @ 3.00GHz\n"
                       f"cpu MHz\t\t: 1200.000\nflags\t\t: {flags}\n\n"
                       f"processor\t: 1\nmodel name\t: other\n")
    monkeypatch.setenv("TFSEG_CPUINFO", str(cpuinfo))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    found = ceiling.cpu_ceiling()
    # The model name's nominal clock over the current one; no lscpu or sysfs when posing.
    assert (found["cores"], found["clock_ghz"], found["lanes"]) == (4, 3.0, lanes)
    assert found["gflop_per_s"] == pytest.approx(4 * 3.0 * lanes * 2 * 2)
    assert found["clock_source"] == f"the model name in {cpuinfo}"
    assert found["formula"] == f"4 cores x 3.00 GHz x {lanes} FP32 lanes x 2 FMA x 2"


def test_cpu_ceiling_of_the_avx2_zen3(monkeypatch):
    monkeypatch.setenv("TFSEG_CPUINFO", str(CPUINFO / "zen3.txt"))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    found = ceiling.cpu_ceiling()
    assert (found["cpu"], found["flags"], found["lanes"]) == ("AMD EPYC 7B13",
                                                             ["avx2", "fma"], 8)
    assert found["gflop_per_s"] == pytest.approx(2 * 2.449998 * 8 * 4)
    assert found["clock_source"].startswith("cpu MHz in ")


def test_cpu_ceiling_without_a_clock_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("TFSEG_CPUINFO", str(tmp_path / "missing"))
    found = ceiling.cpu_ceiling()
    assert found["gflop_per_s"] == 0 and found["clock_source"].startswith("unknown: no clock")


def test_ratio_line_divides_images_per_second():
    assert ratio_line(ROW) == (
        "default (linknet, 8x128x128x1, float32): tfseg 40.00 img/s / PyTorch 25.00 img/s = "
        "**1.60x** (PyTorch 320.0 ms/step, 2,885,602 parameters; tfseg 200.0 ms/step, "
        "2,885,602)")
    failed = {**ROW, "jit_compile": True,
              "pytorch": {"status": "failed", "reason": "exit status 1: no torch"}}
    assert ratio_line(failed) == ("default (linknet, 8x128x128x1, float32, XLA): PyTorch "
                                  "failed: exit status 1: no torch")
    assert ratio_line({**ROW, "pytorch": None}) is None
    assert ratio_line({**ROW, "status": "failed"}) is None


def test_train_report_has_the_table_and_the_ratios():
    failed = {"recipe": "icnet_interferogram", "dtype": "bfloat16", "jit_compile": False,
              "status": "failed", "reason": "exit status 1: out of memory"}
    report = {"schema": SCHEMA, "mode": "train", "command": "c", "date": "today",
              "repeats": 5, "warmup": 2, "batch": None, "rows": [ROW, failed],
              "pipelines": [],
              "machine": {"cpu": "AMD EPYC 7B13", "cpu_features": ["avx2", "fma"], "cores": 2,
                          "precision": {"policy": "float32", "reason": "auto: why"},
                          "ceilings": CEILINGS,
                          "anchors": {"conv_gflop_per_s": 105.0, "matmul_gflop_per_s": 200.0,
                                      "resnet50_ms": 230.0}},
              "versions": dict.fromkeys(("tensorflow", "keras", "onnxruntime", "opencv",
                                         "tfseg"), "1")}
    markdown = render_markdown(report)
    assert "Machine: AMD EPYC 7B13, 2 cores, CPU flags avx2 fma;" in markdown
    assert ("CPU **400 GFLOP/s** = 2 cores x 3.12 GHz x 8 FP32 lanes x 2 FMA x 2 (clock from "
            "cpuinfo); measured 4096^3 matmul **200 GFLOP/s**") in markdown
    assert "median and p90 of 5 steps after 2 warm-up steps" in markdown
    assert "multiply-adds x 3 (the usual estimate" in markdown
    assert ("| default | linknet | 8x128x128x1 | float32 | 200.0 | 210.0 | 40.00 | 20.00 | "
            "100 | 25 % | 50 % | 900 | ok |") in markdown
    assert ("| icnet_interferogram |  |  | bfloat16" + " | " * 9
            + "failed: exit status 1: out of memory |") in markdown
    assert f"- {ratio_line(ROW)}" in markdown


def test_pytorch_arguments_match_the_row():
    assert pytorch_arguments(ROW) == [
        "--train", "--model", "linknet", "--size", "128x128", "--channels", "1", "--classes",
        "2", "--width", "0.5", "--batch", "8"]
    assert pytorch_arguments({**ROW, "model": "icnet"}) is None


@pytest.mark.slow
def test_one_tiny_train_row_end_to_end(tmp_path):
    process = run_module("tfseg.bench", "--train", "--models", "sr_johnson", "--size", "8x8",
                         "--batch", "1", "--repeats", "2", "--warmup", "1", "--dtypes",
                         "float32", "--json", tmp_path / "train.json")
    assert process.returncode == 0, process.stderr[-2000:]
    report = json.loads((tmp_path / "train.json").read_text())
    assert report["mode"] == "train" and report["pipelines"] == []
    [row] = report["rows"]
    assert row["status"] == "ok", row
    assert (row["recipe"], row["model"], row["batch"], row["input"], row["policy"]) == (
        "sr_johnson_x4", "sr_johnson", 1, "8x8x3", "float32")
    assert row["key"] == "train sr_johnson_x4 float32 8x8 batch 1"
    assert row["cpu"] == "AMD EPYC 7B13, 2 cores (avx2 fma)"   # conftest's Zen 3
    assert 0 < row["min_ms"] <= row["median_ms"] <= row["p90_ms"] <= row["max_ms"]
    assert row["images_per_s"] == pytest.approx(1e3 / row["median_ms"])
    assert row["gflop_per_s"] == pytest.approx(row["gflops_per_step"] * 1e3 / row["median_ms"])
    ceilings = report["machine"]["ceilings"]
    assert row["matmul_fraction"] == pytest.approx(
        row["gflop_per_s"] / ceilings["matmul_gflop_per_s"])
    assert row["gflops_per_step"] > 0 and row["peak_rss_mib"] > 0
    assert "| sr_johnson_x4 | sr_johnson | 1x8x8x3 | float32 |" in process.stdout
    assert "tfseg / PyTorch" not in process.stdout


@pytest.mark.slow
def test_a_recurrent_recipe_trains_on_clips_and_counts_every_frame():
    from tfseg.benchmarking.training import measure_train_row

    from tfseg.config import load_config
    from tfseg.config.recipes import recipe_path

    frames = load_config(recipe_path("icnet_temporal_interferogram")).data.clips.length
    row = measure_train_row("icnet_temporal_interferogram", "float32", False, (64, 64),
                            batch=1, warmup=1, repeats=1)
    # One clip (warm-up frames included): images/s count all its frames, as training does.
    assert (row["model"], row["batch"], row["input"]) == ("icnet_temporal", 1,
                                                          f"{frames}x64x64x1")
    assert row["images_per_s"] == pytest.approx(frames * 1e3 / row["median_ms"])
    assert row["gflops_per_step"] > 0


@pytest.mark.slow
@needs_torch
def test_pytorch_training_mode_times_the_same_network():
    from tfseg import models

    args = types.SimpleNamespace(warmup=1, repeats=2, timeout=300)
    # Batch 2: PyTorch's batch norm refuses one value per channel (1x1 at stride 32).
    row = {**ROW, "batch": 2, "input": "32x32x1"}
    result = runner.run_pytorch(TORCH_PYTHON, row, args)
    assert result["status"] == "ok", result
    assert (result["model"], result["batch"], result["input"]) == ("linknet", 2, "32x32x1")
    assert 0 < result["median_ms"] <= result["p90_ms"]
    assert result["images_per_s"] == pytest.approx(2e3 / result["median_ms"])
    tfseg_model = models.build("linknet", input_shape=(32, 32), input_channels=1,
                               num_classes=2, width=0.5)
    # The same network: as many trainable parameters (batch norm's statistics aside).
    assert result["parameters"] == sum(math.prod(w.shape) for w in tfseg_model.trainable_weights)
    assert runner.PYTORCH_SCRIPT == Path(__file__).resolve().parents[1] / "benchmarks" / \
        "pytorch_reference.py"


@pytest.mark.slow   # builds and profiles a tiny step: about 15 s
def test_step_profile_times_the_parts_and_sums_the_profile_by_op_type(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "step_profile.py"), "--set",
         "data.height=32", "--set", "data.width=32", "--repeats", "2", "--warmup", "1",
         "--profile", str(tmp_path)], capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    times = {line.split("  ")[1].strip(): float(line.split()[-2]) for line in lines
             if line.startswith("  ") and line.endswith(" ms") and "%" not in line}
    assert list(times) == ["inference", "forward (training)", "forward + backward",
                           "whole step"]
    assert all(value > 0 for value in times.values())
    assert times["whole step"] > times["inference"]
    shares = [float(line.split()[-2]) for line in lines if line.endswith(" %")]
    assert len(shares) >= 5 and 50 < sum(shares) <= 100.1
    assert any("Conv2DBackpropFilter" in line for line in lines)

