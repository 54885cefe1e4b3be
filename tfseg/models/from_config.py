"""The model a `Config` describes: built for training (crop size, ICNet's cascade outputs, a
recurrent model unrolled over clips) or for inference and export (whole frames, the full-size
output only, a recurrent model's single step), in a given precision."""

import contextlib

import keras

from tfseg.config.schema import RECURRENT_MODELS
from tfseg.models import all_layers, build
from tfseg.models.clips import build_clip_model
from tfseg.utils.errors import ConfigError


@contextlib.contextmanager
def dtype_policy(name):
    """Builds layers under Keras dtype policy `name` (e.g. "float32"), then restores it."""
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


CASCADE_MODELS = ("icnet", "icnet_temporal")


def uses_cascade(config):
    """Whether training uses ICNet's cascade outputs and label guidance (ICNet and its
    recurrent version)."""
    return config.model.name in CASCADE_MODELS and config.train.cascade != "off"


def is_recurrent(config):
    """Whether the configured model carries a state from frame to frame
    (`tfseg.config.schema.RECURRENT_MODELS`): trained on clips, run one step per frame."""
    return config.model.name in RECURRENT_MODELS


def build_model(config, input_shape=None, *, for_training=False):
    """The configured model, taking raw pixels (normalisation inside), for frames of
    `input_shape` (H, W); defaults to the data's size (super-resolution: the LR size the
    export uses). `for_training` adds the outputs the training loss needs (ICNet's cascade
    levels); inference and export models have only the full-size output.

    A recurrent model (`is_recurrent`) is, for inference and export, its step model: inputs
    `pixels` (B, H, W, C) and `state` (B, h, w, S), outputs a dict with `"logits"` and the
    new `"state"` (start from zeros; `tfseg.models.icnet_temporal.state_shape` gives
    (h, w, S)). For training it is that step unrolled over clips
    (`tfseg.models.clips.build_clip_model`, its frame-wise parts batched over the B x T
    frames, so batch norm trains on all of them): input `clip` (B, T, H, W, C) with
    T = `data.clips.length`, outputs every step output stacked over the T - `data.clips.warmup`
    trained frames, (B, T - warmup, ...); the state output is for inspection, not for a loss.

    Raises:
        ConfigError: `model.options` names an option the model lacks or a bad value.
    """
    options = dict(config.model.options)
    if uses_cascade(config):
        options["cascade_outputs"] = for_training
    if config.model.task == "super_resolution":
        options["scale"] = config.model.scale
    else:
        options["num_classes"] = config.model.num_classes
    try:
        model = build(config.model.name,
                      input_shape=input_shape or (config.data.height, config.data.width),
                      input_channels=config.model.input_channels,
                      mean=config.data.mean, std=config.data.std, **options)
    except ValueError as error:
        raise ConfigError(f"model.options: {error}") from None
    if for_training and is_recurrent(config):
        return build_clip_model(model, config.data.clips.length, config.data.clips.warmup)
    return model


def training_input_shape(config):
    """(H, W) of the model as trained: the crop size, or the frame size (None); (None, None)
    for super-resolution."""
    if config.model.task == "super_resolution":
        return (None, None)   # fully convolutional: trained on patches, validated on images
    return config.data.augment.crop or None


def copy_weights(source, target, *, partial=False):
    """Copies every weight of `target` from the layer of the same name in `source` (models
    whose layers match by name but not by position, e.g. ICNet with and without its cascade
    outputs, a recurrent model's clip and step models, or a per-frame ICNet into
    `icnet_temporal`, whose layers it shares).

    Args:
        source: keras.Model. The model whose weights are copied.
        target: keras.Model. The model receiving them.
        partial: bool. False: every `target` layer with weights must exist in `source`.
            True: layers `source` lacks keep their weights (e.g. the new GRU of an
            `icnet_temporal` initialised from an ICNet). Defaults to False.

    Returns:
        The names of the `target` layers left as they were (empty unless `partial`).

    Raises:
        ValueError: a layer of `target` is missing from `source` (and not `partial`).
    """
    layers = {layer.name: layer for layer in all_layers(source)}
    targets = [layer for layer in all_layers(target)
               if layer.weights and not isinstance(layer, keras.Model)]
    missing = [layer.name for layer in targets if layer.name not in layers]
    if missing and not partial:
        raise ValueError(f"{source.name} lacks layers of {target.name}: {missing}")
    for layer in targets:
        if layer.name in layers:
            layer.set_weights(layers[layer.name].get_weights())
    return missing


def float32_copy(model, config):
    """The same network built in float32, holding `model`'s trained weights (for a recurrent
    model trained on clips: its step model)."""
    with dtype_policy("float32"):
        copy = build_model(config, (None, None) if config.model.task == "super_resolution"
                           else None)
    copy.set_weights(model.get_weights())
    return copy
