"""A recurrent ICNet for image sequences (issue 21): ICNet with a convolutional GRU on its
1/32 branch, after the pyramid pooling, so the coarsest features carry a state from frame to
frame.

Interferogram sequences have a fixed optical background and moving samples; a state lets the
network tell them apart over time. The pyramid pooling keeps ICNet's global context within a
frame, the GRU adds memory across frames, and its new state is what the first cascade feature
fusion reads (in place of the pyramid pooling's output).

`build_icnet_temporal` returns the STEP model, one frame per call:
    {"image": (B, H, W, C), "state": (B, h, w, S)} -> {"logits": (B, H, W, K), "state": new}
with (h, w, S) = `state_shape((H, W), width)`. A zero state is the initial state. Training
runs the step over clips (`tfseg.models.clips.build_clip_model`), ICNet's frame-wise encoder
and decoder once on all the clips' frames and only the GRU frame after frame; streaming
inference and export call the step model and feed `"state"` back in.
"""

import math

import keras

from tfseg.models.clips import RecurrentParts, build_step_model
from tfseg.models.icnet import (
    OUTPUT_STRIDE,
    apply_icnet_decoder,
    apply_icnet_encoder,
    check_icnet_arguments,
    pyramid_channels,
)
from tfseg.models.recurrent import ConvGRUCell

# Layers shared with ICNet carry `build_icnet`'s default names, so a trained per-frame ICNet's
# weights copy into this model by layer name (`tfseg.models.from_config.copy_weights`).
ICNET_NAME = "icnet"


def state_shape(input_shape, width=1.0):
    """The state of `build_icnet_temporal` for frames of `input_shape`, without the batch.

    Args:
        input_shape: tuple. (H, W) or (H, W, C) of the frames.
        width: float. The model's `width`. Defaults to 1.0.

    Returns:
        (h, w, S): ceil(H / 32), ceil(W / 32) (the 1/32 grid of the input padded to a
        multiple of 32) and S = 256 x `width` (the pyramid pooling's output channels).
    """
    height, frame_width = input_shape[:2]
    return (math.ceil(height / OUTPUT_STRIDE), math.ceil(frame_width / OUTPUT_STRIDE),
            pyramid_channels(width))


def build_icnet_temporal(*, num_classes, input_shape, width=1.0, cascade_outputs=False,
                         gru_kernel=3, backbone_weights=None, name="icnet_temporal"):
    """The step model of a recurrent ICNet: one frame and the state in, logits and the new
    state out.

    ICNet (`tfseg.models.icnet.build_icnet`) with a `ConvGRUCell` of S = 256 x `width`
    channels on the pyramid pooling's output: new_state = GRU(ppm, state) feeds the 1/16
    cascade feature fusion. Every other layer is ICNet's, named as in `build_icnet` with its
    default name "icnet" (e.g. "icnet_cff16_coarse_conv"), so a trained ICNet initialises this
    model by `copy_weights(icnet, model, partial=True)`; only the GRU, named f"{name}_gru",
    is new. The step is composed of three parts (`tfseg.models.clips.RecurrentParts`, its
    `recurrent_parts`): the encoder f"{name}_encoder" (frame -> `"sub1"`, `"sub2"`,
    `"sub4"`), the GRU on `"sub4"`, and the decoder f"{name}_decoder" (`"state"`, `"sub2"`,
    `"sub1"` -> the logits), so a clip model runs the encoder and decoder batched over frames.

    Args:
        num_classes: int. Number of output classes.
        input_shape: tuple. Static (H, W, C) of one frame.
        width: float. ICNet's width, 1.0 or 0.5. Defaults to 1.0.
        cascade_outputs: bool. Adds ICNet's `"logits_4"`, `"logits_8"`, `"logits_16"`
            outputs (as `build_icnet`). Defaults to False.
        gru_kernel: int. Odd kernel size of the GRU's gate convolutions. Defaults to 3.
        backbone_weights: str or None. Local ImageNet weights for the trunk (as
            `build_icnet`). Defaults to None.
        name: str. Model name, and prefix of the GRU's layer name. Defaults to
            "icnet_temporal".

    Returns:
        A `keras.Model` with inputs `image` (B, H, W, C) and `state` (B, h, w, S), in that
        order, where (h, w, S) = `state_shape(input_shape, width)`, returning a dict:
        `"logits"` (B, H, W, num_classes), `"state"` (B, h, w, S) (feed it to the next
        frame; start from zeros), and with `cascade_outputs` the cascade levels.

    Raises:
        ValueError: an argument is invalid.

    Example:
        >>> model = build_icnet_temporal(num_classes=2, input_shape=(64, 64, 1), width=0.5)
        >>> state = np.zeros((1, *state_shape((64, 64), 0.5)))
        >>> outputs = model({"image": np.zeros((1, 64, 64, 1)), "state": state},
        ...                 training=False)
        >>> outputs["logits"].shape, outputs["state"].shape
        (TensorShape([1, 64, 64, 2]), TensorShape([1, 2, 2, 128]))
    """
    check_icnet_arguments(num_classes, input_shape, width, cascade_outputs)
    if (not isinstance(gru_kernel, int) or isinstance(gru_kernel, bool) or gru_kernel < 1
            or gru_kernel % 2 == 0):
        raise ValueError(f"`gru_kernel` must be a positive odd integer; received "
                         f"gru_kernel={gru_kernel!r}")
    image = keras.Input(shape=input_shape, name="image")
    features = apply_icnet_encoder(image, width=width, backbone_weights=backbone_weights,
                                   name=ICNET_NAME)
    pad = features.pop("pad")
    encoder = keras.Model(image, features, name=f"{name}_encoder")
    # The decoder reads the new state where ICNet's reads the pyramid pooling's output.
    decoder_inputs = {"state": keras.Input(shape=state_shape(input_shape, width), name="state"),
                      **{key: keras.Input(shape=features[key].shape[1:], name=key)
                         for key in ("sub2", "sub1")}}
    outputs = apply_icnet_decoder(decoder_inputs["state"], decoder_inputs["sub2"],
                                  decoder_inputs["sub1"], pad=pad,
                                  num_classes=num_classes, input_shape=input_shape,
                                  cascade_outputs=cascade_outputs, name=ICNET_NAME)
    decoder = keras.Model(decoder_inputs, outputs, name=f"{name}_decoder")
    cell = ConvGRUCell(pyramid_channels(width), gru_kernel, name=f"{name}_gru")
    parts = RecurrentParts(encoder, cell, decoder, cell_input="sub4")
    return build_step_model(parts, state_shape(input_shape, width), name)
