"""The task of a config: what differs between training a segmenter and a super-resolution
network (loss, running statistics of a training step, validation scores, TensorBoard panels).

The training loop (`tfseg.training.loop`) is one loop for both, and `tfseg.tasks.validation`
one validation; they ask `make_task(config)` for these pieces (`config.model.task`, from
`tfseg.config.schema.MODEL_TASKS`, says which). Step statistics are tensors summed over
replicas and steps (a confusion matrix, or PSNR sums), so one `scores(total)` call turns any
span of steps into figures.
"""

from tfseg.tasks.segmentation import SegmentationTask
from tfseg.tasks.super_resolution import SuperResolutionTask


TASKS = {"segmentation": SegmentationTask, "super_resolution": SuperResolutionTask}


def make_task(config):
    """The `SegmentationTask` or `SuperResolutionTask` of `config` (build it in the
    distribution strategy's scope: the perceptual loss and the augmentation hold variables)."""
    return TASKS[config.model.task](config)
