"""Training and validating a recurrent model (issue 21): the loss of a clip batch is the
per-frame loss of its trained frames, and validation runs each held-out sequence through the
step model in order, from a zero state, scoring every frame as a per-frame model's (a tiny
stand-in step model for the fast tests, icnet_temporal end to end)."""

import copy
import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_CONFIG, assert_same_run

from tfseg.config import (
    AugmentConfig,
    Config,
    DataConfig,
    ModelConfig,
    TrainConfig,
    from_dict,
    load_config,
)
from tfseg.config.schema import ClipConfig
from tfseg.deploy.evaluation import evaluate_to_folder
from tfseg.models.clips import RecurrentParts, build_clip_model, build_step_model
from tfseg.models.recurrent import ConvGRUCell
from tfseg.tasks.factory import make_task
from tfseg.tasks.validation import validate
from tfseg.models import all_layers
from tfseg.models.from_config import build_model, training_input_shape
from tfseg.runs.restore import init_from_run, load_run
from tfseg.training.loop import train, with_computed_class_weights
from tfseg.utils.errors import TfsegError
from tfseg.training.recurrent import sequence_predictor, trained_frames
from tfseg.training.steps import make_train_step

SIZE = 8


def recurrent_config(**train):
    return Config(model=ModelConfig(name="icnet_temporal", num_classes=2, input_channels=1),
                  data=DataConfig(height=SIZE, width=SIZE, augment=AugmentConfig(flip="none"),
                                  clips=ClipConfig(length=3, warmup=1)),
                  train=TrainConfig(batch_size=2, **train))


def stand_in_step_model(seed=0):
    """A tiny recurrent step model: inputs image (8, 8, 1) and state (2, 2, 3), outputs
    {"logits", "state"}; the state changes the logits."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((SIZE, SIZE, 1), name="image")
    pixels = keras.layers.Rescaling(1 / 50)(image)
    encoder = keras.Model(image, {"pixels": pixels,
                                  "pooled": keras.layers.AveragePooling2D(4)(pixels)})
    inputs = {"pixels": keras.Input((SIZE, SIZE, 1), name="pixels"),
              "state": keras.Input((SIZE // 4, SIZE // 4, 3), name="state")}
    logits = keras.layers.Conv2D(2, 1)(keras.layers.Concatenate()(
        [inputs["pixels"], keras.layers.UpSampling2D(4)(3.0 * inputs["state"])]))
    parts = RecurrentParts(encoder, ConvGRUCell(3, kernel_size=1),
                           keras.Model(inputs, {"logits": logits}), cell_input="pooled")
    return build_step_model(parts, (SIZE // 4, SIZE // 4, 3), "stand_in")


@pytest.fixture(scope="module")
def step():
    """The stand-in step model and its `sequence_predictor` (traced once per module)."""
    model = stand_in_step_model()
    return model, sequence_predictor(model)


def sequences(count, frames=4, seed=0):
    """`count` random sequences as the validation data gives them: images (1, N, 8, 8, 1)
    and masks (1, N, 8, 8)."""
    rng = np.random.default_rng(seed)
    return [(rng.uniform(0, 255, (1, frames, SIZE, SIZE, 1)).astype(np.float32),
             rng.integers(0, 2, (1, frames, SIZE, SIZE)).astype(np.uint8))
            for _ in range(count)]


def eager_logits(step, frames):
    """The step model run frame by frame in eager mode, the state carried from zeros."""
    state, logits = np.zeros((1, SIZE // 4, SIZE // 4, 3), np.float32), []
    for frame in frames:
        outputs = step([frame[None], state], training=False)
        state = outputs["state"].numpy()
        logits.append(outputs["logits"].numpy()[0])
    return np.stack(logits)


def assert_same_scores(report, expected):
    assert report.keys() == expected.keys()
    for key, value in expected.items():
        assert report[key] == (pytest.approx(value, rel=1e-5, nan_ok=True)
                               if isinstance(value, (float, dict)) else value), key


def cross_entropy(masks, logits):
    """Mean softmax cross-entropy per frame, in numpy (no ignored pixels)."""
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_p, masks[..., None].astype(np.int64), -1)[..., 0]
    return -picked.mean(axis=(1, 2))


@pytest.mark.parametrize("cascade", [False, True])
def test_trained_frames_fold_the_clips_after_the_warmup_for_every_per_frame_loss(cascade):
    config = recurrent_config(class_weights=[1.0, 3.0], cascade="paper" if cascade else "off")
    task = make_task(config)
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 2, (2, 3, SIZE, SIZE)).astype(np.uint8)
    levels = {"logits": SIZE, **({"logits_4": 2, "logits_8": 1, "logits_16": 1}
                                 if cascade else {})}
    outputs = {key: rng.normal(size=(2, 2, size, size, 2)).astype(np.float32)
               for key, size in levels.items()}
    outputs["state"] = rng.normal(size=(2, 2, 1, 1, 3)).astype(np.float32)
    folded_masks, folded = trained_frames(tf.constant(masks), outputs, warmup=1)
    assert isinstance(folded, dict) == cascade   # the state never reaches the loss
    by_hand = [task.per_image_loss(masks[b, t][None], {key: outputs[key][b, t - 1][None]
                                                       for key in levels} if cascade
                                   else outputs["logits"][b, t - 1][None])[0]
               for b in range(2) for t in (1, 2)]
    np.testing.assert_allclose(task.per_image_loss(folded_masks, folded), by_hand, rtol=1e-5)
    np.testing.assert_array_equal(folded_masks, masks[:, 1:].reshape(4, SIZE, SIZE))


@pytest.mark.slow  # traces a training step: about 3 s
def test_the_loss_of_a_clip_batch_is_the_mean_loss_of_its_trained_frames():
    config = recurrent_config(cascade="off")
    model = build_clip_model(stand_in_step_model(), 3, warmup=1)
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)
    train_step = make_train_step(tf.distribute.get_strategy(), model, optimizer,
                                 make_task(config), config)
    rng = np.random.default_rng(1)
    clips = rng.uniform(0, 255, (2, 3, SIZE, SIZE, 1)).astype(np.float32)
    masks = rng.integers(0, 2, (2, 3, SIZE, SIZE)).astype(np.uint8)
    logits = model(clips, training=True)["logits"].numpy()   # (2, 2, ...): frames 1 and 2
    expected = cross_entropy(masks[:, 1:].reshape(-1, SIZE, SIZE),
                             logits.reshape(-1, SIZE, SIZE, 2)).mean()
    loss, matrix, finite = train_step(iter([(clips, masks)]))
    assert float(loss) == pytest.approx(expected, rel=1e-5) and bool(finite)
    assert int(np.sum(matrix)) == 2 * 2 * SIZE * SIZE   # warm-up frames are not counted


def test_class_weights_are_computed_from_the_trained_frames_of_clips():
    masks = np.zeros((2, 3, 4, 4), np.uint8)
    masks[:, 0] = 1                       # warm-up frames: all class 1, not counted
    masks[:, 1:, :1] = 1                  # trained frames: class 1 on a quarter
    batches = tf.data.Dataset.from_tensors((np.zeros((2, 3, 4, 4, 1), np.float32), masks))
    config = recurrent_config(class_weighting="linknet_ln", steps_per_epoch=1)
    weights = with_computed_class_weights(config, batches.repeat()).train.class_weights
    np.testing.assert_allclose(weights, [1 / np.log(1.02 + 0.75), 1 / np.log(1.02 + 0.25)],
                               rtol=1e-5)


def test_a_sequence_runs_in_order_from_a_zero_state_as_frame_by_frame_eager_calls(step):
    step, predict = step
    (frames, _), = sequences(1, frames=3)
    logits = predict(frames[0])
    np.testing.assert_allclose(logits, eager_logits(step, frames[0]), atol=1e-5)
    # The state matters: frame 2 run from a zero state gives other logits.
    assert np.abs(logits[2] - eager_logits(step, frames[0, 2:3])[0]).max() > 1e-2


def test_validation_of_sequences_scores_every_frame_as_a_per_frame_model(step):
    step, predict = step
    task = make_task(recurrent_config())
    data = sequences(2)
    report = validate(task, predict, data, samples=3)
    # The same frames and their eager logits through the per-frame validation.
    logits = {frames[0].tobytes(): eager_logits(step, frames[0]) for frames, _ in data}
    expected = validate(task, lambda frames: logits[frames.tobytes()],
                        [(frames[0], masks[0]) for frames, masks in data], samples=3)
    assert report["frames"] == expected["frames"] == 8
    np.testing.assert_array_equal(report.pop("panels"), expected.pop("panels"))
    assert_same_scores(report, expected)


def test_validation_starts_each_sequence_from_a_zero_state(step):
    _, predict = step
    task = make_task(recurrent_config())
    first, second = sequences(2, seed=3)
    alone = predict(first[0][0])
    predict(second[0][0])
    np.testing.assert_array_equal(predict(first[0][0]), alone)
    assert_same_scores(validate(task, predict, [first, second, first]),
                       validate(task, predict, [second, first, first]))


# icnet_temporal end to end: 2 epochs of 2 steps on clips of 3 frames (1 warm-up), a
# checkpoint after every step, no export (tfseg.deploy's part).
RECURRENT_RUN = copy.deepcopy(TINY_CONFIG)
RECURRENT_RUN["model"]["name"] = "icnet_temporal"
RECURRENT_RUN["data"].update(clips={"length": 3, "warmup": 1}, val_sequences=2)
RECURRENT_RUN["data"]["synthetic"]["frames_per_sequence"] = 6
RECURRENT_RUN["train"].update(checkpoint_every=1, checkpoints_to_keep=4)
RECURRENT_RUN["export"] = {"saved_model": False, "onnx": False}


@pytest.mark.slow  # two tiny icnet_temporal runs and an evaluate: about 1 minute
def test_icnet_temporal_trains_validates_checkpoints_and_resumes(tmp_path, capsys):
    run_dir = tmp_path / "run"
    final = train(from_dict(Config, RECURRENT_RUN, source="test"), run_dir)
    assert final["frames"] == 2 * 6   # every frame of both held-out sequences
    assert [row["epoch"] for row in final["history"]] == [1, 2]
    assert np.isfinite(final["history"][-1]["train_loss"])
    assert {"validation_loss", "validation_foreground_iou"} <= set(final["history"][-1])
    assert sorted(path.name for path in (run_dir / "checkpoints").glob("state-*.json")) == [
        f"state-{step}.json" for step in (1, 2, 3, 4)]
    assert list((run_dir / "logs").iterdir())
    # tfseg.evaluate runs the step model of the checkpoint frame by frame: the same scores.
    evaluate_to_folder(run_dir=run_dir, output=tmp_path / "evaluation")
    report = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    assert_same_scores({key: report[key] for key in final if key in report},
                       {key: final[key] for key in final if key in report})
    assert {"loss", "frames", "foreground_iou", "confusion_matrix"} <= report.keys()
    # As if stopped after step 3, mid-epoch 2: the resumed run ends as the whole one did.
    resumed = tmp_path / "resumed"
    shutil.copytree(run_dir, resumed)
    (resumed / "checkpoints" / "state-4.json").unlink()
    (resumed / "metrics.json").unlink()
    train(load_config(resumed / "config.yaml"), resumed, resume=True)
    assert f"resuming {resumed} at step 3" in capsys.readouterr().out
    assert_same_run(json.loads((resumed / "metrics.json").read_text()),
                    json.loads((run_dir / "metrics.json").read_text()))


@pytest.mark.slow  # a tiny per-frame icnet run: about 15 s
def test_icnet_temporal_starts_from_a_per_frame_icnet_run_but_its_gru(tmp_path, capsys):
    per_frame = copy.deepcopy(RECURRENT_RUN)
    per_frame["model"]["name"] = "icnet"
    per_frame["train"].update(epochs=1, steps_per_epoch=1)
    train(from_dict(Config, per_frame, source="test"), tmp_path / "icnet")
    _, icnet = load_run(tmp_path / "icnet")
    config = from_dict(Config, RECURRENT_RUN, source="test")
    model = build_model(config, training_input_shape(config), for_training=True)
    checkpoint = init_from_run(tmp_path / "icnet", config, model)
    assert checkpoint.startswith(str(tmp_path / "icnet" / "checkpoints"))
    source = {layer.name: layer for layer in all_layers(icnet) if layer.weights}
    targets = [layer for layer in all_layers(model)
               if layer.weights and not isinstance(layer, keras.Model)]
    shared = [layer for layer in targets if layer.name in source]
    assert len(shared) > len(targets) / 2
    for layer in shared:
        for ours, theirs in zip(layer.get_weights(), source[layer.name].get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    assert any(isinstance(layer, ConvGRUCell) for layer in targets if layer not in shared)
    assert "start from their initial values" in capsys.readouterr().out
    wider = from_dict(Config, {**RECURRENT_RUN, "model": {**RECURRENT_RUN["model"],
                                                         "options": {"width": 1.0}}},
                      source="test")
    with pytest.raises(TfsegError, match="model.options; train.init_from needs the same"):
        init_from_run(tmp_path / "icnet", wider,
                      build_model(wider, training_input_shape(wider), for_training=True))

