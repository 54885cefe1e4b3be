"""Where and how a run computes: the `tf.distribute` strategy of `train.strategy`, which
process is the chief, and the precision `train.mixed_precision` means on this machine."""

import tensorflow as tf

from tfseg.utils.hardware import resolve_precision


def make_strategy(name):
    """The tf.distribute strategy for `train.strategy` ("multi_worker" reads TF_CONFIG)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy):
    """Whether this process writes the run's logs, metrics and exports: the only process,
    or the chief of a TF_CONFIG cluster (worker 0 when the cluster names no chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if "chief" in resolver.cluster_spec().jobs:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def precision_of(train_config):
    """The `tfseg.utils.hardware.Precision` of `train_config.mixed_precision` on this machine: the
    Keras dtype policy ("auto" decided from the hardware) and why; mixed_float16's loss
    scaling needs the default strategy."""
    return resolve_precision(train_config.mixed_precision,
                             float16=train_config.strategy == "default")
