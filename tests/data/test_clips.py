"""Clip mode of the pipelines, for recurrent models: training clips of consecutive frames of
one sequence, validation on whole held-out sequences in order, synthetic and on disk."""

import dataclasses

import cv2
import numpy as np
import pytest

from tfseg.config import (Config, DataConfig, ModelConfig, PreprocessConfig, SyntheticSpec,
                          TrainConfig)
from tfseg.config.schema import ClipConfig
from tfseg.data import interferograms
from tfseg.data.labels import write_yolo
from tfseg.data.pipeline import make_datasets, split_sequences
from tfseg.data.preprocess import Preprocessing
from tfseg.utils.errors import TfsegError

SIZE = 32
SPEC = SyntheticSpec(height=SIZE, width=SIZE, frames_per_sequence=4, fringes=8)
DATA = DataConfig(height=SIZE, width=SIZE, val_sequences=2, shuffle_frames=8, synthetic=SPEC,
                  clips=ClipConfig(length=2, warmup=0))
RUN = TrainConfig(batch_size=2, epochs=1, steps_per_epoch=3, seed=5)


def recurrent(data=DATA, train=RUN):
    return Config(model=ModelConfig(name="icnet_temporal"), data=data, train=train)


def arrays(dataset):
    return [(images.numpy(), masks.numpy()) for images, masks in dataset]


def clips_in(batches):
    """Every clip of a list of batches, as (images (T, H, W, C), masks (T, H, W))."""
    return [(images[i], masks[i]) for images, masks in batches for i in range(len(images))]


def find_clip(clip, sequences):
    """(sequence index, first frame) where `clip` is consecutive frames of `sequences`."""
    images, masks = clip
    for index, (frames, frame_masks) in enumerate(sequences):
        for start in range(len(frames) - len(images) + 1):
            end = start + len(images)
            if (np.array_equal(frames[start:end], images)
                    and np.array_equal(frame_masks[start:end], masks)):
                return index, start
    raise AssertionError("the clip is not consecutive frames of one sequence in order")


def synthetic_sequences(config, seed, split, count):
    stream = interferograms.synthetic_sequences(
        config.data.synthetic, Preprocessing.from_config(config), seed=seed, split=split,
        num_sequences=count)
    return arrays(stream)


def test_synthetic_clips_have_static_shapes():
    images_spec, masks_spec = make_datasets(recurrent()).train.element_spec
    assert images_spec.shape == (2, 2, SIZE, SIZE, 1) and images_spec.dtype == "float32"
    assert masks_spec.shape == (2, 2, SIZE, SIZE) and masks_spec.dtype == "uint8"


def test_synthetic_clips_are_the_run_of_side_by_side_consecutive_frames_of_one_sequence():
    config = recurrent()
    # 6 clips for the run and 4 for the buffer, 2 per 4-frame sequence: 5 sequences.
    sequences = synthetic_sequences(config, RUN.seed, "train", 5)
    batches = arrays(make_datasets(config).train)
    assert len(batches) == RUN.epochs * RUN.steps_per_epoch
    found = [find_clip(clip, sequences) for clip in clips_in(batches)]
    assert {start for _, start in found} <= {0, 2}
    assert len({index for index, _ in found}) >= 3, "clips should mix many sequences"


def test_synthetic_validation_is_whole_sequences_in_order_without_stride():
    config = recurrent(dataclasses.replace(DATA, val_frame_stride=2))
    validation = arrays(make_datasets(config).validation)
    expected = synthetic_sequences(config, DATA.val_seed, "validation", DATA.val_sequences)
    assert len(validation) == DATA.val_sequences
    for (images, masks), (frames, frame_masks) in zip(validation, expected):
        assert images.shape == (1, 4, SIZE, SIZE, 1) and masks.shape == (1, 4, SIZE, SIZE)
        np.testing.assert_array_equal(images[0], frames)
        np.testing.assert_array_equal(masks[0], frame_masks)


def test_clips_are_reproducible_under_the_seed():
    def first_batch(seed):
        images, _ = next(iter(make_datasets(
            recurrent(train=dataclasses.replace(RUN, seed=seed))).train))
        return images.numpy()

    first = first_batch(5)
    np.testing.assert_array_equal(first, first_batch(5))
    assert not np.array_equal(first, first_batch(6))


def test_synthetic_sequences_shorter_than_a_clip_are_refused():
    data = dataclasses.replace(DATA, clips=ClipConfig(length=5, warmup=0))
    with pytest.raises(TfsegError, match="data.clips.length 5 .*frames_per_sequence 4"):
        make_datasets(recurrent(data))


def write_sequences(root, lengths):
    """Sequence folders seq_0, seq_1, ... of random 32x32 frames, a box moving across them."""
    rng = np.random.default_rng(0)
    for index, length in enumerate(lengths):
        folder = root / f"seq_{index}"
        folder.mkdir(parents=True)
        for frame in range(length):
            cv2.imwrite(str(folder / f"f{frame:02d}.png"),
                        rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8))
            write_yolo(folder / f"f{frame:02d}.txt", [(2 + 3 * frame, 4, 6, 8)], SIZE, SIZE)
    return root


def folder_config(path, **data):
    options = {"source": "interferograms", "path": str(path), "height": SIZE, "width": SIZE,
               "val_fraction": 0.25, "shuffle_frames": 4, "clips": ClipConfig(length=2, warmup=0),
               "preprocess": PreprocessConfig(background_every=2)}
    return recurrent(DataConfig(**{**options, **data}),
                     TrainConfig(batch_size=2, epochs=1, steps_per_epoch=4, seed=1))


def folder_sequences(config, folders):
    """Each folder's frames as the frame pipeline reads them: (images, masks) in file order."""
    preprocessing = Preprocessing.from_config(config)
    sequences = []
    for folder in folders:
        frames = interferograms.read_sequence(folder)
        background = {folder: interferograms.sequence_background(frames, preprocessing)}
        pairs = arrays(interferograms.folder_frames(frames, background, preprocessing))
        sequences.append((np.stack([i for i, _ in pairs]), np.stack([m for _, m in pairs])))
    return sequences


def test_folder_clips_come_from_training_sequences_and_validation_holds_out_the_last(tmp_path):
    root = write_sequences(tmp_path, [3, 4, 2])
    config = folder_config(root)
    data = make_datasets(config)
    train = folder_sequences(config, [root / "seq_0", root / "seq_1"])
    held_out = folder_sequences(config, [root / "seq_2"])
    batches = arrays(data.train)
    assert len(batches) == 4 and batches[0][0].shape == (2, 2, SIZE, SIZE, 1)
    found = {find_clip(clip, train) for clip in clips_in(batches)}
    assert {index for index, _ in found} == {0, 1}
    assert len(found) >= 4, "clips should start at every frame"
    (images, masks), = arrays(data.validation)
    np.testing.assert_array_equal(images[0], held_out[0][0])
    np.testing.assert_array_equal(masks[0], held_out[0][1])
    assert data.validation.element_spec[0].shape.as_list() == [1, None, SIZE, SIZE, 1]


def test_validation_path_sequences_are_validated_whole_and_in_order(tmp_path):
    root = write_sequences(tmp_path / "train", [3])
    val_root = write_sequences(tmp_path / "val", [2, 4])
    config = folder_config(root, val_path=str(val_root))
    expected = folder_sequences(config, [val_root / "seq_0", val_root / "seq_1"])
    validation = arrays(make_datasets(config).validation)
    assert [images.shape[1] for images, _ in validation] == [2, 4]
    for (images, masks), (frames, frame_masks) in zip(validation, expected):
        np.testing.assert_array_equal(images[0], frames)
        np.testing.assert_array_equal(masks[0], frame_masks)


@pytest.mark.parametrize("folders,fraction,held_out", [
    (4, 0.5, ["seq_2", "seq_3"]), (4, 0.1, ["seq_3"]), (2, 0.9, ["seq_1"]),
    (10, 0.3, ["seq_7", "seq_8", "seq_9"])])
def test_whole_sequences_are_held_out_from_the_end(tmp_path, folders, fraction, held_out):
    config = folder_config(write_sequences(tmp_path, [2] * folders), val_fraction=fraction)
    train, validation, _ = split_sequences(config.data, Preprocessing.from_config(config))
    assert [sequence[0].path.parent.name for sequence in validation] == held_out
    assert len(train) == folders - len(held_out)
    assert all(len(sequence) == 2 for sequence in train + validation)


def test_one_sequence_folder_without_a_validation_path_is_refused(tmp_path):
    config = folder_config(write_sequences(tmp_path, [6]))
    with pytest.raises(TfsegError, match="recurrent models validate on whole held-out "
                                         "sequences: set data.val_path or give at least 2"):
        make_datasets(config)


def test_folders_shorter_than_a_clip_are_not_trained_on(tmp_path, caplog):
    root = write_sequences(tmp_path, [1, 3, 2])
    data = make_datasets(folder_config(root))
    assert "seq_0" in caplog.text
    train = folder_sequences(folder_config(root), [root / "seq_0", root / "seq_1"])
    assert {find_clip(clip, train)[0] for clip in clips_in(arrays(data.train))} == {1}
    with pytest.raises(TfsegError, match="no training sequence holds a clip of data.clips"):
        make_datasets(folder_config(write_sequences(tmp_path / "short", [1, 1, 4])))


def test_a_bad_frame_skipped_is_left_out_of_its_sequence(tmp_path):
    root = write_sequences(tmp_path, [4, 3])
    (root / "seq_0" / "f01.png").write_bytes(b"not an image")
    config = folder_config(root, bad_frames="skip")
    data = make_datasets(config)
    assert data.skipped == [str(root / "seq_0" / "f01.png")]
    preprocessing = Preprocessing.from_config(config)
    frames = [f for f in interferograms.read_sequence(root / "seq_0") if f.path.name != "f01.png"]
    background = {root / "seq_0": interferograms.sequence_background(frames, preprocessing)}
    pairs = arrays(interferograms.folder_frames(frames, background, preprocessing))
    train = [(np.stack([i for i, _ in pairs]), np.stack([m for _, m in pairs]))]
    found = {find_clip(clip, train) for clip in clips_in(arrays(data.train))}
    assert found == {(0, 0), (0, 1)}
