"""The model a `Config` describes: built for training (crop size, ICNet's cascade outputs) or
for inference and export (whole frames, the full-size output only), in a given precision."""

import contextlib

import keras

from tfseg.models import all_layers, build
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


def uses_cascade(config):
    """Whether training uses ICNet's cascade outputs and label guidance."""
    return config.model.name == "icnet" and config.train.cascade != "off"


def build_model(config, input_shape=None, *, for_training=False):
    """The configured model, taking raw pixels (normalisation inside), for frames of
    `input_shape` (H, W); defaults to the data's size (super-resolution: the LR size the
    export uses). `for_training` adds the outputs the training loss needs (ICNet's cascade
    levels); inference and export models have only the full-size output.

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
        return build(config.model.name,
                     input_shape=input_shape or (config.data.height, config.data.width),
                     input_channels=config.model.input_channels,
                     mean=config.data.mean, std=config.data.std, **options)
    except ValueError as error:
        raise ConfigError(f"model.options: {error}") from None


def training_input_shape(config):
    """(H, W) of the model as trained: the crop size, or the frame size (None); (None, None)
    for super-resolution."""
    if config.model.task == "super_resolution":
        return (None, None)   # fully convolutional: trained on patches, validated on images
    return config.data.augment.crop or None


def copy_weights(source, target):
    """Copies every weight of `target` from the layer of the same name in `source` (models
    whose layers match by name but not by position, e.g. ICNet with and without its cascade
    outputs)."""
    layers = {layer.name: layer for layer in all_layers(source)}
    for layer in all_layers(target):
        if layer.weights and not isinstance(layer, keras.Model):
            layer.set_weights(layers[layer.name].get_weights())


def float32_copy(model, config):
    """The same network built in float32, holding `model`'s trained weights."""
    with dtype_policy("float32"):
        copy = build_model(config, (None, None) if config.model.task == "super_resolution"
                           else None)
    copy.set_weights(model.get_weights())
    return copy
