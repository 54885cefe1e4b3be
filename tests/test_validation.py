"""`tfseg.tasks.validation.validate`, the one validation of training and `tfseg.evaluate`, on
stand-in models whose scores are known by hand."""

import numpy as np
import pytest
import tensorflow as tf

from tfseg.config import Config, DataConfig, ModelConfig, SuperResolutionDataConfig, TrainConfig
from tfseg.tasks.factory import make_task
from tfseg.tasks.validation import validate
from tfseg.utils.errors import TfsegError


def one_hot_logits(predictions, num_classes=2, margin=10.0):
    """Logits that predict `predictions` with a margin of `margin`."""
    return margin * np.eye(num_classes, dtype=np.float32)[predictions]


def test_segmentation_scores_of_a_known_prediction():
    # One 4x4 frame per batch, two batches: the sample's 4 pixels in the first frame are
    # found half, with 2 false positives; the second frame is all background, predicted so.
    masks = np.zeros((2, 1, 4, 4), np.uint8)
    masks[0, 0, :2, :2] = 1
    predictions = np.zeros((2, 1, 4, 4), np.int64)
    predictions[0, 0, 0, :2] = 1
    predictions[0, 0, 3, :2] = 1
    images = np.arange(2 * 16, dtype=np.float32).reshape(2, 1, 4, 4, 1)
    frames = {images[i].tobytes(): one_hot_logits(predictions[i]) for i in range(2)}
    report = validate(make_task(Config()), lambda batch: frames[batch.tobytes()],
                      zip(images, masks), samples=1)
    assert report["frames"] == 2
    assert report["confusion_matrix"] == [[26, 2], [2, 2]]
    assert report["foreground_iou"] == pytest.approx(2 / 6)
    assert report["mean_iou"] == pytest.approx((26 / 30 + 2 / 6) / 2)
    assert report["pixel_accuracy"] == pytest.approx(28 / 32)
    # One sample instance, half found: iIoU as IoU; the seed's figure is its recall.
    assert report["per_class_iiou"]["sample"] == pytest.approx(2 / 6)
    assert report["seed_per_image_foreground_iou"] == pytest.approx(0.5)
    # Cross-entropy per frame, averaged: 4 of the first frame's 16 pixels are 10 off.
    right = np.log1p(np.exp(-10.0))
    assert report["loss"] == pytest.approx((4 * 10 / 16 + 2 * right) / 2, rel=1e-5)
    assert report["panels"].shape == (1, 4, 12, 3) and report["panels"].dtype == np.uint8


def test_segmentation_refuses_a_model_of_another_class_count():
    with pytest.raises(TfsegError, match="outputs 3 classes but the config has 2"):
        validate(make_task(Config()), lambda batch: np.zeros((1, 4, 4, 3), np.float32),
                 [(np.zeros((1, 4, 4, 1)), np.zeros((1, 4, 4), np.uint8))])


def super_resolution_task():
    return make_task(Config(
        model=ModelConfig(name="sr_johnson", scale=4, input_channels=3),
        data=DataConfig(source="super_resolution", height=8, width=8, mean=[127.5] * 3,
                        std=[127.5] * 3, super_resolution=SuperResolutionDataConfig(
                            train=["x"], validation=["y"])),
        train=TrainConfig(loss="pixel")))


def bicubic(low_resolution):
    return tf.image.resize(low_resolution, np.array(low_resolution.shape[1:3]) * 4,
                           method="bicubic", antialias=False).numpy()


def test_super_resolution_by_bicubic_scores_as_the_bicubic_baseline():
    # Two whole images of different sizes, batch 1 as the validation split holds them.
    rng = np.random.default_rng(0)
    pairs = []
    for height, width in ((48, 64), (60, 44)):
        high = rng.integers(0, 256, (1, height, width, 3)).astype(np.float32)
        low = tf.image.resize(high, (height // 4, width // 4), antialias=True).numpy()
        pairs.append((low, high))
    report = validate(super_resolution_task(), bicubic, pairs, samples=2)
    assert report["images"] == 2
    assert [(row["height"], row["width"]) for row in report["per_image"]] == [(48, 64),
                                                                            (60, 44)]
    for row in report["per_image"]:
        assert row["psnr_y"] == row["bicubic_psnr_y"] and row["ssim_y"] == row["bicubic_ssim_y"]
    assert report["psnr_y"] == pytest.approx(np.mean([r["psnr_y"] for r in report["per_image"]]))
    expected_loss = np.mean([np.mean((bicubic(low) - high) ** 2) for low, high in pairs])
    assert report["loss"] == pytest.approx(expected_loss, rel=1e-5)
    # LR | bicubic | SR | HR strips, padded to the tallest and widest image.
    assert report["panels"].shape == (2, 60, 4 * 64, 3)
    assert not report["panels"][0, 48:].any()


def test_super_resolution_without_images_is_an_error():
    with pytest.raises(TfsegError, match="holds no images"):
        validate(super_resolution_task(), bicubic, [])
