"""Small building blocks shared by every architecture: conv + batch norm (+ ReLU), and the
static pad/crop that lets stride-constrained networks accept any input size."""

import keras
import numpy as np
import tensorflow as tf

# PyTorch-like batch-norm constants: the seeds' reference models were trained with them, and
# momentum 0.9 lets the moving statistics settle within a short run.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="tfseg")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Keras batch norm whose training pass is TensorFlow's fused kernel.

    Keras 3 normalises in training with separate moment, subtract, multiply... ops and as many
    in the gradient (about 40 ops a layer); `FusedBatchNormV3` is one op forward and one
    backward. On 2 CPU cores that halved the forward-and-backward pass of the default
    half-width LinkNet (docs/benchmarks.md). The result is Keras's: same normalisation
    (biased batch variance), same moving-statistics update, same variables; inference,
    masks, renorm and synchronised (multi-replica) statistics keep Keras's own code.
    """

    def call(self, inputs, training=None, mask=None):
        keras_only = (mask is not None or self.renorm or self.synchronized
                      or len(inputs.shape) != 4 or self.axis not in (-1, 3))
        if keras_only or not (training and self.trainable):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)   # as Keras: statistics in float32 under bf16/fp16
        ones, zeros = tf.ones(x.shape[-1:]), tf.zeros(x.shape[-1:])
        outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=tf.cast(self.gamma, tf.float32) if self.scale else ones,
            offset=tf.cast(self.beta, tf.float32) if self.center else zeros,
            mean=zeros, variance=ones, epsilon=self.epsilon, data_format="NHWC",
            is_training=True)
        # The fused op returns the Bessel-corrected variance; Keras averages the biased one.
        count = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
            moving.assign(moving * self.momentum + batch * (1.0 - self.momentum))
        return tf.cast(outputs, self.compute_dtype)


def batch_norm(name):
    """The batch norm of every tfseg network (PyTorch-like constants, fused training pass)."""
    return FusedBatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def apply_conv_bn(x, filters, kernel_size, *, strides=1, dilation_rate=1, activation="relu",
                  use_bias=False, name):
    """Conv2D -> BatchNorm -> optional activation, all named `{name}_{conv,bn,relu}`."""
    x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                            dilation_rate=dilation_rate, use_bias=use_bias,
                            name=f"{name}_conv")(x)
    x = batch_norm(f"{name}_bn")(x)
    if activation:
        x = keras.layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def apply_deconv_bn(x, filters, kernel_size, *, strides, use_bias=False, name):
    """Conv2DTranspose (exact x`strides` upsampling) -> BatchNorm -> ReLU."""
    x = keras.layers.Conv2DTranspose(filters, kernel_size, strides=strides, padding="same",
                                     use_bias=use_bias, name=f"{name}_deconv")(x)
    x = batch_norm(f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def bilinear_upsampling_kernel(kernel_size, channels):
    """Conv2DTranspose kernel (k, k, channels, channels) that upsamples each channel bilinearly
    (Long et al., FCN): a per-channel tent filter, zero across channels."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    grid = np.arange(kernel_size, dtype=np.float32)
    tent = 1.0 - np.abs(grid - center) / factor
    kernel = np.zeros((kernel_size, kernel_size, channels, channels), np.float32)
    for c in range(channels):
        kernel[:, :, c, c] = np.outer(tent, tent)
    return kernel


def pad_to_multiple(x, multiple, *, name):
    """Zero-pad H and W (bottom/right) up to a multiple of `multiple`.

    Returns the padded tensor and the (bottom, right) amounts, for `crop_padding`. Input sizes
    must be static: exported models have a fixed size anyway (TOOLCHAIN.md traps 2 and 5).
    """
    height, width = x.shape[1], x.shape[2]
    if height is None or width is None:
        raise ValueError(f"{name}: input height and width must be static to pad them to a "
                         f"multiple of {multiple}; received shape {tuple(x.shape)}")
    pad = (-height % multiple, -width % multiple)
    if pad == (0, 0):
        return x, pad
    x = keras.layers.ZeroPadding2D(((0, pad[0]), (0, pad[1])), name=f"{name}_pad")(x)
    return x, pad


def crop_padding(x, pad, *, name):
    """Undo `pad_to_multiple` on a full-resolution output."""
    if pad == (0, 0):
        return x
    return keras.layers.Cropping2D(((0, pad[0]), (0, pad[1])), name=f"{name}_crop")(x)


def apply_box_context(logits, window, *, name):
    """Lets each pixel see whether its row and its column cross the foreground nearby.

    The class probabilities' maximum over a horizontal and a vertical strip of `window`
    pixels, mixed into the logits by a 1x1 convolution that starts at zero (the network's own
    logits pass unchanged). An axis-aligned box around a sample is where both strips meet it,
    so a network whose labels are boxes (the cv2.selectROI workflow) can fill a box's corners
    from its sample's extent by a linear rule on probabilities in [0, 1], instead of context
    it would otherwise learn slowly (docs/benchmarks.md).
    """
    probabilities = keras.layers.Softmax(name=f"{name}_softmax")(logits)
    rows = keras.layers.MaxPooling2D((1, window), strides=1, padding="same",
                                     name=f"{name}_row_max")(probabilities)
    columns = keras.layers.MaxPooling2D((window, 1), strides=1, padding="same",
                                        name=f"{name}_column_max")(probabilities)
    strips = keras.layers.Concatenate(name=f"{name}_concat")([rows, columns])
    correction = keras.layers.Conv2D(logits.shape[-1], 1, kernel_initializer="zeros",
                                     name=f"{name}_mix")(strips)
    return keras.layers.Add(name=f"{name}_add")([logits, correction])
