"""Bad and hostile input to `export`, `evaluate`, `predict` and tools/opencv_segment.py, as a
table (issue 19, parts 2, 3, 5 and 6): every row gives the exit status and the one-line message,
and the files that were good before (a run's export, an export and its frames) are unchanged.
Refusals of arguments come before TensorFlow loads; a killed export leaves the previous one
and no converter or temporary behind."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import yaml
from conftest import REPO, TINY_CONFIG, run_module, write_plain_onnx
from test_opencv_segment import load_tool
from test_predict import make_segmentation_export

from tfseg import evaluate, export, predict
from tfseg.cli import run_cli
from tfseg.utils.errors import TfsegError
from tfseg.utils.files import replacing_folder


def snapshot(*folders):
    """{path: sha256} of every file under `folders`."""
    return {path: hashlib.sha256(path.read_bytes()).hexdigest() for folder in folders
            for path in sorted(folder.rglob("*")) if path.is_file()}


def forge(source, target, **changes):
    """A copy of the ONNX export `source` at `target` with its metadata_props changed
    (None drops a key; "preprocessing" is a dict merged into the stored one)."""
    proto = onnx.load(str(source))
    properties = {p.key: p.value for p in proto.metadata_props}
    for key, value in changes.items():
        if key == "preprocessing" and value is not None:
            value = json.dumps({**json.loads(properties[key]), **value})
        if value is None:
            properties.pop(key)
        else:
            properties[key] = value
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, properties)
    onnx.save(proto, str(target))
    return target


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A run folder (config.yaml, a previous export) that refusals must leave alone, a real
    segmentation export with its frames, forged copies of it and a file in the way."""
    root = tmp_path_factory.mktemp("fuzz")
    run = root / "run"
    (run / "export").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    (run / "export" / "model.onnx").write_bytes(b"the previous export")
    (run / "export" / "parity.json").write_text('{"passed": true}\n')
    good = make_segmentation_export(tmp_path_factory.getbasetemp() / "segmentation_export")
    forged = root / "forged"
    forged.mkdir()
    plain = write_plain_onnx(forged / "plain.onnx")
    impostor = onnx.load(str(plain))   # an identity graph carrying a real export's metadata
    onnx.helper.set_model_props(impostor, {p.key: p.value for p in
                                           onnx.load(str(good.onnx)).metadata_props})
    onnx.save(impostor, str(forged / "impostor.onnx"))
    (forged / "random.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    (forged / "truncated.onnx").write_bytes(good.onnx.read_bytes()[:200])
    (root / "a_file").write_text("not a folder")
    return SimpleNamespace(root=root, run=run, good=good, forged=forged,
                           frames=sorted(good.folder.iterdir()), file=root / "a_file",
                           missing=root / "missing")


def forged(env, name, **changes):
    return forge(env.good.onnx, env.forged / f"{name}.onnx", **changes)


# (id, command, argv(env), message fragments). Every row exits 2 with one line.
COMMAND_CASES = [
    ("export-no-folder", export, lambda e: ["--run-dir", e.missing],
     ["missing: not a tfseg run (no config.yaml)"]),
    ("export-a-file", export, lambda e: ["--run-dir", e.file], ["a_file: not a tfseg run"]),
    ("export-no-config", export, lambda e: ["--run-dir", e.run / "export"],
     ["export: not a tfseg run (no config.yaml)"]),
    ("export-opset-99", export, lambda e: ["--run-dir", e.run, "--opset", "99"],
     ["--opset 99: expected 13..18 (the opsets tf2onnx converts)"]),
    ("export-opset-12", export, lambda e: ["--run-dir", e.run, "--opset", "12"],
     ["--opset 12: expected 13..18"]),
    ("export-opset-negative", export, lambda e: ["--run-dir", e.run, "--opset", "-1"],
     ["--opset -1: expected 13..18"]),
    ("export-huge-size", export, lambda e: ["--run-dir", e.run, "--size", "90000x90000"],
     ["--size 90000x90000: a network at this size needs about", "GB of memory is available"]),
    ("evaluate-no-folder", evaluate, lambda e: ["--run-dir", e.missing],
     ["missing: not a tfseg run (no config.yaml)"]),
    ("evaluate-a-file", evaluate, lambda e: ["--run-dir", e.file],
     ["a_file: not a tfseg run"]),
    ("evaluate-no-model", evaluate, lambda e: ["--model", e.missing / "m.onnx", "--config",
                                               e.run / "config.yaml"],
     ["m.onnx: no such model file or SavedModel folder"]),
    ("evaluate-no-config", evaluate, lambda e: ["--model", e.good.onnx, "--config",
                                                e.missing / "c.yaml"],
     ["c.yaml: no such config file"]),
    ("evaluate-run-and-no-model", evaluate, lambda e: ["--run-dir", e.run, "--model",
                                                       e.missing / "m.onnx"],
     ["m.onnx: no such model file"]),
    ("evaluate-negative-samples", evaluate, lambda e: ["--run-dir", e.run, "--samples", "-3"],
     ["--samples -3: expected at least 0"]),
    ("evaluate-output-a-file", evaluate, lambda e: ["--run-dir", e.run, "--output", e.file],
     ["cannot write the evaluation files there", "a_file is not a folder"]),
    ("evaluate-output-under-a-file", evaluate,
     lambda e: ["--run-dir", e.run, "--output", e.file / "sub"],
     ["a_file/sub: cannot write the evaluation files there"]),
    ("predict-no-model", predict, lambda e: ["--model", e.missing / "m.onnx", "--input",
                                             e.good.folder, "--output", e.root / "out"],
     ["m.onnx: no such exported model"]),
    ("predict-output-a-file", predict, lambda e: ["--model", e.good.onnx, "--input",
                                                  e.good.folder, "--output", e.file],
     ["a_file: cannot write the predictions there"]),
    ("predict-random-bytes", predict, lambda e: ["--model", e.forged / "random.onnx",
                                                 "--input", e.good.folder, "--output",
                                                 e.root / "out"],
     ["random.onnx: not an ONNX model"]),
    ("predict-truncated", predict, lambda e: ["--model", e.forged / "truncated.onnx",
                                              "--input", e.good.folder, "--output",
                                              e.root / "out"],
     ["truncated.onnx: not an ONNX model"]),
    ("predict-sample-area", predict, lambda e: ["--model", e.good.onnx, "--input",
                                                e.good.folder, "--output", e.root / "out",
                                                "--boxes", "--min-sample-area", "1.5"],
     ["--min-sample-area 1.5: expected 0..1"]),
    ("predict-transposed-views-oblong", predict,
     lambda e: ["--model", e.good.onnx, "--input", e.good.folder, "--output", e.root / "out",
                "--test-time", "flips_and_transpose"],
     ["test-time views 'flips_and_transpose' need a square model input", "model.onnx takes "
      "32x48: use 'flips'"]),
    ("predict-impostor", predict, lambda e: ["--model", e.forged / "impostor.onnx",
                                             "--input", e.good.folder, "--output",
                                             e.root / "out"],
     ["impostor.onnx: the graph takes input [1, 1, 4, 4], its tfseg metadata describes "
      "[1, 1, 32, 48]"]),
]

# (id, metadata changes, message fragments) of a forged copy of the real export in predict.
FORGED_CASES = [
    ("short-colours", {"class_colours": "[[0, 0, 0]]"},
     ["tfseg metadata class_colours=[[0, 0, 0]]; expected one RGB triple of 0..255 per class"]),
    ("colour-pairs", {"class_colours": "[[0, 0], [1, 1]]"}, ["class_colours=[[0, 0], [1, 1]]"]),
    ("colour-over-255", {"class_colours": "[[0, 0, 0], [0, 0, 999]]"}, ["class_colours="]),
    ("colours-not-json", {"class_colours": "[[0, 0,"}, ["malformed tfseg metadata"]),
    ("one-class-name", {"class_names": '["a"]'}, ["class_colours=", "per class name"]),
    ("input-size-text", {"input_size": "axb"}, ["malformed tfseg metadata"]),
    ("input-size-huge", {"input_size": "100000x100000"},
     ["tfseg metadata input_size 100000x100000: a network at this size needs about"]),
    ("resize-to-huge", {"preprocessing": {"resize_to": [60000, 60000]}},
     ["tfseg metadata preprocessing.resize_to 60000x60000: a network at this size needs"]),
    ("layout-nhwc", {"layout": "NHWC"},
     ["the graph takes input [1, 1, 32, 48], its tfseg metadata describes [1, 32, 48, 1]"]),
    ("layout-other", {"layout": "CHW"}, ["tfseg metadata layout='CHW'; expected 'NCHW'"]),
    ("three-channels", {"input_channels": "3"},
     ["its tfseg metadata describes [1, 3, 32, 48]"]),
    ("channels-zero", {"input_channels": "0"}, ["input_channels=0; expected 1 or 3"]),
    ("task-unknown", {"task": "regression"}, ["task='regression'; expected 'segmentation'"]),
    ("no-colours", {"class_colours": None}, ["tfseg metadata without class_colours"]),
    ("sample-area-over-1", {"min_sample_area": "2"},
     ["tfseg metadata min_sample_area=2; expected a fraction of the frame, 0..1"]),
    ("sample-area-text", {"min_sample_area": '"tiny"'}, ["min_sample_area='tiny'"]),
    ("test-time-unknown", {"test_time": "rotations"},
     ["tfseg metadata test_time='rotations'; expected 'none' or 'flips' or "
      "'flips_and_transpose'"]),
    ("test-time-oblong", {"test_time": "flips_and_transpose"},
     ["tfseg metadata test_time='flips_and_transpose'; expected 'none' or 'flips' for "
      "input_size 32x48"]),
]

# (id, model(env) or metadata changes, frames(env) or None, output(env) or None, fragments).
TOOL_CASES = [
    ("missing-model", lambda e: e.missing / "m.onnx", None, None,
     ["m.onnx: not a readable ONNX file (No such file or directory)"]),
    ("random-bytes", lambda e: e.forged / "random.onnx", None, None,
     ["random.onnx: not a"]),
    ("truncated", lambda e: e.forged / "truncated.onnx", None, None,
     ["truncated.onnx: not a"]),
    ("impostor", lambda e: e.forged / "impostor.onnx", None, None,
     ["impostor.onnx: the network outputs shape (1, 1, 32, 48), its metadata describes "
      "(1, 2, 32, 48)"]),
    ("colours-not-json", {"class_colours": "[[0,"}, None, None,
     ["malformed tfseg metadata (JSONDecodeError"]),
    ("colour-pairs", {"class_colours": "[[0, 0]]"}, None, None,
     ["class_colours=[[0, 0]]; expected one RGB triple"]),
    ("resize-to-huge", {"preprocessing": {"resize_to": [60000, 60000]}}, None, None,
     ["input_size '32x48' and preprocessing resize_to [60000, 60000] disagree"]),
    ("clahe-grid-zero", {"preprocessing": {"clahe_tile_grid": 0}}, None, None,
     ["preprocessing clahe_tile_grid=0; expected an integer >= 1"]),
    ("crop-of-two", {"preprocessing": {"crop": [1, 2]}}, None, None,
     ["preprocessing crop=[1, 2]; expected [] or [x, y, w, h]"]),
    ("preprocessing-not-json", {"preprocessing": None}, None, None,
     ["malformed tfseg metadata (KeyError"]),
    ("test-time-unknown", {"test_time": "rotations"}, None, None,
     ["tfseg metadata test_time='rotations'; expected 'none' (recurrent exports), 'flips'"]),
    ("test-time-oblong", {"test_time": "flips_and_transpose"}, None, None,
     ["tfseg metadata test_time='flips_and_transpose'", "(square inputs)"]),
    ("output-a-file", lambda e: e.good.onnx, None, lambda e: e.file,
     ["a_file: cannot write there"]),
    ("output-under-a-file", lambda e: e.good.onnx, None, lambda e: e.file / "sub",
     ["a_file/sub: cannot write there"]),
]


def assert_unchanged(env, before):
    assert snapshot(env.run, env.good.folder.parent) == before


@pytest.mark.parametrize("case", COMMAND_CASES, ids=[case[0] for case in COMMAND_CASES])
def test_commands_refuse_in_one_line(case, env, capsys):
    _, command, argv, fragments = case
    before = snapshot(env.run, env.good.folder.parent)
    status = run_cli(command.main, [str(arg) for arg in argv(env)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    for fragment in fragments:
        assert fragment in lines[0]
    assert_unchanged(env, before)
    assert not (env.root / "out").exists()


@pytest.mark.parametrize("case", FORGED_CASES, ids=[case[0] for case in FORGED_CASES])
def test_predict_refuses_forged_metadata_in_one_line(case, env, capsys):
    name, changes, fragments = case
    model = forged(env, name, **changes)
    before = snapshot(env.run, env.good.folder.parent)
    status = run_cli(predict.main, ["--model", str(model), "--input", str(env.good.folder),
                                    "--output", str(env.root / "out")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith(f"error: {model}: "), lines
    for fragment in fragments:
        assert fragment in lines[0]
    assert_unchanged(env, before)
    assert not (env.root / "out").exists()


@pytest.mark.parametrize("case", TOOL_CASES, ids=[case[0] for case in TOOL_CASES])
def test_opencv_tool_refuses_in_one_line(case, env, monkeypatch, tmp_path):
    name, model, frames, output, fragments = case
    model = forged(env, f"tool-{name}", **model) if isinstance(model, dict) else model(env)
    output = output(env) if output else tmp_path / "out"
    before = snapshot(env.run, env.good.folder.parent)
    monkeypatch.setattr(sys, "argv", ["opencv_segment.py", str(model),
                                      *map(str, frames(env) if frames else env.frames),
                                      "--output", str(output)])
    with pytest.raises(SystemExit) as exit_:
        load_tool().main()
    message = str(exit_.value.code)     # Python prints it to stderr and exits 1
    assert message.startswith("error: ") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message
    assert_unchanged(env, before)
    assert not list(tmp_path.rglob("*.png"))


def test_refusals_come_before_tensorflow_in_a_fresh_process(env):
    """Each refusal in a fresh interpreter: exit 2 within a second, TensorFlow never
    imported (and the commands' modules themselves do not load it)."""
    rows = [(case[0], case[1].__name__, [str(arg) for arg in case[2](env)])
            for case in COMMAND_CASES if case[1] is not predict or "no-model" in case[0]
            or "output" in case[0]]
    script = """
import json, sys, time
from importlib import import_module
from tfseg.cli import run_cli
results = {}
for name, module, argv in json.loads(sys.argv[1]):
    started = time.perf_counter()
    status = run_cli(import_module(module).main, argv)
    results[name] = [status, time.perf_counter() - started, "tensorflow" in sys.modules]
print(json.dumps(results))
"""
    result = subprocess.run([sys.executable, "-c", script, json.dumps(rows)], cwd=REPO,
                            capture_output=True, text=True, timeout=120, check=True)
    results = json.loads(result.stdout)
    assert len(results) == len(rows) >= 17
    for name, (status, seconds, tensorflow) in results.items():
        assert status == 2 and seconds < 1.0 and not tensorflow, (name, seconds, tensorflow)


def test_a_bug_shows_its_traceback_and_says_it_is_a_bug(capsys):
    def broken(argv):
        return {}["missing"]

    assert run_cli(broken) == 1
    error = capsys.readouterr().err
    assert "Traceback" in error and "KeyError: 'missing'" in error
    assert error.strip().splitlines()[-1].startswith("error: this is a bug in tfseg ")
    assert run_cli(lambda argv: (_ for _ in ()).throw(TfsegError("plain"))) == 2


def test_a_failed_replacement_leaves_the_folder_and_no_temporaries(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "model.onnx").write_text("old")
    with pytest.raises(TfsegError, match="conversion failed"):
        with replacing_folder(folder) as build:
            (build / "model.onnx").write_text("half")
            raise TfsegError("conversion failed")
    assert snapshot(folder) == {folder / "model.onnx": hashlib.sha256(b"old").hexdigest()}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export"]
    with replacing_folder(folder) as build:
        (build / "model.onnx").write_text("new")
    assert (folder / "model.onnx").read_text() == "new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export"]


def test_temporaries_of_a_killed_replacement_are_cleaned_and_a_half_swap_undone(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    folder = tmp_path / "export"
    for name in (f".export.partial-{dead.pid}", f".export.old-{dead.pid}"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.onnx").write_text(name)
    (tmp_path / f".export.partial-{os.getpid()}-not-ours").mkdir()   # not a pid: kept
    with pytest.raises(TfsegError):
        with replacing_folder(folder):
            raise TfsegError("fails at once")
    # Killed between the two renames: the previous export is put back.
    assert (folder / "model.onnx").read_text() == f".export.old-{dead.pid}"
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        f".export.partial-{os.getpid()}-not-ours", "export"]


def converter_of(pid):
    """pids of `pid`'s children running the ONNX converter."""
    children = []
    for entry in os.listdir("/proc"):
        try:
            status = open(f"/proc/{entry}/status").read()
            command = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ")
        except OSError:
            continue
        if f"\nPPid:\t{pid}\n" in status and b"tfseg.deploy.onnx_conversion" in command:
            children.append(int(entry))
    return children


def gone(pid):
    try:
        return open(f"/proc/{pid}/status").read().split("State:\t")[1].startswith("Z")
    except (OSError, IndexError):
        return True


def test_a_child_dies_with_its_killed_parent(tmp_path):
    """run_child's child (here a silent sleeper, as the converter is for minutes) ends when
    its parent is SIGKILLed, instead of running on orphaned."""
    (tmp_path / "sleeper.py").write_text(
        "import os, pathlib, sys, time\n"
        "pathlib.Path(sys.argv[1]).write_text(str(os.getpid()))\n"
        "time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", (
        "import sys\n"
        "from tfseg.utils.processes import run_child\n"
        "run_child('sleeper', sys.argv[2], what='sleep', timeout=300,\n"
        "          environment={'PYTHONPATH': sys.argv[1]})\n"), str(tmp_path),
        str(tmp_path / "pid")])
    deadline = time.monotonic() + 60
    while not (tmp_path / "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int((tmp_path / "pid").read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while not gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(child), "the child outlived its killed parent"


@pytest.fixture
def run_copy(tmp_path_factory, tmp_path):
    """A copy of the shared tiny trained run (from tests/test_export.py) with its export."""
    from test_export import copy_of_run, trained_run_dir

    return copy_of_run(trained_run_dir(tmp_path_factory), tmp_path / "run")


def parity_summary(export_dir):
    report = json.loads((export_dir / "parity.json").read_text())
    return report["passed"], sorted(report["runtimes"]), report["samples"]


@pytest.mark.slow
def test_sigkill_during_conversion_keeps_the_previous_export(run_copy):
    before, parity = snapshot(run_copy / "export"), parity_summary(run_copy / "export")
    process = subprocess.Popen([sys.executable, "-m", "tfseg.export", "--run-dir",
                                str(run_copy)], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline, converters = time.monotonic() + 300, []
    while not converters and process.poll() is None and time.monotonic() < deadline:
        converters = converter_of(process.pid)
        time.sleep(0.05)
    assert converters, "the export never started its converter"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while not all(map(gone, converters)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(map(gone, converters)), "the converter outlived the killed export"
    assert snapshot(run_copy / "export") == before
    assert [path.name for path in run_copy.iterdir() if path.name.startswith(".export")]
    # The next export cleans the killed one's temporaries and reaches the same export.
    result = run_module("tfseg.export", "--run-dir", run_copy)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(path.name for path in run_copy.iterdir()) == [
        "checkpoints", "config.yaml", "export"]
    assert sorted(path.relative_to(run_copy) for path in snapshot(run_copy / "export")) == (
        sorted(path.relative_to(run_copy) for path in before))
    assert parity_summary(run_copy / "export") == parity and parity[0]


@pytest.mark.slow
def test_a_failing_conversion_leaves_the_previous_export(run_copy, monkeypatch, capsys):
    from tfseg.deploy import exports

    before = snapshot(run_copy / "export")

    def failing(*args, **kwargs):
        raise TfsegError("model.onnx: ONNX conversion failed: forced")

    monkeypatch.setattr(exports, "export_onnx", failing)
    assert run_cli(export.main, ["--run-dir", str(run_copy)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: model.onnx: ONNX conversion failed: forced"]
    assert snapshot(run_copy / "export") == before
    assert sorted(path.name for path in run_copy.iterdir()) == [
        "checkpoints", "config.yaml", "export"]
