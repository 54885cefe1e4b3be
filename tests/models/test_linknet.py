"""LinkNet's width option: every hidden layer narrows by the same factor, the logits do not."""

import keras
import pytest

from tfseg.models.linknet import build_linknet


def conv_channels(model):
    """{layer name: output channels} of every convolution, nested encoder included."""
    channels = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            channels.update(conv_channels(layer))
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            channels[layer.name] = layer.filters
    return channels


def test_half_width_halves_every_hidden_convolution():
    full = conv_channels(build_linknet(num_classes=3, input_shape=(64, 64, 1)))
    half = conv_channels(build_linknet(num_classes=3, input_shape=(64, 64, 1), width=0.5))
    assert full.keys() == half.keys() and len(full) > 30
    assert half.pop("linknet_logits") == full.pop("linknet_logits") == 3
    assert {name: filters // 2 for name, filters in full.items()} == half


def test_half_width_quarters_the_parameters():
    full = build_linknet(num_classes=2, input_shape=(64, 64, 1)).count_params()
    half = build_linknet(num_classes=2, input_shape=(64, 64, 1), width=0.5).count_params()
    assert half / full == pytest.approx(0.25, abs=0.01)


def test_unsupported_width_is_refused():
    with pytest.raises(ValueError, match=r"`width` must be one of \[1.0, 0.5\]"):
        build_linknet(num_classes=2, input_shape=(64, 64, 1), width=0.75)
