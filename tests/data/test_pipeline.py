"""The synthetic tf.data source: reproducible, held-out validation, batched for training."""

import dataclasses

import numpy as np

from tfseg.config import Config, DataConfig, SyntheticSpec, TrainConfig
from tfseg.data.interferograms import synthetic_frames
from tfseg.data.pipeline import make_datasets
from tfseg.data.preprocess import Preprocessing

SMALL = DataConfig(height=32, width=48, val_sequences=2,
                   synthetic=SyntheticSpec(height=64, width=96, frames_per_sequence=3, fringes=8))


def frames_of(dataset, count):
    return [(i.numpy(), m.numpy()) for i, m in dataset.take(count)]


def test_stream_is_reproducible_and_splits_differ():
    def stream(seed, split):
        preprocessing = Preprocessing.from_config(Config(data=SMALL))
        return frames_of(synthetic_frames(SMALL.synthetic, preprocessing, seed=seed,
                                          split=split, num_sequences=2), 4)

    first, again = stream(0, "train"), stream(0, "train")
    validation, other_seed = stream(0, "validation"), stream(1, "train")
    for (a, _), (b, _) in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0][0], validation[0][0])
    assert not np.array_equal(first[0][0], other_seed[0][0])


def test_training_stream_holds_exactly_the_run_and_has_static_shapes():
    config = Config(data=SMALL, train=TrainConfig(batch_size=4, epochs=2, steps_per_epoch=3))
    batches = list(make_datasets(config).train)
    assert len(batches) == 6
    images, masks = batches[0]
    assert images.shape == (4, 32, 48, 1) and masks.shape == (4, 32, 48)


def test_training_stream_runs_without_the_autotuner():
    # Its model thread held up the end of every run for its sleep (up to a minute).
    config = Config(data=SMALL, train=TrainConfig(batch_size=4, epochs=1, steps_per_epoch=1))
    assert make_datasets(config).train.options().autotune.enabled is False


def test_validation_is_finite():
    config = Config(data=SMALL, train=TrainConfig(batch_size=4))
    frames = sum(int(i.shape[0]) for i, _ in make_datasets(config).validation)
    assert frames == SMALL.val_sequences * SMALL.synthetic.frames_per_sequence


def test_validation_stride_keeps_every_kth_frame_of_the_stream():
    config = Config(data=dataclasses.replace(SMALL, val_frame_stride=2),
                    train=TrainConfig(batch_size=2))
    strided = np.concatenate([i.numpy() for i, _ in make_datasets(config).validation])
    full = np.concatenate([i.numpy() for i, _ in make_datasets(
        dataclasses.replace(config, data=SMALL)).validation])
    np.testing.assert_array_equal(strided, full[::2])


def test_validation_frames_are_identical_across_epochs():
    config = Config(data=dataclasses.replace(SMALL, val_sequences=1),
                    train=TrainConfig(batch_size=2))
    dataset = make_datasets(config).validation
    first = np.concatenate([i.numpy() for i, _ in dataset])
    second = np.concatenate([i.numpy() for i, _ in dataset])
    np.testing.assert_array_equal(first, second)
