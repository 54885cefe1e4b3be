"""Sample-level scores: a microscopist counts samples, not pixels.

The samples of a frame are the 8-connected components of its foreground
(`cv2.connectedComponentsWithStats`), each as its bounding box (x, y, w, h) in pixels, the
`cv2.selectROI` convention of the labels. The same function gives the boxes of a prediction
and of a label mask, so both sides are cut into samples the same way: labelled boxes that
touch or overlap are one component of the label mask (the union of the boxes), hence one
sample with their joint bounding box, exactly as two touching predicted samples are one.
Validation data carries masks, not boxes (every data source, augmentation and cache works on
masks), so the labelled samples are taken from the mask rather than carried through the
pipeline; frames whose labelled boxes are apart (the usual case) are scored on exactly those
boxes.

A component smaller than `data.min_sample_area` (a fraction of the frame's pixels, the same
on both sides) is a speck, not a sample: it is left out of the counts and of `predict
--boxes`. The default, 1/2000 of the frame (8 pixels at 128x128), is below every labelled
sample of the default's held-out frames (samples cut by the border included) and above the
lone pixels a 128x128 prediction scatters (0.00006 of the frame each). As a fraction
the same speck counts alike whether a prediction is scored at the network's size or resized
to a 3072x3072 frame.

Predicted and labelled boxes are matched one to one at box IoU >= 0.5, greedily: all pairs
at or above the threshold, highest IoU first (ties: lower predicted, then labelled index),
each box used once, as PASCAL VOC and COCO match detections. (A maximum matching, the
Hungarian algorithm on the same pairs, can count more only where one box reaches IoU 0.5 with
two boxes of the other side, which overlap each other by half.) Precision = matched /
predicted, recall = matched / labelled, F1 = 2 matched / (predicted + labelled), from counts
summed over the data set, not averaged per frame; a ratio without a denominator is NaN.

Pure numpy and OpenCV: `tfseg.tasks.segmentation` scores validation with it, and
`tfseg.deploy.inference` (`python -m tfseg.predict --boxes`) writes the boxes it finds.
"""

import cv2
import numpy as np

MATCH_IOU = 0.5
BACKGROUND = "background"


def background_class(class_names):
    """The class id named "background" (any case) in `class_names`, or None: sample scores
    need a background, whose complement (every other class) is the samples' foreground."""
    names = [str(name).lower() for name in class_names]
    return names.index(BACKGROUND) if BACKGROUND in names else None


def foreground(class_ids, background_id, ignore_label=None):
    """bool (H, W): pixels of any class but `background_id` (and not `ignore_label`)."""
    class_ids = np.asarray(class_ids)
    selected = class_ids != background_id
    if ignore_label is not None:
        selected &= class_ids != ignore_label
    return selected


def component_boxes(mask, *, ignored=None, min_area=0.0):
    """Bounding boxes (x, y, w, h) of the 8-connected components of a boolean (H, W) mask,
    in OpenCV's labelling order (by first pixel, row by row).

    Args:
        mask: bool or 0/1 (H, W) array: the foreground.
        ignored: optional bool (H, W): a component lying wholly on these pixels (unlabelled
            ones) is left out.
        min_area: float in [0, 1]: components of fewer pixels than this fraction of H x W
            are left out (specks; module docstring).

    Returns:
        list of (x, y, w, h) tuples of int.
    """
    mask = np.asarray(mask)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area * mask.size
    if ignored is not None and np.any(ignored):
        keep &= (np.bincount(labels[np.asarray(ignored, bool)], minlength=count)
                 < stats[:, cv2.CC_STAT_AREA])
    return [tuple(int(v) for v in stats[index, :4]) for index in range(1, count)
            if keep[index]]


def _intersections_and_unions(first, second):
    """int64 (len(first), len(second)) pixel intersections and unions of two box lists."""
    a = np.asarray(first, np.int64).reshape(-1, 1, 4)
    b = np.asarray(second, np.int64).reshape(1, -1, 4)
    width = np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - np.maximum(
        a[..., 0], b[..., 0])
    height = np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - np.maximum(
        a[..., 1], b[..., 1])
    intersection = np.maximum(width, 0) * np.maximum(height, 0)
    return intersection, a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - intersection


def match_boxes(predicted, labelled, threshold=MATCH_IOU):
    """One-to-one greedy matching at box IoU >= `threshold` (module docstring).

    Returns:
        list of (predicted index, labelled index) pairs, highest IoU first.
    """
    if not len(predicted) or not len(labelled):
        return []
    intersection, union = _intersections_and_unions(predicted, labelled)
    # intersection >= threshold x union, not IoU >= threshold: no rounding at the edge
    # (for 0.5 the product is exact).
    eligible = (intersection >= threshold * union) & (intersection > 0)
    ious = intersection / np.maximum(union, 1)
    rows, columns = np.nonzero(eligible)
    order = np.lexsort((columns, rows, -ious[rows, columns]))
    used_predicted, used_labelled, pairs = set(), set(), []
    for row, column in zip(rows[order].tolist(), columns[order].tolist()):
        if row not in used_predicted and column not in used_labelled:
            used_predicted.add(row)
            used_labelled.add(column)
            pairs.append((row, column))
    return pairs


class SampleCounts:
    """Matched, predicted and labelled samples summed frame by frame, and their scores;
    components under `min_area` of the frame (a fraction) are specks on either side."""

    def __init__(self, threshold=MATCH_IOU, min_area=0.0):
        self.threshold, self.min_area = threshold, min_area
        self.matched = self.predicted = self.labelled = 0

    def add_boxes(self, predicted, labelled):
        """Adds one frame's boxes; returns its matched (predicted, labelled) index pairs."""
        pairs = match_boxes(predicted, labelled, self.threshold)
        self.matched += len(pairs)
        self.predicted += len(predicted)
        self.labelled += len(labelled)
        return pairs

    def add_masks(self, predicted, labelled, ignored=None):
        """Adds one frame from boolean (H, W) foregrounds: the predicted one and the label
        mask's (`ignored`: unlabelled pixels, where predicted samples are not counted)."""
        return self.add_boxes(
            component_boxes(predicted, ignored=ignored, min_area=self.min_area),
            component_boxes(labelled, min_area=self.min_area))

    def result(self):
        """{"sample_precision", "sample_recall", "sample_f1" (float, NaN without a
        denominator), "samples_matched", "samples_predicted", "samples_labelled" (int)}."""
        def ratio(numerator, denominator):
            return numerator / denominator if denominator else float("nan")

        return {"sample_precision": ratio(self.matched, self.predicted),
                "sample_recall": ratio(self.matched, self.labelled),
                "sample_f1": ratio(2 * self.matched, self.predicted + self.labelled),
                "samples_matched": self.matched, "samples_predicted": self.predicted,
                "samples_labelled": self.labelled}


def format_sample_scores(scores, min_area):
    """One line of a report's sample scores (`SampleCounts.result`, counted with `min_area`),
    as evaluate prints it."""
    components = (f"components of at least {min_area:g} of the frame" if min_area
                  else "every component")
    return (f"samples ({components} as boxes, matched at box IoU >= {MATCH_IOU}): "
            f"{scores['samples_labelled']} labelled, {scores['samples_predicted']} predicted, "
            f"{scores['samples_matched']} matched; precision {scores['sample_precision']:.4f}, "
            f"recall {scores['sample_recall']:.4f}, F1 {scores['sample_f1']:.4f}")
