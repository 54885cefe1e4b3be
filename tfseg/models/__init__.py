"""Model zoo: `build(name, ...)` returns a Keras functional model mapping raw pixels to logits
(segmentation) or to upscaled pixels (super-resolution).

Input normalisation lives inside the model, so training, evaluation and every exported runtime
are fed the same raw pixel values.
"""

import difflib
import inspect

import keras
import numpy as np

from tfseg.config.schema import MODEL_TASKS
from tfseg.models.clips import with_preprocessing
from tfseg.models.fcn import build_fcn32_vgg16, build_fcn_resnet18
from tfseg.models.icnet import build_icnet
from tfseg.models.icnet_temporal import build_icnet_temporal
from tfseg.models.linknet import build_linknet
from tfseg.models.sr_johnson import build_sr_johnson

MODEL_BUILDERS = {
    "fcn32_vgg16": build_fcn32_vgg16,
    "fcn_resnet18": build_fcn_resnet18,
    "icnet": build_icnet,
    "icnet_temporal": build_icnet_temporal,
    "linknet": build_linknet,
    "sr_johnson": build_sr_johnson,
}
# By task, as `tfseg.config.schema.MODEL_TASKS` says.
SEGMENTATION_MODELS = {name: builder for name, builder in MODEL_BUILDERS.items()
                       if MODEL_TASKS[name] == "segmentation"}
SUPER_RESOLUTION_MODELS = {name: builder for name, builder in MODEL_BUILDERS.items()
                           if MODEL_TASKS[name] == "super_resolution"}
_COMMON_ARGUMENTS = ("num_classes", "input_shape", "name")


def model_options(name):
    """The architecture-specific keyword options of model `name` (beyond the common ones)."""
    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; available: {sorted(MODEL_BUILDERS)}")
    parameters = inspect.signature(MODEL_BUILDERS[name]).parameters
    return [p for p in parameters if p not in _COMMON_ARGUMENTS]


def check_options(name, options):
    """Raises ValueError naming an option `name` does not take, and the closest one it does."""
    valid = model_options(name)
    for option in options:
        if option not in valid:
            close = difflib.get_close_matches(option, valid, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid options: {valid}"
            raise ValueError(f"model {name!r} has no option {option!r}{hint}")


def all_layers(model):
    """Every layer of `model`, descending into nested models (the backbone inside a network,
    the network inside the normalising wrapper)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def randomize_batch_norm(model, seed=0):
    """Moves every batch norm's statistics and affine weights away from their initial values,
    as a trained model's are: initial ones make every normalisation an identity, so an export
    that folds batch norm wrongly would still agree (export checks and benchmarks)."""
    rng = np.random.default_rng(seed)
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0.0, 0.3, shape).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, shape).astype(np.float32))
            layer.gamma.assign(rng.uniform(0.5, 1.5, shape).astype(np.float32))
            layer.beta.assign(rng.normal(0.0, 0.2, shape).astype(np.float32))


def build(name, *, input_shape=None, input_channels=3, num_classes=None, mean=None, std=None,
          **options):
    """Builds model `name` of `MODEL_BUILDERS`.

    Args:
        name: str. A key of `MODEL_BUILDERS`.
        input_shape: tuple. (H, W) of the input; None (or None entries) for a fully
            convolutional model where the architecture allows it (`sr_johnson`). Defaults
            to None.
        input_channels: int. 1 (grayscale) or 3 (RGB). Defaults to 3.
        num_classes: int. Output classes of a segmentation model (required for them; a
            super-resolution model takes `scale` instead).
        mean: list of float. Per-channel mean subtracted inside the model. Defaults to None
            (no normalisation layer).
        std: list of float. Per-channel standard deviation, used with `mean`.
        **options: architecture options (`model_options(name)` lists them).

    Returns:
        A `keras.Model` from (batch, H, W, input_channels) pixels to (batch, H, W, num_classes)
        logits, or for super-resolution to (batch, H x scale, W x scale, input_channels)
        pixels 0..255. A recurrent model (`tfseg.config.schema.RECURRENT_MODELS`) is its step
        model: inputs `pixels` (named `image` without `mean`) and `state`, in that order,
        and a dict of outputs with `"logits"` and the new `"state"` (see
        `tfseg.models.icnet_temporal`), its `recurrent_parts` normalising the frames alike.
    """
    check_options(name, options)
    if name in SEGMENTATION_MODELS:
        if num_classes is None:
            raise ValueError(f"model {name!r} segments: give num_classes")
        options["num_classes"] = num_classes
    elif num_classes is not None:
        raise ValueError(f"model {name!r} is a super-resolution network: it takes `scale`, "
                         f"not num_classes")
    shape = (*(input_shape or (None, None)), input_channels)
    network = MODEL_BUILDERS[name](input_shape=shape, **options)
    if mean is None:
        return network
    # A recurrent step model's other input, the state, passes through untouched.
    inputs = [keras.Input(shape=shape, name="pixels"),
              *(keras.Input(shape=tensor.shape[1:], name=tensor.name)
                for tensor in network.inputs[1:])]
    # Rescaling holds constants, which every exporter folds; Normalization's statistics are
    # variables that tf2onnx turns into extra graph inputs.
    scale = 1.0 / np.asarray(std, np.float32)
    x = keras.layers.Rescaling(scale=scale.tolist(),
                               offset=(-np.asarray(mean, np.float32) * scale).tolist(),
                               name="normalize")(inputs[0])
    if len(inputs) == 1:
        return keras.Model(inputs[0], network(x), name=f"{name}_model")
    model = keras.Model(inputs, network([x, *inputs[1:]]), name=f"{name}_model")
    # Its clip model (`tfseg.models.clips.build_clip_model`) normalises the frames alike.
    model.recurrent_parts = with_preprocessing(network.recurrent_parts, inputs[0], x)
    return model
