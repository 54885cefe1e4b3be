"""Training a recurrent model (issue 21): the loss of a clip batch is the per-frame loss of
its trained frames (a tiny stand-in step model)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfseg.config import AugmentConfig, Config, DataConfig, ModelConfig, TrainConfig
from tfseg.config.schema import ClipConfig
from tfseg.models.clips import build_clip_model
from tfseg.tasks.factory import make_task
from tfseg.training.loop import with_computed_class_weights
from tfseg.training.recurrent import trained_frames
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
    state = keras.Input((SIZE // 4, SIZE // 4, 3), name="state")
    pixels = keras.layers.Rescaling(1 / 50)(image)
    new_state = keras.layers.Conv2D(3, 1, activation="tanh")(
        keras.layers.Concatenate()([keras.layers.AveragePooling2D(4)(pixels), state]))
    logits = keras.layers.Conv2D(2, 1)(keras.layers.Concatenate()(
        [pixels, keras.layers.UpSampling2D(4)(3.0 * new_state)]))
    return keras.Model([image, state], {"logits": logits, "state": new_state})


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
