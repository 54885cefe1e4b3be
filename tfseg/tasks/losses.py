"""Training losses. Logits are cast to float32 first, so mixed precision never reduces in
half precision."""

import warnings
from types import MappingProxyType

import keras
import numpy as np
import tensorflow as tf

from tfseg.models.backbones.vgg import (
    NOTOP_WEIGHTS_FILE,
    VGG16_CONVS,
    build_vgg16_backbone,
)

# Floor of 1 - p inside the logarithm of the asymmetric loss, for clip = 0 and p -> 1.
EPSILON = 1e-8


def per_image_cross_entropy(labels, logits, ignore_label, class_weights=None):
    """Softmax cross-entropy averaged over each image's non-ignored pixels; shape (batch,).

    With `class_weights` (one per class), each pixel counts with its true class's weight and
    each image's mean is a weighted mean (PyTorch's weighted cross-entropy does the same over
    the whole batch instead of per image). An image whose pixels are all ignored gives 0.
    """
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    valid = tf.not_equal(labels, ignore_label)
    # Ignored pixels get class 0 and weight 0: TensorFlow's fused kernel directly, without
    # the select and gather ops of Keras's ignore_class masking around it.
    labels = tf.where(valid, labels, tf.zeros_like(labels))
    pixel_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    weight = tf.cast(valid, tf.float32)
    if class_weights is not None:
        weight *= tf.gather(tf.constant(class_weights, tf.float32), labels)
    return masked_image_mean(pixel_loss, weight)


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


def per_image_asymmetric_loss(labels, logits, ignore_label, *, gamma_pos=0.0, gamma_neg=4.0,
                              clip=0.05, label_smoothing=0.0):
    """Asymmetric loss (ASL, Ridnik et al., ICCV 2021) of each pixel, averaged per image; (batch,).

    Probabilities are a softmax over the class (last) axis of each pixel: a pixel has exactly one
    class, so its class probabilities should compete, as in the seed (whose softmax ran over the
    image width by mistake) and the ASL authors' single-label variant. The paper's multi-label
    sigmoids would score each class on its own. Per pixel, with targets y (the one-hot label,
    smoothed to (1 - label_smoothing) y + label_smoothing / C) and probabilities p:

        L = -sum_c [y_c (1 - p_c)^gamma_pos log p_c + (1 - y_c) p_m,c^gamma_neg log(1 - p_m,c)]

    with the shifted probability p_m = max(p - clip, 0): negatives below `clip` cost nothing and
    easy negatives are down-weighted harder (gamma_neg > gamma_pos), which suits a rare foreground
    on a background covering nearly every pixel. gamma_pos = gamma_neg = clip = 0 is cross-entropy
    (plus a log(1 - p) term per wrong class). Ignored pixels are left out; an image whose pixels
    are all ignored gives 0.

    Args:
        labels: int tensor (batch, H, W).
        logits: tensor (batch, H, W, classes).
        ignore_label: int. Label of the pixels to leave out.
        gamma_pos: float >= 0. Focusing exponent of the true class. Defaults to 0.
        gamma_neg: float >= 0. Focusing exponent of the other classes. Defaults to 4.
        clip: float in [0, 1). Probability margin of the other classes. Defaults to 0.05.
        label_smoothing: float in [0, 1). Defaults to 0.
    """
    for name, value in (("gamma_pos", gamma_pos), ("gamma_neg", gamma_neg)):
        if not value >= 0:
            raise ValueError(f"`{name}` must be >= 0; received {name}={value!r}")
    for name, value in (("clip", clip), ("label_smoothing", label_smoothing)):
        if not 0 <= value < 1:
            raise ValueError(f"`{name}` must be in [0, 1); received {name}={value!r}")
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    num_classes = logits.shape[-1]
    valid = tf.not_equal(labels, ignore_label)
    targets = tf.one_hot(tf.where(valid, labels, tf.zeros_like(labels)), num_classes)
    targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    log_probabilities = tf.nn.log_softmax(logits)
    probabilities = tf.exp(log_probabilities)
    shifted = tf.nn.relu(probabilities - clip)
    positive = focus(1.0 - probabilities, gamma_pos) * log_probabilities
    negative = focus(shifted, gamma_neg) * tf.math.log(tf.maximum(1.0 - shifted, EPSILON))
    pixel_loss = -tf.reduce_sum(targets * positive + (1.0 - targets) * negative, axis=-1)
    return masked_image_mean(pixel_loss, tf.cast(valid, tf.float32))


def focus(x, gamma):
    """x ** gamma, written as 1 for gamma = 0 so that its gradient at x = 0 is 0, not NaN."""
    return tf.pow(x, gamma) if gamma else tf.ones_like(x)


def masked_image_mean(values, weight):
    """Weighted mean of (batch, H, W) `values` over each image; 0 for an all-zero weight."""
    return tf.math.divide_no_nan(tf.reduce_sum(values * weight, axis=[1, 2]),
                                 tf.reduce_sum(weight, axis=[1, 2]))


# ICNet cascade label guidance weights of the 1/4, 1/8 and 1/16 logits.
ICNET_PAPER_WEIGHTS = MappingProxyType({"logits_4": 1.0, "logits_8": 0.4, "logits_16": 0.4})
ICNET_SEED_WEIGHTS = MappingProxyType({"logits_4": 1.0, "logits_8": 1.0, "logits_16": 0.4})


def cascade_loss(labels, outputs, ignore_label, *, weights=ICNET_PAPER_WEIGHTS,
                 class_weights=None):
    """ICNet cascade label guidance (Zhao et al., ECCV 2018): sum_k w_k CE_k per image; (batch,).

    CE_k is `per_image_cross_entropy` of the output `k` (e.g. `build_icnet(cascade_outputs=True)`
    gives "logits_4", "logits_8", "logits_16" of ceil(H/s) x ceil(W/s) pixels) against the labels
    resized by nearest neighbour to exactly that size, so class ids never blend and the ignore
    label survives. Each level pixel takes the label at the centre of its bin of H/h x W/w
    pixels: pixel s*i + s/2 when H is a multiple of s, near the centre of its receptive field. The paper weights 1/16 and 1/8 by 0.4 and 1/4 by 1.0 (`ICNET_PAPER_WEIGHTS`);
    the seed used 0.4 on 1/16 and 1.0 on the others (`ICNET_SEED_WEIGHTS`).

    Args:
        labels: int tensor (batch, H, W).
        outputs: dict name -> logits (batch, h, w, classes).
        ignore_label: int.
        weights: dict output name -> weight >= 0. Defaults to `ICNET_PAPER_WEIGHTS`.
        class_weights: optional per-class weights, as in `per_image_cross_entropy`.
    """
    if not weights or any(not w >= 0 for w in weights.values()):
        raise ValueError(f"`weights` must map output names to weights >= 0; received "
                         f"weights={dict(weights) if weights else weights!r}")
    missing = sorted(set(weights) - set(outputs))
    if missing:
        raise ValueError(f"`weights` names outputs {missing} missing from `outputs`, which has "
                         f"{sorted(outputs)}")
    labels = tf.cast(labels, tf.int32)[..., None]
    total = 0.0
    for key, weight in weights.items():
        logits = outputs[key]
        level_labels = tf.image.resize(labels, tf.shape(logits)[1:3], method="nearest")[..., 0]
        total += weight * per_image_cross_entropy(level_labels, logits, ignore_label,
                                                  class_weights)
    return total


IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)


class PerceptualLoss:
    """Feature reconstruction loss (Johnson et al., ECCV 2016) through a frozen VGG16; (batch,).

    loss = sum_l w_l RMS_l + pixel_weight MSE + tv_weight TV(prediction), per image, where
    RMS_l = sqrt(mean((phi_l(target) - phi_l(prediction))^2)) over the image's features at VGG16
    layer l (a ReLU output), MSE the mean squared pixel error (squared, like the feature terms and
    PSNR) and TV the mean absolute difference of neighbouring pixels (sum over both axes, divided
    by the number of values). Johnson uses `layers=("block2_conv2",)` (relu2_2); the seed blog
    `("block1_conv2", "block2_conv2", "block3_conv2")` with `layer_weights=(0.1, 0.8, 0.1)`.

    Images are RGB in 0..255; VGG's preprocessing (RGB -> BGR, minus the ImageNet mean) is done
    inside. The VGG16 is built once, with weights from a local keras.applications file (nothing
    is downloaded); random weights only on request, since their features are not perceptual.

    Args:
        weights: str or Path, the keras.applications VGG16 notop `.h5` file, or "random" for a
            randomly initialised VGG16 (warns; `random_weights` is then True).
        layers: keras.applications VGG16 conv names whose ReLU outputs are compared. Defaults to
            ("block2_conv2",).
        layer_weights: one weight per layer. Defaults to 1 for each.
        pixel_weight: float >= 0. Weight of the pixel MSE. Defaults to 0.
        tv_weight: float >= 0. Weight of the total variation. Defaults to 0.

    Example:
        loss = PerceptualLoss(weights="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
        per_image = loss(high_resolution, model(low_resolution))  # (batch,)
    """

    def __init__(self, *, weights, layers=("block2_conv2",), layer_weights=None, pixel_weight=0.0,
                 tv_weight=0.0):
        if weights is None:
            raise ValueError("`weights` must be the path of a local keras.applications VGG16 "
                             f"notop file ({NOTOP_WEIGHTS_FILE}) or 'random' for a random "
                             "VGG16, whose features are not perceptual; received weights=None")
        layers = tuple(layers)
        unknown = [layer for layer in layers if layer not in VGG16_CONVS]
        if not layers or unknown:
            raise ValueError(f"`layers` must be VGG16 conv names from {list(VGG16_CONVS)}; "
                             f"received layers={layers!r}")
        layer_weights = tuple(layer_weights or (1.0,) * len(layers))
        if len(layer_weights) != len(layers):
            raise ValueError(f"`layer_weights` needs one weight per layer ({len(layers)}); "
                             f"received layer_weights={layer_weights!r}")
        for name, value in (("pixel_weight", pixel_weight), ("tv_weight", tv_weight)):
            if not value >= 0:
                raise ValueError(f"`{name}` must be >= 0; received {name}={value!r}")
        self.random_weights = weights == "random"
        if self.random_weights:
            warnings.warn("The perceptual loss uses a RANDOM VGG16 (weights='random'): its "
                          "features are not ImageNet features", stacklevel=2)
        backbone = build_vgg16_backbone(batch_norm=False,
                                        weights=None if self.random_weights else weights)
        self.extractor = keras.Model(
            backbone.input, {layer: backbone.get_layer(f"{backbone.name}_{layer}_relu").output
                             for layer in layers}, name="perceptual_vgg16")
        self.extractor.trainable = False
        self.layers = layers
        self.layer_weights = layer_weights
        self.pixel_weight = pixel_weight
        self.tv_weight = tv_weight

    def features(self, images):
        """The VGG16 features (one per layer) of RGB images in 0..255."""
        bgr = tf.cast(images, tf.float32)[..., ::-1] - tf.constant(IMAGENET_MEAN_BGR)
        features = self.extractor(bgr, training=False)
        return [tf.cast(features[layer], tf.float32) for layer in self.layers]

    def __call__(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.float32)
        y_pred = tf.cast(y_pred, tf.float32)
        loss = 0.0
        for weight, true, pred in zip(self.layer_weights, self.features(y_true),
                                      self.features(y_pred)):
            loss += weight * safe_sqrt(per_image_mean(tf.square(true - pred)))
        if self.pixel_weight:
            loss += self.pixel_weight * per_image_mean(tf.square(y_true - y_pred))
        if self.tv_weight:
            count = tf.cast(tf.reduce_prod(tf.shape(y_pred)[1:]), tf.float32)
            loss += self.tv_weight * tf.image.total_variation(y_pred) / count
        return loss


def per_image_mean(x):
    """Mean over every axis but the first."""
    return tf.reduce_mean(x, axis=tf.range(1, tf.rank(x)))


def safe_sqrt(x):
    """sqrt(x) with gradient 0, not NaN, at x = 0 (identical images)."""
    positive = x > 0
    return tf.where(positive, tf.sqrt(tf.where(positive, x, 1.0)), 0.0)


def class_pixel_counts(examples, num_classes):
    """Pixels per class over the masks of a data set of (image, mask) examples.

    Pixels of other values (the ignore label) are not counted.

    Returns:
        int64 numpy array (num_classes,).
    """
    if (isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer))
            or not 1 <= num_classes <= 256):
        raise ValueError(f"num_classes must be an integer in [1, 256]; received "
                         f"num_classes={num_classes!r}")
    counts = examples.map(
        lambda image, mask: tf.math.bincount(tf.cast(tf.reshape(mask, [-1]), tf.int32),
                                             minlength=256, maxlength=256, dtype=tf.int64),
        num_parallel_calls=tf.data.AUTOTUNE).reduce(tf.zeros(256, tf.int64), tf.add)
    return counts.numpy()[:num_classes]


def linknet_class_weights(counts, *, log="ln"):
    """LinkNet class weights w_c = 1 / log(1.02 + p_c) from per-class pixel counts.

    p_c is the class's share of the valid (non-void) pixels. The LinkNet paper uses the natural
    log ("ln"); some ports use "log2", which gives smaller weights (by ln 2) of the same ratios.
    With "ln" the weights lie between 1.42 (a class on every pixel) and 50.5 (an absent one).

    Args:
        counts: array of non-negative pixel counts, one per class.
        log: str. "ln" or "log2". Defaults to "ln".

    Returns:
        float32 numpy array of the weights.
    """
    logs = {"ln": np.log, "log2": np.log2}
    if log not in logs:
        raise ValueError(f"log must be one of {list(logs)}; received log={log!r}")
    counts = np.asarray(counts, np.float64)
    if counts.ndim != 1 or counts.size == 0 or (counts < 0).any() or counts.sum() == 0:
        raise ValueError(f"counts must be non-negative pixel counts, one per class, not all 0; "
                         f"received {counts!r}")
    return (1.0 / logs[log](1.02 + counts / counts.sum())).astype(np.float32)
