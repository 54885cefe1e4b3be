"""Test-time augmentation of a segmentation model: each frame also run flipped (and
transposed), each view's class probabilities mapped back onto the frame and averaged.

A network's errors differ from view to view while the scene does not, so the average is
more often right: the default recipe's three seeds gained 0.023-0.034 foreground IoU from
the 8 views (docs/benchmarks.md, session 19). Views are made of the network input, after preprocessing:
where it holds the fringe phase's slopes (`data.preprocess.phase_gradient`), a flip negates
the slope along its axis and a transpose swaps the two, so that every view is a physical
frame (as `tfseg.data.augment` does in training). Validation, `tfseg.evaluate` and
`tfseg.predict` run the views their recipe or export names (`data.augment.test_time`,
metadata "test_time"); `tools/opencv_segment.py` repeats this in numpy, held equal by a test.
"""

import itertools

import numpy as np

# Views of each kind, as (transpose, flip rows, flip columns); the identity first.
VIEWS = {
    "none": [(False, False, False)],
    "flips": [(False, flip_rows, flip_columns)
              for flip_rows, flip_columns in itertools.product((False, True), repeat=2)],
    "flips_and_transpose": list(itertools.product((False, True), repeat=3)),
}


def view_of(images, view, slope_channels=None):
    """NHWC `images` as seen in `view` (transposed first, then flipped); the slope channels
    (x, y), if any, swapped by the transpose and negated along each flipped axis."""
    transpose, flip_rows, flip_columns = view
    images = np.asarray(images, np.float32)
    if transpose:
        images = images.transpose(0, 2, 1, 3)
    images = images[:, ::-1 if flip_rows else 1, ::-1 if flip_columns else 1]
    if slope_channels is None:
        return np.ascontiguousarray(images)
    x_channel, y_channel = slope_channels
    order = list(range(images.shape[-1]))
    if transpose:
        order[x_channel], order[y_channel] = y_channel, x_channel
    signs = np.ones(images.shape[-1], np.float32)
    signs[x_channel] = -1.0 if flip_columns else 1.0
    signs[y_channel] = -1.0 if flip_rows else 1.0
    return np.ascontiguousarray(images[..., order] * signs)


def back_from(outputs, view):
    """Per-pixel NHWC `outputs` of a view mapped back onto the frame (`view_of` undone)."""
    transpose, flip_rows, flip_columns = view
    outputs = outputs[:, ::-1 if flip_rows else 1, ::-1 if flip_columns else 1]
    return outputs.transpose(0, 2, 1, 3) if transpose else outputs


def averaged_logits(predict, images, kind, slope_channels=None):
    """The log of the class probabilities of `predict` (NHWC images -> NHWC logits) averaged
    over the views of `kind`: logits whose softmax is that average and whose argmax is the
    views' vote by probability."""
    views = VIEWS[kind]
    total = 0.0
    for view in views:
        logits = np.asarray(predict(view_of(images, view, slope_channels)), np.float32)
        logits = back_from(logits - logits.max(axis=-1, keepdims=True), view)
        probabilities = np.exp(logits)
        total = total + probabilities / probabilities.sum(axis=-1, keepdims=True)
    return np.log(np.maximum(total / len(views), np.finfo(np.float32).tiny))


def averaging_predictor(predict, kind, slope_channels=None):
    """`predict` itself for "none", else a callable with its signature returning
    `averaged_logits`."""
    if kind == "none":
        return predict
    return lambda images: averaged_logits(predict, images, kind, slope_channels)
