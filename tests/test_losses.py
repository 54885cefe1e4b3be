"""Per-image losses: cross-entropy and Dice with an ignore label, the asymmetric loss over each
pixel's classes, ICNet cascade label guidance and the VGG16 perceptual loss."""

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.legacy.saving import legacy_h5_format

from tfseg.models.backbones.vgg import NOTOP_WEIGHTS_FILE
from tfseg.tasks.losses import (
    ICNET_PAPER_WEIGHTS,
    ICNET_SEED_WEIGHTS,
    PerceptualLoss,
    cascade_loss,
    class_pixel_counts,
    linknet_class_weights,
    per_image_asymmetric_loss,
    per_image_cross_entropy,
    per_image_dice_loss,
)

BLOG_LAYERS = ("block1_conv2", "block2_conv2", "block3_conv2")


def reference_cross_entropy(labels, logits):
    log_probabilities = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -np.take_along_axis(log_probabilities, labels[..., None], -1)[..., 0]


def test_ignored_pixels_do_not_count():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (2, 4, 5))
    ignored = labels.copy()
    ignored[0, :2] = 255
    loss = per_image_cross_entropy(ignored, logits, 255).numpy()
    pixel = reference_cross_entropy(labels, logits)
    assert loss[0] == pytest.approx(pixel[0, 2:].mean(), rel=1e-5)
    assert loss[1] == pytest.approx(pixel[1].mean(), rel=1e-5)
    logits = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = tf.reduce_sum(per_image_cross_entropy(ignored, logits, 255))
    gradient = tape.gradient(loss, logits).numpy()
    assert not gradient[0, :2].any() and np.abs(gradient[0, 2:]).min() > 0


def test_fully_ignored_image_contributes_zero():
    logits = tf.zeros((1, 3, 3, 2))
    assert per_image_cross_entropy(np.full((1, 3, 3), 255), logits, 255).numpy()[0] == 0.0


def test_half_precision_logits_are_reduced_in_float32():
    logits = tf.cast(tf.random.normal((1, 8, 8, 2)), tf.bfloat16)
    loss = per_image_cross_entropy(np.zeros((1, 8, 8), np.int32), logits, 255)
    assert loss.dtype == tf.float32


def test_class_weights_weight_each_pixel_by_its_true_class():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(1, 6, 6, 2)).astype(np.float32)
    labels = rng.integers(0, 2, (1, 6, 6))
    labels[0, 0, 0] = 255
    pixel = reference_cross_entropy(np.where(labels == 255, 0, labels), logits)[0]
    weights = np.where(labels[0] == 1, 4.0, 1.0) * (labels[0] != 255)
    expected = (pixel * weights).sum() / weights.sum()
    loss = per_image_cross_entropy(labels, logits, 255, class_weights=[1.0, 4.0]).numpy()
    assert loss[0] == pytest.approx(expected, rel=1e-5)


def test_dice_loss_is_zero_for_a_perfect_prediction_and_one_for_a_disjoint_one():
    labels = np.zeros((2, 8, 8), np.int32)
    labels[:, 2:5, 2:5] = 1
    confident = np.where(labels[..., None] == np.arange(2), 50.0, -50.0).astype(np.float32)
    wrong = confident[..., ::-1].copy()
    assert per_image_dice_loss(labels, confident, 255).numpy() == pytest.approx([0, 0], abs=1e-3)
    # No overlap: Dice = (0 + 1) / (55 + 9 + 1) with 55 wrongly predicted and 9 true pixels.
    assert per_image_dice_loss(labels, wrong, 255).numpy() == pytest.approx([1 - 1 / 65] * 2,
                                                                            abs=1e-4)


def test_dice_loss_leaves_out_ignored_pixels_and_handles_empty_images():
    labels = np.zeros((1, 8, 8), np.int32)
    logits = np.zeros((1, 8, 8, 2), np.float32)
    logits[..., 0] = 50.0                       # confidently background everywhere
    assert per_image_dice_loss(labels, logits, 255).numpy()[0] == pytest.approx(0, abs=1e-3)
    labels[0, :4] = 255
    logits[0, :4, :, 1] = 100.0                 # foreground only where labels are ignored
    assert per_image_dice_loss(labels, logits, 255).numpy()[0] == pytest.approx(0, abs=1e-3)


# === Asymmetric loss ===

def reference_asymmetric_loss(labels, logits, gamma_pos, gamma_neg, clip, smoothing=0.0):
    """Per-pixel ASL over the last axis, written out in numpy."""
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    num_classes = logits.shape[-1]
    targets = np.eye(num_classes)[labels] * (1 - smoothing) + smoothing / num_classes
    shifted = np.maximum(probabilities - clip, 0)
    positive = (1 - probabilities) ** gamma_pos * np.log(probabilities)
    negative = shifted ** gamma_neg * np.log(1 - shifted)
    return -(targets * positive + (1 - targets) * negative).sum(-1)


@pytest.mark.parametrize("gamma_pos,gamma_neg,clip,smoothing",
                         [(0.0, 4.0, 0.05, 0.0), (1.0, 4.0, 0.05, 0.1), (2.0, 1.0, 0.0, 0.0)])
def test_asymmetric_loss_matches_the_formula_per_pixel(gamma_pos, gamma_neg, clip, smoothing):
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=2.0, size=(2, 4, 5, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (2, 4, 5))
    ignored = labels.copy()
    ignored[1, 1:] = 255
    loss = per_image_asymmetric_loss(ignored, logits, 255, gamma_pos=gamma_pos,
                                     gamma_neg=gamma_neg, clip=clip,
                                     label_smoothing=smoothing).numpy()
    pixel = reference_asymmetric_loss(labels, logits, gamma_pos, gamma_neg, clip, smoothing)
    assert loss.shape == (2,)
    np.testing.assert_allclose(loss, [pixel[0].mean(), pixel[1, :1].mean()], rtol=1e-5)


def test_asymmetric_loss_works_over_the_class_axis_of_each_pixel():
    """The seed's softmax ran over the image width: a pixel's loss then depended on the other
    pixels of its row. Here it depends only on the pixel's own logits and label."""
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(1, 1, 6, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (1, 1, 6))

    def pixel_losses(labels, logits):  # one image per pixel
        return per_image_asymmetric_loss(labels.reshape(6, 1, 1), logits.reshape(6, 1, 1, 3),
                                         255).numpy()

    losses = pixel_losses(labels, logits)
    order = rng.permutation(6)
    np.testing.assert_allclose(pixel_losses(labels[..., order], logits[:, :, order]),
                               losses[order], rtol=1e-6)
    changed = logits.copy()
    changed[0, 0, 0] += 5.0                      # only pixel 0 changes
    np.testing.assert_allclose(pixel_losses(labels, changed)[1:], losses[1:], rtol=1e-6)
    image_loss = per_image_asymmetric_loss(labels, logits, 255).numpy()[0]
    assert image_loss == pytest.approx(losses.mean(), rel=1e-5)


def test_asymmetric_loss_ignores_easy_negatives_below_the_margin():
    labels = np.zeros((1, 1, 1), np.int32)
    # p = (0.96, 0.02, 0.02): the negatives lie below clip = 0.05 and cost nothing.
    logits = np.log(np.array([[[[0.96, 0.02, 0.02]]]], np.float32))
    loss = per_image_asymmetric_loss(labels, logits, 255).numpy()[0]
    assert loss == pytest.approx(-np.log(0.96), rel=1e-5)


def test_asymmetric_loss_gradients_are_finite_for_confident_and_ignored_pixels():
    labels = np.array([[[0, 1, 255]]], np.int32)
    logits = tf.Variable(np.array([[[[100.0, -100.0], [0.0, 0.0], [3.0, 1.0]]]], np.float32))
    for gamma_pos, gamma_neg, clip in [(0.0, 4.0, 0.05), (0.0, 0.0, 0.0), (1.0, 4.0, 0.0)]:
        with tf.GradientTape() as tape:
            loss = per_image_asymmetric_loss(labels, logits, 255, gamma_pos=gamma_pos,
                                             gamma_neg=gamma_neg, clip=clip)
        gradient = tape.gradient(loss, logits).numpy()
        assert np.isfinite(gradient).all() and np.isfinite(loss.numpy()).all()
        assert (gradient[0, 0, 2] == 0).all()


def test_asymmetric_loss_is_float32_and_zero_for_a_fully_ignored_image():
    logits = tf.cast(tf.random.normal((2, 3, 3, 2)), tf.bfloat16)
    labels = np.zeros((2, 3, 3), np.int32)
    labels[1] = 255
    loss = per_image_asymmetric_loss(labels, logits, 255)
    assert loss.dtype == tf.float32 and loss.numpy()[1] == 0.0


@pytest.mark.parametrize("options,match", [
    ({"gamma_neg": -1.0}, "`gamma_neg` must be >= 0; received gamma_neg=-1.0"),
    ({"gamma_pos": -0.5}, "`gamma_pos` must be >= 0"),
    ({"clip": 1.0}, r"`clip` must be in \[0, 1\); received clip=1.0"),
    ({"label_smoothing": -0.1}, "`label_smoothing` must be in"),
])
def test_asymmetric_loss_rejects_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        per_image_asymmetric_loss(np.zeros((1, 2, 2)), tf.zeros((1, 2, 2, 2)), 255, **options)


# === LinkNet class weights ===

def test_linknet_class_weights_from_masks_weight_the_cross_entropy():
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[:, 0, :2] = 1                          # rare class
    masks[:, 3] = 255                            # void
    examples = tf.data.Dataset.from_tensor_slices((np.zeros((2, 4, 4, 3)), masks))
    counts = class_pixel_counts(examples, 2)
    np.testing.assert_array_equal(counts, [20, 4])
    logits = np.random.default_rng(5).normal(size=(2, 4, 4, 2)).astype(np.float32)
    pixel = reference_cross_entropy(np.where(masks == 255, 0, masks), logits)
    for log, log_fn in (("ln", np.log), ("log2", np.log2)):
        weights = linknet_class_weights(counts, log=log)
        np.testing.assert_allclose(weights, 1 / log_fn(1.02 + counts / 24), rtol=1e-6)
        per_pixel = weights[np.where(masks == 255, 0, masks)] * (masks != 255)
        expected = (pixel * per_pixel).sum((1, 2)) / per_pixel.sum((1, 2))
        loss = per_image_cross_entropy(masks, logits, 255, class_weights=weights).numpy()
        np.testing.assert_allclose(loss, expected, rtol=1e-5)


# === ICNet cascade label guidance ===

def cascade_outputs(rng, size, num_classes=3):
    """Random logits at 1/4, 1/8, 1/16 of `size`, ceil(size / s) pixels as ICNet gives them."""
    return {f"logits_{s}": rng.normal(size=(2, *(-(-n // s) for n in size), num_classes))
            .astype(np.float32) for s in (4, 8, 16)}


def test_cascade_loss_is_the_weighted_sum_of_per_level_cross_entropies():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 3, (2, 36, 50))
    outputs = cascade_outputs(rng, (36, 50))
    loss = cascade_loss(labels, outputs, 255).numpy()
    expected = 0.0
    for key, weight in ICNET_PAPER_WEIGHTS.items():
        h, w = outputs[key].shape[1:3]
        down = tf.image.resize(labels[..., None], (h, w), method="nearest")[..., 0]
        expected += weight * per_image_cross_entropy(down, outputs[key], 255).numpy()
    assert loss.shape == (2,)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert dict(ICNET_PAPER_WEIGHTS) == {"logits_4": 1.0, "logits_8": 0.4, "logits_16": 0.4}
    assert dict(ICNET_SEED_WEIGHTS) == {"logits_4": 1.0, "logits_8": 1.0, "logits_16": 0.4}
    seed = cascade_loss(labels, outputs, 255, weights=ICNET_SEED_WEIGHTS).numpy()
    only_8 = cascade_loss(labels, outputs, 255, weights={"logits_8": 1.0}).numpy()
    np.testing.assert_allclose(seed - loss, 0.6 * only_8, rtol=1e-5)


def test_cascade_labels_are_resized_by_nearest_neighbour_to_each_level_exactly():
    """Labels that are constant on 16x16 cells (ignore label included) downsample without
    blending: logits confident in each cell's class give zero loss at every level, even for a
    size that is not a multiple of 16 (levels of ceil(H / s) pixels)."""
    size = (40, 56)
    cells = np.array([[0, 1, 2, 255], [2, 255, 1, 0], [1, 0, 255, 2]])
    labels = np.kron(cells, np.ones((16, 16), np.int64))[None, :size[0], :size[1]]
    outputs = {}
    for s in (4, 8, 16):
        down = labels[:, ::s, ::s]               # one pixel per s x s cell
        assert down.shape[1:] == tuple(-(-n // s) for n in size)
        outputs[f"logits_{s}"] = np.where(down[..., None] == np.arange(3), 30.0, -30.0)
    loss = cascade_loss(labels, outputs, 255).numpy()
    assert loss == pytest.approx([0.0], abs=1e-6)
    wrong = {key: -value for key, value in outputs.items()}
    assert cascade_loss(labels, wrong, 255).numpy()[0] > 10


def test_cascade_loss_passes_class_weights_and_checks_its_weights():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, (2, 32, 32))
    outputs = cascade_outputs(rng, (32, 32))
    weighted = cascade_loss(labels, outputs, 255, weights={"logits_4": 1.0},
                            class_weights=[1.0, 2.0, 3.0]).numpy()
    down = labels[:, 2::4, 2::4]                 # nearest: the centre pixel of each 4x4 cell
    expected = per_image_cross_entropy(down, outputs["logits_4"], 255, [1.0, 2.0, 3.0]).numpy()
    np.testing.assert_allclose(weighted, expected, rtol=1e-6)
    with pytest.raises(ValueError, match=r"names outputs \['logits_2'\] missing"):
        cascade_loss(labels, outputs, 255, weights={"logits_2": 1.0})
    with pytest.raises(ValueError, match="`weights` must map output names to weights >= 0"):
        cascade_loss(labels, outputs, 255, weights={"logits_4": -1.0})


# === Perceptual loss ===

@pytest.fixture(scope="module")
def random_perceptual_loss():
    with pytest.warns(UserWarning, match="RANDOM VGG16"):
        return PerceptualLoss(weights="random", layers=BLOG_LAYERS, layer_weights=(0.1, 0.8, 0.1))


def random_images(seed, shape=(2, 32, 32, 3)):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)


def test_perceptual_loss_is_zero_for_identical_images_and_grows_with_noise(
        random_perceptual_loss):
    images = random_images(8)
    assert random_perceptual_loss.random_weights
    np.testing.assert_array_equal(random_perceptual_loss(images, images).numpy(), [0.0, 0.0])
    noise = np.random.default_rng(9).normal(size=images.shape).astype(np.float32)
    small, large = (random_perceptual_loss(images, images + scale * noise).numpy()
                    for scale in (2.0, 20.0))
    assert small.shape == (2,) and (small > 0).all() and (large > small).all()


def test_perceptual_loss_trains_the_prediction_not_the_vgg(random_perceptual_loss):
    images = random_images(10)
    prediction = tf.Variable(images + 10.0)
    vgg = random_perceptual_loss.extractor
    assert vgg.trainable_weights == [] and len(vgg.non_trainable_weights) == 12  # to block3_conv2
    assert not any(weight.trainable for weight in vgg.weights)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(random_perceptual_loss(images, prediction))
    gradient = tape.gradient(loss, prediction).numpy()
    assert np.isfinite(gradient).all() and np.abs(gradient).sum() > 0
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(random_perceptual_loss(images, tf.Variable(images)))
    assert np.isfinite(tape.gradient(loss, tape.watched_variables()[0]).numpy()).all()


def test_perceptual_loss_weighs_layers_pixels_and_total_variation(random_perceptual_loss):
    images, prediction = random_images(11), random_images(12)
    with pytest.warns(UserWarning, match="RANDOM VGG16"):
        extra = PerceptualLoss(weights="random", layers=BLOG_LAYERS,
                               layer_weights=(0.1, 0.8, 0.1), pixel_weight=0.5, tv_weight=2.0)
    extra.extractor.set_weights(random_perceptual_loss.extractor.get_weights())
    true, pred = random_perceptual_loss.features(images), random_perceptual_loss.features(
        prediction)
    features = sum(w * np.sqrt(((t.numpy() - p.numpy()) ** 2).mean((1, 2, 3)))
                   for w, t, p in zip((0.1, 0.8, 0.1), true, pred))
    mse = ((images - prediction) ** 2).mean((1, 2, 3))
    tv = (np.abs(np.diff(prediction, axis=1)).sum((1, 2, 3))
          + np.abs(np.diff(prediction, axis=2)).sum((1, 2, 3))) / (32 * 32 * 3)
    np.testing.assert_allclose(random_perceptual_loss(images, prediction).numpy(), features,
                               rtol=1e-5)
    np.testing.assert_allclose(extra(images, prediction).numpy(),
                               features + 0.5 * mse + 2.0 * tv, rtol=1e-5)


def test_perceptual_features_match_keras_applications_with_a_weights_file(tmp_path):
    reference = keras.applications.VGG16(weights=None, include_top=False,
                                         input_shape=(None, None, 3))
    path = tmp_path / NOTOP_WEIGHTS_FILE
    with h5py.File(path, "w") as file:           # the keras.applications file layout
        legacy_h5_format.save_weights_to_hdf5_group(file, reference)
    loss = PerceptualLoss(weights=path)
    assert not loss.random_weights and loss.layers == ("block2_conv2",)
    relu2_2 = keras.Model(reference.input, reference.get_layer("block2_conv2").output)
    images = random_images(13)
    expected = relu2_2(keras.applications.vgg16.preprocess_input(images.copy())).numpy()
    np.testing.assert_allclose(loss.features(images)[0].numpy(), expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("options,match", [
    ({"weights": None}, "`weights` must be the path of a local keras.applications VGG16"),
    ({"weights": "random", "layers": ("block2_conv9",)}, "`layers` must be VGG16 conv names"),
    ({"weights": "random", "layer_weights": (0.5, 0.5)}, "`layer_weights` needs one weight"),
    ({"weights": "random", "tv_weight": -1.0}, "`tv_weight` must be >= 0"),
])
def test_perceptual_loss_rejects_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        PerceptualLoss(**options)


def test_perceptual_loss_reports_a_missing_weights_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        PerceptualLoss(weights=tmp_path / NOTOP_WEIGHTS_FILE)
