"""Training losses. Logits are cast to float32 first, so mixed precision never reduces in
half precision."""

import keras
import tensorflow as tf


def per_image_cross_entropy(labels, logits, ignore_label, class_weights=None):
    """Softmax cross-entropy averaged over each image's non-ignored pixels; shape (batch,).

    With `class_weights` (one per class), each pixel counts with its true class's weight and
    each image's mean is a weighted mean (PyTorch's weighted cross-entropy does the same over
    the whole batch instead of per image). An image whose pixels are all ignored gives 0.
    """
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    pixel_loss = keras.losses.sparse_categorical_crossentropy(
        labels, logits, from_logits=True, ignore_class=ignore_label)
    valid = tf.not_equal(labels, ignore_label)
    weight = tf.cast(valid, tf.float32)
    if class_weights is not None:
        table = tf.constant(class_weights, tf.float32)
        weight *= tf.gather(table, tf.where(valid, labels, tf.zeros_like(labels)))
    return tf.math.divide_no_nan(tf.reduce_sum(pixel_loss * weight, axis=[1, 2]),
                                 tf.reduce_sum(weight, axis=[1, 2]))


def per_image_dice_loss(labels, logits, ignore_label, smooth=1.0):
    """1 - soft Dice of each image, averaged over the foreground classes (1..C-1); (batch,).

    Soft Dice uses softmax probabilities: 2 sum(p g) / (sum(p) + sum(g)), with `smooth` added
    to both sides. An image without foreground scores Dice 1 (loss 0) only when its summed
    foreground probability is near 0, so per-image Dice pushes hard against any foreground
    probability on empty frames. Ignored pixels are left out. Cross-entropy scores pixels one by
    one; Dice scores the overlap the IoU metric measures.
    """
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    num_classes = logits.shape[-1]
    valid = tf.cast(tf.not_equal(labels, ignore_label), tf.float32)[..., None]
    probabilities = tf.nn.softmax(logits)[..., 1:] * valid
    truth = tf.one_hot(labels, num_classes)[..., 1:] * valid
    intersection = tf.reduce_sum(probabilities * truth, axis=[1, 2])
    total = tf.reduce_sum(probabilities + truth, axis=[1, 2])
    dice = (2.0 * intersection + smooth) / (total + smooth)
    return 1.0 - tf.reduce_mean(dice, axis=-1)
