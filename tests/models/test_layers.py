"""The fused batch norm is Keras's batch norm, computed by one TensorFlow kernel."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfseg.models.layers import FusedBatchNormalization


def pair(**options):
    """A Keras batch norm and a fused one with the same, non-trivial weights."""
    keras_bn = keras.layers.BatchNormalization(**options)
    fused = FusedBatchNormalization(**options)
    rng = np.random.default_rng(0)
    for layer in (keras_bn, fused):
        layer.build((None, 6, 5, 4))
    weights = [rng.uniform(0.5, 2.0, w.shape).astype(np.float32) for w in keras_bn.weights]
    keras_bn.set_weights(weights)
    fused.set_weights(weights)
    return keras_bn, fused


def run(layer, x, training):
    """Outputs, the gradients of a weighted sum of them (input and trainable weights), and
    the moving statistics after the call."""
    x = tf.constant(x)
    weights = tf.constant(np.random.default_rng(1).normal(size=x.shape), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = layer(x, training=training)
        total = tf.reduce_sum(tf.cast(outputs, tf.float32) * weights)
    gradients = tape.gradient(total, [x, *layer.trainable_weights])
    return [np.asarray(outputs, np.float32),
            *(np.asarray(g) for g in gradients),
            layer.moving_mean.numpy(), layer.moving_variance.numpy()]


@pytest.mark.parametrize("options", [{}, {"momentum": 0.9, "epsilon": 1e-5},
                                     {"center": False, "scale": False}])
@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_norm_matches_keras(options, training):
    x = np.random.default_rng(2).normal(3.0, 2.0, (3, 6, 5, 4)).astype(np.float32)
    keras_bn, fused = pair(**options)
    for expected, actual in zip(run(keras_bn, x, training), run(fused, x, training),
                                strict=True):
        np.testing.assert_allclose(actual, expected, rtol=2e-4, atol=2e-5)


def test_fused_batch_norm_is_one_op_each_way():
    _, fused = pair()
    x = tf.random.normal((2, 6, 5, 4))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fused(x, training=True)
        return tape.gradient(y, x)

    ops = [op.type for op in step.get_concrete_function(x).graph.get_operations()]
    assert ops.count("FusedBatchNormV3") == 1 and ops.count("FusedBatchNormGradV3") == 1
    assert "Mean" not in ops and "SquaredDifference" not in ops


def test_fused_batch_norm_under_bfloat16_keeps_float32_statistics():
    x = np.random.default_rng(3).normal(3.0, 2.0, (3, 6, 5, 4)).astype(np.float32)
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        keras_bn, fused = pair()
        expected, actual = run(keras_bn, x, True), run(fused, x, True)
        assert fused(x, training=False).dtype == tf.bfloat16
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    for e, a in zip(expected[-2:], actual[-2:], strict=True):   # moving statistics
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(actual[0], expected[0], atol=0.05)   # bf16 outputs


def test_fused_batch_norm_survives_a_keras_file(tmp_path):
    inputs = keras.Input((6, 5, 4))
    model = keras.Model(inputs, FusedBatchNormalization(name="bn")(inputs))
    model.save(tmp_path / "bn.keras")
    loaded = keras.saving.load_model(tmp_path / "bn.keras")
    assert isinstance(loaded.get_layer("bn"), FusedBatchNormalization)
