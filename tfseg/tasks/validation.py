"""One validation for both tasks, used by the training loop every epoch and by
`python -m tfseg.evaluate`: the same scores, computed by the same code, whichever runs the
model (Keras while training; Keras, a SavedModel, onnxruntime or OpenCV DNN in evaluate)."""

import numpy as np


def validate(task, predict, batches, *, samples=0):
    """Every validation score of the model behind `predict` on `batches`.

    Args:
        task: the `SegmentationTask` or `SuperResolutionTask` of the run (its loss and
            scores; `tfseg.tasks.factory.make_task`).
        predict: callable. float32 (N, H, W, C) raw pixels -> numpy outputs (logits, or SR
            pixels), e.g. a `tfseg.deploy.runtimes.Runtime`. For a recurrent model, the N
            frames of one sequence in order -> their outputs, the state carried from zeros
            (e.g. `tfseg.training.recurrent.sequence_predictor`).
        batches: iterable of (inputs, targets): images and masks, or LR and HR images; for a
            recurrent model, whole sequences, images (B, N, H, W, C) and masks (B, N, H, W)
            (`tfseg.data.pipeline`'s clip mode): each sequence goes to `predict` on its own
            and every one of its frames is scored as a frame of a per-frame model.
            The task may run it on several views of each batch (`task.predictor`).
        samples: int. Panels of the first `samples` frames are returned too.

    Returns:
        dict of scores (`SegmentationScores.result`, `SuperResolutionScores.result`), with
        "panels", uint8 (N, H, W, 3), when `samples` > 0.
    """
    scores, predict = task.validation_scores(samples), task.predictor(predict)
    for inputs, targets in batches:
        inputs, targets = np.asarray(inputs, np.float32), np.asarray(targets)
        for frames, frame_targets in (zip(inputs, targets) if inputs.ndim == 5
                                      else [(inputs, targets)]):
            scores.update(frames, frame_targets, np.asarray(predict(frames)))
    return scores.result()
