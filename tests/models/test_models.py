"""Every model: logits at the input size for odd and even sizes, inference mode honoured,
parameter counts equal to the reference architectures (../shared/reference/MODELS.md)."""

import keras
import numpy as np
import pytest

from tfseg import models


def trainable_parameters(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


@pytest.mark.parametrize("name", sorted(models.MODEL_BUILDERS))
@pytest.mark.parametrize("size", [(64, 64), (45, 77)])
def test_output_size_equals_input_size(name, size):
    model = models.build(name, num_classes=3, input_shape=size, input_channels=1)
    x = np.random.default_rng(0).normal(size=(2, *size, 1)).astype(np.float32)
    assert model(x, training=False).shape == (2, *size, 3)


@pytest.mark.parametrize("name", sorted(models.MODEL_BUILDERS))
def test_call_without_training_flag_is_inference(name):
    model = models.build(name, num_classes=2, input_shape=(64, 64), input_channels=1,
                         mean=[10.0], std=[5.0])
    # Move batch-norm statistics away from their initial values so modes differ.
    for layer in models.all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.3, np.float32))
    x = np.random.default_rng(0).uniform(0, 40, size=(2, 64, 64, 1)).astype(np.float32)
    inference = model(x, training=False).numpy()
    np.testing.assert_allclose(model(x).numpy(), inference, atol=1e-5)
    assert np.abs(model(x, training=True).numpy() - inference).max() > 1e-3


@pytest.mark.parametrize("name,options,expected", [
    # LinkNet, 12 CamVid classes: 11,534,796 (paper: 11.5 M).
    ("linknet", dict(num_classes=12, input_shape=(360, 480), input_channels=3), 11_534_796),
    # FCN-ResNet18, 1 channel, 2 classes: 11,464,838 counted with the seed's unused ResNet
    # classifier (512 x 2 + 2 = 1,026 parameters), which this model rightly omits.
    ("fcn_resnet18", dict(num_classes=2, input_shape=(768, 128), input_channels=1),
     11_464_838 - 1_026),
])
def test_parameter_count_matches_reference(name, options, expected):
    assert trainable_parameters(models.build(name, **options)) == expected


def test_fcn_upsampling_starts_bilinear_and_can_be_frozen():
    model = models.build("fcn_resnet18", num_classes=2, input_shape=(64, 64),
                         input_channels=1, trainable_upsampling=False)
    layer = model.get_layer("fcn_resnet18_upsample")
    kernel = layer.get_weights()[0]
    assert not layer.trainable
    assert kernel[:, :, 0, 1].max() == 0 and kernel[7, 7, 0, 0] == kernel.max()


def test_unknown_option_suggests_the_closest():
    with pytest.raises(ValueError, match="has no option 'stm'; did you mean 'stem'"):
        models.build("fcn_resnet18", num_classes=2, input_shape=(64, 64), stm="small")
