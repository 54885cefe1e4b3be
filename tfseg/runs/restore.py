"""A finished or interrupted training run, read back: its config and its latest weights."""

from pathlib import Path

import tensorflow as tf

from tfseg.config import load_config
from tfseg.models.from_config import (
    build_model,
    copy_weights,
    training_input_shape,
    uses_cascade,
)
from tfseg.runs.checkpoints import verified_checkpoints
from tfseg.utils.errors import TfsegError


def load_run(run_dir, checkpoint="latest"):
    """The config of `run_dir` and its float32 inference model at the latest checkpoint.

    Args:
        run_dir: str or Path. A `python -m tfseg.train` run directory.
        checkpoint: "latest", or "best": the checkpoint kept for the best validation score
            (`checkpoints/best`).

    Returns:
        (config, model): the run's `Config` and a `keras.Model` from raw pixels to logits
        (or upscaled pixels) at the config's frame size (super-resolution: any size).

    Raises:
        TfsegError: not a run (no config.yaml), no checkpoint yet, or a checkpoint that does
            not fit the model the config describes.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise TfsegError(f"{run_dir}: not a tfseg run (no config.yaml)")
    config = load_config(config_path)
    # The checkpoint holds the model as trained (crop size, ICNet's cascade outputs; SR: any
    # size); the inference model takes whole frames and returns the full-size output only.
    crop = tuple(config.data.augment.crop) or None
    trained = build_model(config, training_input_shape(config), for_training=True)
    restore_weights(run_dir, trained, f"the model of {config_path}", checkpoint)
    if not crop and not uses_cascade(config):
        return config, trained
    model = build_model(config)
    copy_weights(trained, model)
    return config, model


def restore_weights(run_dir, model, described, checkpoint="latest"):
    """Loads the latest checkpoint of run `run_dir` (`checkpoint` "best": the best one's)
    into `model` (a training model, as `tfseg.models.from_config.build_model(...,
    for_training=True)` builds it) and returns its path.

    Every variable of `model` must come from the checkpoint, so a checkpoint of another
    architecture is refused, not half-loaded.

    Raises:
        TfsegError: no checkpoint that verifies (`verified_checkpoints`), or one that does
            not fit `model` (`described` names it).
    """
    directory = Path(run_dir) / "checkpoints" / ("best" if checkpoint == "best" else "")
    verified, skipped = verified_checkpoints(directory, with_state=False)
    if not verified:
        raise TfsegError(f"{directory}: no checkpoint verifies ({'; '.join(skipped)})"
                         if skipped else f"{directory}: no checkpoint in this run yet")
    checkpoint_path = str(verified[-1][0])
    try:
        tf.train.Checkpoint(model=model).restore(
            checkpoint_path).expect_partial().assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError) as error:
        raise TfsegError(f"{checkpoint_path}: does not fit {described} "
                         f"({str(error).splitlines()[0]})") from None
    return checkpoint_path


def init_from_run(run_dir, config, model):
    """`train.init_from: RUN`: the latest weights of run `run_dir` into the training `model`
    of `config`. The run must have the same architecture, or be the per-frame `icnet` whose
    layers an `icnet_temporal` of the same width, classes and channels shares: then every
    layer but the GRU starts from the run (a printed line names the new ones). Returns the
    checkpoint's path.

    Raises:
        TfsegError: not a run, no checkpoint that verifies, or weights that do not fit.
    """
    config_path = Path(run_dir) / "config.yaml"
    described = "the model of this config (train.init_from)"
    if not config_path.is_file() or config.model.name != "icnet_temporal":
        return restore_weights(run_dir, model, described)
    source = load_config(config_path)
    if source.model.name != "icnet":
        return restore_weights(run_dir, model, described)
    shared = ("num_classes", "input_channels", "options")
    differing = [key for key in shared
                 if getattr(source.model, key) != getattr(config.model, key)]
    if differing:
        raise TfsegError(f"{config_path}: its icnet differs from this icnet_temporal in "
                         f"model.{', model.'.join(differing)}; train.init_from needs the "
                         f"same width, classes and channels")
    trained = build_model(source, training_input_shape(source), for_training=True)
    checkpoint = restore_weights(run_dir, trained, f"the model of {config_path}")
    fresh = copy_weights(trained, model, partial=True)
    print(f"tfseg: {', '.join(fresh)} start from their initial values (the per-frame "
          f"icnet of {run_dir} has no such layers)")
    return checkpoint
