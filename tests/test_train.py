"""End to end: `python -m tfseg.train` on a tiny config produces every run-directory artifact,
real TensorBoard content, restorable checkpoints and exports that agree with Keras."""

import json
import os
import re
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import onnx
import pytest
import tensorflow as tf
from conftest import REPO, TINY_CONFIG, assert_parity_results, run_module, write_hr_images

from tfseg.config import Config, from_dict, load_config
from tfseg.deploy.evaluation import evaluate_to_folder
from tfseg.deploy.runtimes import RUNTIMES
from tfseg.tasks.panels import palette as segmentation_palette
from tfseg.training.loop import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny training run through the CLI, shared by the tests of this module."""
    import yaml
    tmp = tmp_path_factory.mktemp("train")
    config_path = tmp / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(TINY_CONFIG))
    run_dir = tmp / "run"
    result = run_module("tfseg.train", "--config", config_path, "--run-dir", run_dir,
                        "--set", "train.seed=3", "--profile")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def event_values(log_dir):
    """{tag: [(step, value or images)]} from the TensorBoard event files of `log_dir`."""
    values = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                values.setdefault(value.tag, []).append(
                    (event.step, tf.make_ndarray(value.tensor)))
    return values


def test_run_directory_holds_every_artifact(run):
    run_dir, _ = run
    for relative in ["config.yaml", "metrics.json", "checkpoints/checkpoint", "logs/train",
                     "logs/validation", "export/saved_model/saved_model.pb",
                     "export/model.onnx", "export/parity.json"]:
        assert (run_dir / relative).exists(), relative
    assert not list(run_dir.rglob("*.partial"))


def test_profile_records_a_trace_for_the_profile_tab(run):
    run_dir, result = run
    assert list((run_dir / "logs" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert "profiler trace of steps 2-4" in result.stdout


def test_super_resolution_run_scores_against_bicubic_and_logs_panels(tmp_path):
    """In-process: a tiny SR run, its panels, its export, and `tfseg.evaluate` giving every
    score of the run's last validation, then the 8x8 ONNX tile by tile."""
    write_hr_images(tmp_path / "train", 2, (40, 48))
    write_hr_images(tmp_path / "validation", 2, (40, 48), seed=1)
    config = {"model": {"name": "sr_johnson", "scale": 4, "input_channels": 3},
              "data": {"source": "super_resolution", "height": 8, "width": 8,
                       "mean": [127.5] * 3, "std": [127.5] * 3,
                       "super_resolution": {"train": [str(tmp_path / "train")],
                                            "validation": [str(tmp_path / "validation")],
                                            "patch_size": 32}},
              "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "loss": "pixel",
                        "log_images": 2},
              "export": {"parity_samples": 2, "parity_runtimes": ["onnxruntime"]}}
    train(from_dict(Config, config, source="test"), tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["images"] == 2 and metrics["best"]["metric"] == "psnr_y"
    assert 15 < metrics["bicubic_psnr_y"] < 60 and 0 < metrics["ssim_y"] <= 1
    assert metrics["psnr_y"] < metrics["bicubic_psnr_y"]   # two steps do not beat bicubic
    assert [row["image"] for row in metrics["per_image"]] == [1, 2]
    validation = event_values(tmp_path / "run" / "logs" / "validation")
    _, encoded = validation["LR | bicubic | SR | HR"][-1]
    # Both 40x48 HR images, 4 views wide.
    assert (int(encoded[0]), int(encoded[1]), len(encoded) - 2) == (4 * 48, 40, 2)
    parity = json.loads((tmp_path / "run" / "export" / "parity.json").read_text())
    assert parity["passed"]
    # The ONNX at the training (LR) size is model.onnx, as for segmentation models.
    assert (tmp_path / "run" / "export" / "model.onnx").is_file()

    # tfseg.evaluate scores the checkpoint as validation did, and the 8x8 ONNX tile by tile.
    evaluate_to_folder(run_dir=tmp_path / "run", output=tmp_path / "keras", samples=2)
    report = json.loads((tmp_path / "keras" / "evaluation.json").read_text())
    scores = {"loss", "images", "psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y",
              "per_image"}
    assert scores == set(report) - {"model", "runtime", "runtime_version", "split", "notes"}
    for key in scores:
        assert report[key] == metrics[key], key
    strips = cv2.imread(str(tmp_path / "keras" / "samples.png"))
    assert strips.shape == (2 * 40, 4 * 48, 3)   # two images, LR | bicubic | SR | HR
    evaluate_to_folder(run_dir=tmp_path / "run", runtime_name="onnxruntime",
                       output=tmp_path / "onnx")
    tiled = json.loads((tmp_path / "onnx" / "evaluation.json").read_text())
    assert tiled["notes"] == ["the model takes 8x8 LR tiles: whole images run tile by tile "
                              "(quarter-tile overlap)"]
    assert tiled["bicubic_psnr_y"] == report["bicubic_psnr_y"]
    assert abs(tiled["psnr_y"] - report["psnr_y"]) < 1.0


def test_resolved_config_includes_overrides(run):
    run_dir, _ = run
    config = load_config(run_dir / "config.yaml")
    assert config.train.seed == 3 and config.data.height == 64


def test_metrics_file_names_its_figures(run):
    run_dir, _ = run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["split"] == "validation" and metrics["frames"] == 4
    for key in ("foreground_iou", "mean_iou", "pixel_accuracy", "loss"):
        assert 0.0 <= metrics[key] <= (1.0 if key != "loss" else 100.0), key
    assert set(metrics["per_class_iou"]) == {"background", "sample"}
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["steps"] == 4


def test_first_line_and_metrics_say_which_precision_and_why(run):
    run_dir, result = run   # on conftest's Zen 3: no native bfloat16
    reason = "auto: this CPU, AMD EPYC 7B13, has no native bfloat16: no avx512_bf16/amx_bf16 flag"
    assert result.stdout.splitlines()[0] == f"tfseg: precision float32 ({reason})"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["precision"] == {"policy": "float32", "reason": reason}
    assert [row["precision"] for row in metrics["history"]] == ["float32", "float32"]
    assert load_config(run_dir / "config.yaml").train.mixed_precision == "auto"


def test_training_prints_no_tensorflow_notice(tmp_path, write_yaml):
    """A cache() read partly and then released (the first validation frames, for the panels)
    made tf.data warn on every default run (8 validation batches: more than a prefetch reads
    ahead), XLA announced itself when the optimizer update first compiled, and importing
    TensorFlow printed its CPU-only start-up notices (tfseg.utils.startup); an int8 export
    of the run neither. Run with
    TensorFlow's own log level left to tfseg (conftest keeps only errors)."""
    config = write_yaml({**TINY_CONFIG, "data": {**TINY_CONFIG["data"], "val_sequences": 4},
                         "train": {**TINY_CONFIG["train"], "epochs": 1},
                         "export": {"saved_model": False, "onnx": False}})
    environment = {key: value for key, value in os.environ.items()
                   if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-m", "tfseg.train", "--config", str(config),
                             "--run-dir", str(tmp_path / "run")], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=600, env={**environment, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.stdout.startswith("tfseg: precision"), result.stdout[:2000]
    # An int8 export of the run: its parity frames read the validation data in part, and
    # onnxruntime's quantizer advised its own pre-processing on every call.
    exported = subprocess.run([sys.executable, "-m", "tfseg.export", "--run-dir",
                               str(tmp_path / "run"), "--precision", "int8"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=600, env={**environment, "PYTHONUNBUFFERED": "1"})
    assert exported.returncode == 0, exported.stdout[-3000:]
    for output in (result.stdout, exported.stdout):
        notices = [line for line in output.splitlines()
                   if re.match(r"[IWE]\d{4} |WARNING", line)]
        assert not notices, notices


def test_tensorboard_has_scalars_and_prediction_panels(run):
    run_dir, _ = run
    train = event_values(run_dir / "logs" / "train")
    validation = event_values(run_dir / "logs" / "validation")
    for tag in ("loss", "mean_iou", "foreground_iou", "pixel_accuracy", "learning_rate"):
        assert [step for step, _ in train[tag]] == [2, 4], tag
    for tag in ("loss", "mean_iou", "foreground_iou", "pixel_accuracy"):
        assert [step for step, _ in validation[tag]] == [2, 4], tag
    assert float(train["learning_rate"][1][1]) < float(train["learning_rate"][0][1])
    assert all(float(value) > 0 for _, value in train["images_per_second"])
    for tag in ("iou/background", "iou/sample"):
        assert [step for step, _ in validation[tag]] == [2, 4], tag
    (panel_tag,) = [t for t in validation if "prediction" in t]
    step, encoded = validation[panel_tag][-1]
    # An image summary holds width, height, then one PNG per image.
    width, height, pngs = int(encoded[0]), int(encoded[1]), encoded[2:]
    assert (width, height, len(pngs)) == (3 * 64, 64, 2)
    panel = tf.io.decode_png(pngs[0]).numpy()
    assert panel.shape == (64, 192, 3)
    # Ground truth and prediction thirds are drawn in the class palette only.
    palette = {tuple(c) for c in segmentation_palette(2)}
    for third in (panel[:, 64:128], panel[:, 128:]):
        assert {tuple(p) for p in third.reshape(-1, 3)} <= palette


def test_parity_report_covers_every_runtime(run):
    run_dir, result = run
    report = json.loads((run_dir / "export" / "parity.json").read_text())
    assert_parity_results(report["runtimes"], RUNTIMES[1:])
    assert "tensorboard --logdir" in result.stdout and "parity" in result.stdout


def test_checkpoint_restores_the_exported_weights(run):
    from tfseg.models.from_config import build_model
    run_dir, _ = run
    config = load_config(run_dir / "config.yaml")
    model = build_model(config)
    tf.train.Checkpoint(model=model).restore(
        tf.train.latest_checkpoint(run_dir / "checkpoints")).expect_partial()
    images = np.random.default_rng(0).uniform(0, 50, (2, 64, 64, 1)).astype(np.float32)
    serve = tf.saved_model.load(str(run_dir / "export" / "saved_model"))
    served = serve.signatures["serving_default"](pixels=tf.constant(images))["logits"]
    np.testing.assert_allclose(model(images, training=False).numpy(), served.numpy(),
                               atol=1e-4)


def test_existing_run_directory_is_refused(run):
    run_dir, _ = run
    result = run_module("tfseg.train", "--config", run_dir / "config.yaml",
                        "--run-dir", run_dir)
    assert result.returncode == 2 and "already holds a run" in result.stderr
    assert "Traceback" not in result.stderr


REPLICA_CHECK = """
import json, sys
import keras, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfseg.config import load_config
from tfseg.training.steps import build_training

config = load_config(sys.argv[1])
rng = np.random.default_rng(0)
images = rng.uniform(0, 60, (4, 64, 64, 1)).astype(np.float32)
masks = (rng.random((4, 64, 64)) < 0.2).astype(np.uint8)

def two_steps(strategy):
    keras.utils.set_random_seed(0)
    model, optimizer, train_step = build_training(config, strategy)
    initial = [v.numpy().copy() for v in model.trainable_variables]
    batches = tf.data.Dataset.from_tensors((images, masks)).repeat(2)
    iterator = iter(strategy.experimental_distribute_dataset(batches))
    losses = [float(train_step(iterator)[0]) for _ in range(2)]
    copies_equal = all(
        all(np.array_equal(strategy.experimental_local_results(v.value)[0].numpy(),
                           local.numpy())
            for local in strategy.experimental_local_results(v.value))
        for v in model.variables)
    updates = [v.numpy() - w for v, w in zip(model.trainable_variables, initial)]
    statistics = [v.numpy().copy() for v in model.non_trainable_variables]
    return losses, updates, statistics, copies_equal

def relative(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12))

one_losses, one_updates, one_stats, _ = two_steps(tf.distribute.get_strategy())
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
two_losses, two_updates, two_stats, copies_equal = two_steps(mirrored)
print(json.dumps({
    "replicas": mirrored.num_replicas_in_sync, "one": one_losses, "two": two_losses,
    "copies_equal": copies_equal,
    # One norm over all updates: biases that feed batch norm have zero true gradient, so
    # their individual updates are float noise.
    "update_rel_diff": relative(np.concatenate([u.ravel() for u in one_updates]),
                                np.concatenate([u.ravel() for u in two_updates])),
    "max_statistic_rel_diff": max(relative(a, b) for a, b in zip(one_stats, two_stats))}))
"""


def test_two_replicas_train_like_one_device(tmp_path, write_yaml):
    """Same global batch on 1 device and on 2 mirrored replicas: same losses, same weights,
    and every per-replica copy of every variable (batch-norm statistics included) equal.
    Plain SGD, unlike Adam, would expose a gradient summed or scaled wrongly."""
    config = write_yaml({**TINY_CONFIG,
                         "data": {**TINY_CONFIG["data"], "augment": {"flip": "none"}},
                         "train": {**TINY_CONFIG["train"], "batch_size": 4,
                                   "optimizer": "sgd", "learning_rate": 0.1}})
    result = subprocess.run([sys.executable, "-c", REPLICA_CHECK, str(config)], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2 and report["copies_equal"]
    np.testing.assert_allclose(report["two"], report["one"], rtol=1e-4)
    # Measured when written: 0.047 as is (synchronised batch norm computes variance in one
    # pass); 0.60 with per-replica batch norm and 0.97 with the loss scaled by the per-replica
    # batch, each obtained by breaking the code on purpose.
    assert report["update_rel_diff"] < 0.1, json.dumps(report)
    assert report["max_statistic_rel_diff"] < 1e-2, json.dumps(report)


SKIP_CHECK = """
import json, sys
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfseg.config import load_config
from tfseg.training.steps import build_training

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
model, _, train_step = build_training(load_config(sys.argv[1]), strategy)
rng = np.random.default_rng(0)
images = rng.uniform(0, 60, (4, 64, 64, 1)).astype(np.float32)
masks = (rng.random((4, 64, 64)) < 0.2).astype(np.uint8)

def copies():
    return [[local.numpy().copy() for local in strategy.experimental_local_results(v.value)]
            for v in model.variables]

def step(images):
    batches = tf.data.Dataset.from_tensors((images, masks))
    return bool(train_step(iter(strategy.experimental_distribute_dataset(batches)))[2])

before = copies()
bad = images.copy()
bad[3, 5, 5, 0] = np.nan   # in the second replica's half of the batch
skipped = not step(bad)
unchanged = all(np.array_equal(a, b, equal_nan=True) for old, new in zip(before, copies())
                for a, b in zip(old, new))
trained = step(images)
after = copies()
print(json.dumps({
    "skipped": skipped, "unchanged": unchanged, "trained": trained,
    "changed": sorted({v.name for v, old, new in zip(model.variables, before, after)
                       if not np.array_equal(old[0], new[0])}),
    "copies_equal": all(np.array_equal(local, new[0]) for new in after for local in new)}))
"""


def test_two_replicas_skip_a_non_finite_batch_alike(tmp_path, write_yaml):
    """`nan_policy: skip_batch` on 2 mirrored replicas, a NaN in one replica's half: the
    step traces (a condition inside a replica around the optimizer's all-reduce would not),
    no variable of either replica changes, and the next batch trains both alike."""
    config = write_yaml({**TINY_CONFIG,
                         "train": {**TINY_CONFIG["train"], "batch_size": 4,
                                   "nan_policy": "skip_batch"}})
    result = subprocess.run([sys.executable, "-c", SKIP_CHECK, str(config)], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["skipped"] and report["unchanged"] and report["trained"], report
    assert {"kernel", "gamma", "moving_mean", "moving_variance"} <= set(report["changed"])
    assert report["copies_equal"]

def test_mirrored_strategy_runs_the_cli_end_to_end(tmp_path, write_yaml):
    """`train.strategy: mirrored` is a config change only: the CLI trains on both devices."""
    config = write_yaml({**TINY_CONFIG, "train": {**TINY_CONFIG["train"],
                                                  "strategy": "mirrored", "epochs": 1},
                         "export": {"onnx": False}})
    script = textwrap.dedent(f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tfseg.train import main
        raise SystemExit(main(["--config", {str(config)!r}, "--run-dir",
                               {str(tmp_path / "run")!r}]))
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 2 replica(s)" in result.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and np.isfinite(metrics["loss"])


def test_mixed_bfloat16_run_exports_a_float32_model_that_passes_parity(tmp_path, write_yaml):
    import onnx
    config = write_yaml({**TINY_CONFIG, "train": {**TINY_CONFIG["train"], "epochs": 1,
                                                  "mixed_precision": "mixed_bfloat16"}})
    result = run_module("tfseg.train", "--config", config, "--run-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "export" / "parity.json").read_text())
    assert all(r["passed"] for r in report["runtimes"].values())
    graph = onnx.load(str(tmp_path / "run" / "export" / "model.onnx")).graph
    assert not [n for n in graph.node if n.op_type == "Cast"], "half-precision casts exported"
    # The export holds the trained weights: it matches the bf16 model restored from the
    # checkpoint within bf16 precision, and not a freshly initialised network.
    from tfseg.models.from_config import build_model, dtype_policy
    settings = load_config(tmp_path / "run" / "config.yaml")
    with dtype_policy("mixed_bfloat16"):
        trained = build_model(settings)
    tf.train.Checkpoint(model=trained).restore(
        tf.train.latest_checkpoint(tmp_path / "run" / "checkpoints")).expect_partial()
    fresh = build_model(settings)
    images = np.random.default_rng(0).uniform(0, 60, (2, 64, 64, 1)).astype(np.float32)
    serve = tf.saved_model.load(str(tmp_path / "run" / "export" / "saved_model"))
    exported = serve.signatures["serving_default"](pixels=tf.constant(images))["logits"].numpy()
    restored = tf.cast(trained(images, training=False), tf.float32).numpy()
    untrained = fresh(images, training=False).numpy()
    scale = np.abs(exported).max()
    assert np.abs(restored - exported).max() < 0.05 * scale
    assert np.abs(untrained - exported).max() > 0.2 * scale


def test_training_on_random_crops_validates_and_exports_whole_frames(tmp_path, write_yaml):
    """With augment.crop the network trains at the crop size; validation, checkpoints' final
    weights and the exports work on whole 64x64 frames."""
    config = write_yaml({**TINY_CONFIG, "data": {
        **TINY_CONFIG["data"], "augment": {"crop": [32, 48], "scale": [0.8, 1.25],
                                           "brightness": 10.0, "contrast": 0.2}},
        "export": {**TINY_CONFIG["export"], "parity_runtimes": ["onnxruntime"]}})
    result = run_module("tfseg.train", "--config", config, "--run-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["frames"] == 4
    proto = onnx.load(str(tmp_path / "run" / "export" / "model.onnx"))
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [
        1, 1, 64, 64]


def test_mixed_bfloat16_crop_run_reports_the_scores_evaluate_gives(tmp_path, write_yaml):
    """metrics.json of a mixed_bfloat16 run trained on crops scores the float32 model users
    get: `python -m tfseg.evaluate` on the run gives the same loss and confusion matrix."""
    config = write_yaml({**TINY_CONFIG,
                         "data": {**TINY_CONFIG["data"], "augment": {"crop": [32, 48]}},
                         "train": {**TINY_CONFIG["train"], "epochs": 1,
                                   "mixed_precision": "mixed_bfloat16"},
                         "export": {"onnx": False}})
    result = run_module("tfseg.train", "--config", config, "--run-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    report = evaluate_to_folder(run_dir=tmp_path / "run", output=tmp_path / "evaluation")
    assert report["confusion_matrix"] == metrics["confusion_matrix"]
    # Training validates on the live variables, evaluate on a graph with the weights folded
    # in as constants (tfseg.deploy.runtimes.from_keras): the logits may round differently in
    # their last bit (3e-8 of the loss seen), never enough to move a pixel's class.
    assert report["loss"] == pytest.approx(metrics["loss"], rel=1e-6)
