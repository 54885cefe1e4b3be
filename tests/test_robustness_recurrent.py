"""The scorecard of a recurrent model (issue 21): every cell's held-out sequences, synthetic
or the independent set read back from its folders, run whole, in order, from a zero state per
sequence (`tfseg.deploy.evaluation.score`, as `python -m tfseg.evaluate` scores them), and
score as the step model run frame by frame with its state carried."""

import copy

import numpy as np
import pytest
from conftest import TINY_CONFIG

from tfseg.config import Config, from_dict
from tfseg.data.pipeline import make_datasets
from tfseg.deploy import robustness, runtimes
from tfseg.deploy.metadata import metadata_for
from tfseg.deploy.robustness import INDEPENDENT, TRAINING, Axis
from tfseg.models import all_layers, randomize_batch_norm
from tfseg.models.from_config import build_model

SEQUENCES, FRAMES = 2, 4
STILL = Axis("resident_probability", "still samples", levels=(1.0,))


def tiny_config():
    """icnet_temporal at width 0.5 on 64x64 synthetic sequences of 4 frames."""
    config = copy.deepcopy(TINY_CONFIG)
    config["model"]["name"] = "icnet_temporal"
    config["data"]["clips"] = {"length": 3, "warmup": 1}
    config["data"]["preprocess"] = {"background_every": 0}
    config["data"]["synthetic"].update(frames_per_sequence=FRAMES, max_samples=2)
    return from_dict(Config, config, source="test")


def step_model(config, frames):
    """The step model with batch norm randomised and its classifier's bias moved so that
    about half the pixels of `frames` are predicted foreground (not a constant map)."""
    model = build_model(config)
    randomize_batch_norm(model)
    state = np.zeros((1, *runtimes.model_state_shape(model)), np.float32)
    logits = model([frames[:1], state], training=False)["logits"].numpy()
    classifier = next(layer for layer in all_layers(model) if layer.name == "icnet_classifier")
    bias = classifier.bias.numpy()
    bias[1] -= np.median(logits[..., 1] - logits[..., 0])
    classifier.bias.assign(bias)
    return model


def frame_by_frame_scores(model, sequences):
    """Foreground IoU, precision and recall of `model` stepped one frame at a time through
    each of `sequences`, its state carried from frame to frame and zeros at each sequence;
    and the fraction of pixels predicted foreground."""
    hits = predicted = truth = pixels = 0
    for frames, masks in sequences:
        state = np.zeros((1, *runtimes.model_state_shape(model)), np.float32)
        for frame, mask in zip(frames, masks):
            outputs = model([frame[None], state], training=False)
            state = outputs["state"].numpy()
            foreground = outputs["logits"].numpy()[0].argmax(-1) == 1
            hits += np.sum(foreground & (mask == 1))
            predicted += foreground.sum()
            truth += np.sum(mask == 1)
            pixels += mask.size
    return {"foreground_iou": hits / (predicted + truth - hits),
            "precision": hits / predicted, "recall": hits / truth}, predicted / pixels


@pytest.mark.slow  # a tiny icnet_temporal on 4 cells of 2 sequences: about 40 s
def test_each_cell_runs_its_sequences_whole_in_order_from_a_zero_state(tmp_path, monkeypatch):
    config = tiny_config()
    # The cells: the training ranges, still samples at the training 0.3 and at 1, and the
    # independent set; their held-out sequences as the validation data gives them.
    jobs, _ = robustness.cell_configs(config, sequences=SEQUENCES, folder=tmp_path / "data",
                                      axes=(STILL,))
    held_out = [[(np.asarray(images)[0], np.asarray(masks)[0]) for images, masks
                 in make_datasets(cell_config).validation] for _, cell_config in jobs]
    assert [len(sequences) for sequences in held_out] == [SEQUENCES] * 4
    model = step_model(config, held_out[0][0][0])
    runtime = runtimes.from_keras(model, metadata_for(config, "NHWC"))
    calls, advance = [], runtime.advance

    def recording_advance(pixels):
        calls.append((np.array(pixels), runtime.state.copy()))
        return advance(pixels)

    monkeypatch.setattr(runtime, "advance", recording_advance)
    with runtime:
        rows, notes = robustness.scorecard(runtime, config, sequences=SEQUENCES,
                                           folder=tmp_path / "independent_set",
                                           axes=(STILL,), progress=lambda line: None)

    assert [(row["axis"], row["level"]) for row in rows] == [
        (TRAINING, ""), ("still samples", "0.3"), ("still samples", "1"), (INDEPENDENT, "")]
    assert any("reset to zeros at each sequence" in note for note in notes)
    # One call per held-out sequence, cell after cell: all its frames, in order, from zeros.
    sequences = [sequence for cell in held_out for sequence in cell]
    assert len(calls) == len(sequences)
    for (pixels, state), (frames, _) in zip(calls, sequences):
        assert pixels.shape[0] == FRAMES and not state.any()
        np.testing.assert_array_equal(pixels, frames)
    assert not np.array_equal(sequences[0][0], sequences[1][0])
    for row, cell in zip(rows, held_out):
        expected, foreground = frame_by_frame_scores(model, cell)
        assert row["frames"] == SEQUENCES * FRAMES
        assert 0.02 < foreground < 0.98 and expected["foreground_iou"] > 0
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, rel=2e-3), (row["axis"], key)
