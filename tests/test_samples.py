"""Sample-level scores (`tfseg.tasks.samples`): components as boxes, one-to-one matching at
box IoU >= 0.5, counts summed over the data set; and through the one validation."""

import numpy as np
import pytest

from tfseg.config import Config, DataConfig, ModelConfig
from tfseg.data.preprocess import boxes_to_mask
from tfseg.tasks.factory import make_task
from tfseg.tasks.samples import (
    SampleCounts,
    background_class,
    component_boxes,
    foreground,
    format_sample_scores,
    match_boxes,
)
from tfseg.tasks.validation import validate

SIZE = (40, 40)
# Frame 1: A (2, 2, 10, 10) predicted split in two halves of IoU 0.4 (missed, 2 false
# positives); B and C touch, so the label mask holds one sample (20, 2, 10, 5), predicted as
# one; D missed; one false positive; E predicted with IoU exactly 0.5 (matched).
FRAME_1 = {"labelled": [(2, 2, 10, 10), (20, 2, 5, 5), (25, 2, 5, 5), (30, 30, 5, 5),
                        (14, 20, 10, 10)],
           "predicted": [(2, 2, 4, 10), (8, 2, 4, 10), (20, 2, 10, 5), (2, 30, 3, 3),
                         (14, 20, 10, 5)]}
# Frame 2: IoU 49/100, just below 0.5 (a miss and a false positive), and IoU 0.6 (matched).
FRAME_2 = {"labelled": [(14, 20, 10, 10), (2, 2, 10, 10)],
           "predicted": [(14, 20, 7, 7), (2, 2, 10, 6)]}


def masks_of(frame):
    return (boxes_to_mask(frame["predicted"], *SIZE).astype(bool),
            boxes_to_mask(frame["labelled"], *SIZE).astype(bool))


def test_components_are_the_boxes_and_touching_boxes_merge_on_both_sides():
    predicted, labelled = masks_of(FRAME_1)
    assert component_boxes(labelled) == [(2, 2, 10, 10), (20, 2, 10, 5), (14, 20, 10, 10),
                                         (30, 30, 5, 5)]
    assert component_boxes(predicted) == [(2, 2, 4, 10), (8, 2, 4, 10), (20, 2, 10, 5),
                                          (14, 20, 10, 5), (2, 30, 3, 3)]
    # Overlapping boxes are one sample with their joint bounding box; corners touching
    # diagonally join too (8-connectivity), on either side alike.
    overlapping = boxes_to_mask([(0, 0, 6, 6), (4, 4, 6, 6)], *SIZE)
    diagonal = boxes_to_mask([(0, 0, 3, 3), (3, 3, 3, 3)], *SIZE)
    for mask in (overlapping, diagonal):
        assert len(component_boxes(mask)) == 1
    assert component_boxes(overlapping) == [(0, 0, 10, 10)]
    # A component wholly on ignored pixels is not counted.
    specks = boxes_to_mask([(0, 0, 1, 1), (5, 5, 3, 3)], *SIZE)
    ignored = boxes_to_mask([(4, 4, 5, 5)], *SIZE).astype(bool)
    assert component_boxes(specks, ignored=ignored) == [(0, 0, 1, 1)]
    assert component_boxes(np.zeros(SIZE, bool)) == []


def test_components_under_the_minimum_area_are_specks_on_both_sides():
    # 40x40 frame: 1/400 of it is 4 pixels.
    mask = boxes_to_mask([(0, 0, 1, 1), (5, 5, 1, 3), (10, 10, 2, 2), (20, 20, 5, 5)], *SIZE)
    assert component_boxes(mask, min_area=1 / 400) == [(10, 10, 2, 2), (20, 20, 5, 5)]
    assert len(component_boxes(mask, min_area=0)) == 4
    assert component_boxes(mask, min_area=1) == []
    # With ignored pixels both rules apply: the 2x2 one lies on them, the 1x1 is a speck.
    ignored = boxes_to_mask([(9, 9, 4, 4)], *SIZE).astype(bool)
    assert component_boxes(mask, ignored=ignored, min_area=1 / 400) == [(20, 20, 5, 5)]
    # SampleCounts leaves specks out of the predicted and of the labelled samples alike.
    counts = SampleCounts(min_area=1 / 400)
    labelled = boxes_to_mask([(20, 20, 5, 5), (0, 0, 1, 1)], *SIZE)
    assert counts.add_masks(mask, labelled) == [(1, 0)]
    assert (counts.matched, counts.predicted, counts.labelled) == (1, 2, 1)


def test_exact_precision_recall_and_f1_are_summed_over_frames_not_averaged():
    counts = SampleCounts()
    for frame, matched in ((FRAME_1, [(2, 1), (3, 2)]), (FRAME_2, [(0, 0)])):
        predicted, labelled = masks_of(frame)
        pairs = counts.add_masks(predicted, labelled)
        # indices into component_boxes' order; IoU 1.0 before 0.5 (frame 1)
        assert sorted(pairs) == sorted(matched)
    result = counts.result()
    assert (result["samples_matched"], result["samples_predicted"],
            result["samples_labelled"]) == (3, 7, 6)
    assert result["sample_precision"] == pytest.approx(3 / 7)   # per-frame mean: 0.45
    assert result["sample_recall"] == pytest.approx(3 / 6)
    assert result["sample_f1"] == pytest.approx(6 / 13)


def test_iou_threshold_is_inclusive_at_exactly_one_half():
    label = [(0, 0, 10, 10)]
    assert match_boxes([(0, 0, 10, 5)], label) == [(0, 0)]   # 50 / 100
    assert match_boxes([(0, 0, 7, 7)], label) == []       # 0.49
    assert match_boxes([(0, 0, 11, 10)], label) == [(0, 0)]   # 100 / 110
    assert match_boxes([(10, 0, 5, 5)], label) == []      # touching edges: no overlap


def test_matching_is_one_to_one_greedy_by_iou():
    labelled = [(0, 0, 10, 8), (0, 0, 10, 10)]
    predicted = [(0, 0, 10, 9), (0, 0, 10, 10)]
    # (1, 1) IoU 1.0 first; then predicted 0 takes labelled 0 (IoU 80 / 90).
    assert match_boxes(predicted, labelled) == [(1, 1), (0, 0)]
    # Two predictions of one sample: one matches, the other is a false positive.
    assert match_boxes([(0, 0, 10, 10), (1, 1, 9, 9)], [(0, 0, 10, 10)]) == [(0, 0)]
    assert match_boxes([], labelled) == [] and match_boxes(predicted, []) == []


def test_no_denominator_is_nan_and_the_background_class_is_found_by_name():
    result = SampleCounts().result()
    assert all(np.isnan(result[key]) for key in ("sample_precision", "sample_recall",
                                                  "sample_f1"))
    counts = SampleCounts()
    counts.add_boxes([(0, 0, 2, 2)], [])
    assert counts.result()["sample_precision"] == 0 and np.isnan(
        counts.result()["sample_recall"])
    assert background_class(["background", "sample"]) == 0
    assert background_class(["cell", "Background", "debris"]) == 1
    assert background_class(["Sky", "Building", "Road"]) is None
    mask = np.array([[0, 1, 2, 255]])
    assert foreground(mask, 0, 255).tolist() == [[False, True, True, False]]


def one_hot_logits(predictions, num_classes=2):
    return 10.0 * np.eye(num_classes, dtype=np.float32)[predictions]


def test_validate_reports_sample_scores_for_a_background_class_only():
    masks = np.stack([boxes_to_mask(f["labelled"], *SIZE) for f in (FRAME_1, FRAME_2)])
    predictions = np.stack([boxes_to_mask(f["predicted"], *SIZE) for f in (FRAME_1, FRAME_2)])
    images = np.arange(2 * SIZE[0] * SIZE[1], dtype=np.float32).reshape(2, 1, *SIZE, 1)
    logits = {images[i].tobytes(): one_hot_logits(predictions[i:i + 1]) for i in range(2)}
    batches = list(zip(images, masks[:, None]))
    report = validate(make_task(Config()), lambda batch: logits[batch.tobytes()], batches)
    assert (report["samples_matched"], report["samples_predicted"],
            report["samples_labelled"]) == (3, 7, 6)
    assert report["sample_f1"] == pytest.approx(6 / 13)
    assert isinstance(report["sample_precision"], float)   # a TensorBoard scalar
    line = format_sample_scores(report, 0.0005)
    assert line.startswith("samples (components of at least 0.0005 of the frame as boxes")
    assert format_sample_scores(report, 0).startswith("samples (every component as boxes")
    assert "6 labelled, 7 predicted, 3 matched; precision 0.4286, recall 0.5000, F1 0.4615" in (
        line)
    # data.min_sample_area: at 1/100 of the 40x40 frames (16 pixels) the 3x3 false positive
    # of frame 1 is a speck; FRAME_2's 7x7 prediction stays.
    config = Config(data=DataConfig(min_sample_area=0.01))
    report = validate(make_task(config), lambda batch: logits[batch.tobytes()], batches)
    assert (report["samples_matched"], report["samples_predicted"],
            report["samples_labelled"]) == (3, 6, 6)
    # Multi-class data without a background class (CamVid) gets no sample scores.
    camvid = Config(model=ModelConfig(num_classes=3),
                    data=DataConfig(class_names=["Sky", "Road", "Car"]))
    report = validate(make_task(camvid),
                      lambda batch: one_hot_logits(predictions[:1], 3), batches[:1])
    assert not any(key.startswith("sample") for key in report)
