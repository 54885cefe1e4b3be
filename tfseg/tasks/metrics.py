"""Segmentation and super-resolution scores.

Segmentation scores are data-set-level figures: `scores_from_confusion` reads one confusion matrix
summed over batches (and replicas), and `InstanceIoU` accumulates its sums the same way, so
neither is a mean of per-image scores. `seed_per_image_foreground_iou` is the exception, kept only
to compare with the interferogram seed's published numbers.

Super-resolution scores follow the standard protocol of SR papers: PSNR and SSIM on the Y channel
of MATLAB's `rgb2ycbcr` after shaving `scale` pixels off each border.
"""

import cv2
import numpy as np
import tensorflow as tf

from tfseg.data.super_resolution import to_8bit

# MATLAB rgb2ycbcr (ITU-R BT.601, studio swing): Y = 16 + 65.481 r + 128.553 g + 24.966 b for
# r, g, b in 0..1, i.e. the weights below for 0..255 inputs; Y is in 16..235.
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0


def confusion_matrix(labels, predictions, num_classes, ignore_label):
    """(num_classes, num_classes) int64 counts, rows = ground truth, columns = prediction.

    Pixels whose label is `ignore_label` are left out; any other label outside
    0..num_classes-1 is an error. One bincount of label x num_classes + prediction, in place of
    `tf.math.confusion_matrix`'s masking and scatter, which the training step pays for every
    batch. bincount has no XLA kernel: a jit-compiled step counts outside XLA.
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    predictions = tf.reshape(tf.cast(predictions, tf.int32), [-1])
    cells = num_classes * num_classes
    # Ignored pixels count in one extra bin, dropped below.
    index = tf.where(tf.not_equal(labels, ignore_label), labels * num_classes + predictions,
                     cells)
    counts = tf.math.bincount(index, minlength=cells + 1, dtype=tf.int64)
    with tf.control_dependencies([tf.debugging.assert_equal(
            tf.size(counts), cells + 1,
            message=f"a label outside 0..{num_classes - 1} that is not {ignore_label}")]):
        return tf.reshape(counts[:cells], (num_classes, num_classes))


def scores_from_confusion(matrix, class_names):
    """Data-set scores from a confusion matrix (rows = ground truth), NaN where undefined.

    With TP_c the diagonal, GT_c the row sums and N the total:

    - `per_class_iou`: TP_c / (GT_c + predicted_c - TP_c), NaN for a class absent from both
      labels and predictions; `mean_iou` averages the defined ones.
    - `pixel_accuracy`: sum TP_c / N.
    - `mean_class_accuracy`: mean of TP_c / GT_c (per-class recall) over classes present in the
      ground truth.
    - `frequency_weighted_iou`: sum of GT_c / N * IoU_c over the same classes (Long et al.,
      "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015).
    - `foreground_iou` (two classes only): the IoU of class 1.
    """
    matrix = np.asarray(matrix, np.float64)
    true_positive = np.diag(matrix)
    ground_truth = matrix.sum(1)
    union = matrix.sum(0) + ground_truth - true_positive
    present = union > 0
    iou = np.divide(true_positive, union, out=np.full_like(true_positive, np.nan), where=present)
    in_labels = ground_truth > 0
    total = matrix.sum()
    scores = {
        "mean_iou": float(np.nanmean(iou)) if present.any() else float("nan"),
        "pixel_accuracy": float(true_positive.sum() / total) if total else float("nan"),
        "mean_class_accuracy": (float(np.mean(true_positive[in_labels] / ground_truth[in_labels]))
                                if total else float("nan")),
        "frequency_weighted_iou": (float(np.sum(ground_truth[in_labels] * iou[in_labels]) / total)
                                   if total else float("nan")),
        "per_class_iou": {name: float(v) for name, v in zip(class_names, iou)},
    }
    if len(class_names) == 2:
        scores["foreground_iou"] = float(iou[1])
    return scores


class InstanceIoU:
    """Streaming instance-level IoU (iIoU) of the Cityscapes benchmark, in numpy.

    Plain IoU favours large objects; iIoU weights every ground-truth pixel of instance i of class
    c by avg_size_c / size_i, so each instance counts as if it had the class's average size:

        iIoU_c = wTP_c / (wTP_c + FP_c + wFN_c)

    with wTP and wFN the weighted true positives and false negatives of class c's instances and
    FP_c the unweighted count of pixels predicted c whose label is another class (pixels labelled
    `ignore_label` are left out everywhere). `mean_iiou` averages iIoU_c over the target classes
    that had at least one instance; the others are NaN.

    Instances come from `instances` maps when given; otherwise each 8-connected component of a
    class's ground-truth mask in an image is one instance (`cv2.connectedComponents`), so touching
    objects of one class merge.

    Cityscapes fixes avg_size_c to the mean instance size over its training set; pass such
    figures as `average_sizes`. Without them the mean instance size of everything seen so far is
    used. Since avg_size_c is one factor of wTP_c and wFN_c, the sums are kept unscaled and the
    factor applied in `result`: this equals a second pass with the evaluated set's mean size.

    Args:
        class_names: list of str, one per class id.
        ignore_label: int. Label of pixels left out. Defaults to 255.
        target_class_ids: list of int or None. Classes scored (e.g. only the object classes,
            as Cityscapes scores only its 8 "thing" classes); None for all. Defaults to None.
        average_sizes: dict class id -> pixels, or None. Fixed average instance size of each
            target class. Defaults to None.
    """

    def __init__(self, class_names, *, ignore_label=255, target_class_ids=None,
                 average_sizes=None):
        self.class_names = list(class_names)
        num_classes = len(self.class_names)
        if num_classes < 1:
            raise ValueError("class_names must name at least one class; received none")
        if target_class_ids is None:
            target_class_ids = range(num_classes)
        self.target_class_ids = sorted({int(c) for c in target_class_ids})
        if not self.target_class_ids or not all(
                0 <= c < num_classes for c in self.target_class_ids):
            raise ValueError(f"target_class_ids must be class ids in [0, {num_classes}); "
                             f"received target_class_ids={target_class_ids!r}")
        if average_sizes is not None:
            missing = [c for c in self.target_class_ids if not average_sizes.get(c, 0) > 0]
            if missing:
                raise ValueError(f"average_sizes must give a positive size for every target "
                                 f"class; received average_sizes={average_sizes!r}, missing or "
                                 f"not positive: {missing}")
        self.ignore_label = ignore_label
        self.average_sizes = average_sizes
        # Per class: sums over instances of TP_i / size_i and FN_i / size_i, instance count,
        # instance pixels, and unweighted false positives.
        self._true_positive = np.zeros(num_classes)
        self._false_negative = np.zeros(num_classes)
        self._instance_count = np.zeros(num_classes, np.int64)
        self._instance_pixels = np.zeros(num_classes, np.int64)
        self._false_positive = np.zeros(num_classes, np.int64)

    def update(self, labels, predictions, instances=None):
        """Adds images (H, W) or batches (B, H, W) of class ids.

        Args:
            labels: int array of ground-truth class ids or `ignore_label`.
            predictions: int array of predicted class ids, same shape.
            instances: int array of the same shape or None. Pixels of one class sharing a
                non-zero id in one image form an instance; 0 marks pixels in no instance
                (stuff, crowd regions), which count only as false positives of other classes.
                None for connected components. Defaults to None.
        """
        labels, predictions = _label_maps(labels, predictions)
        images = labels.reshape((-1,) + labels.shape[-2:])
        if instances is not None and np.shape(instances) != labels.shape:
            raise ValueError(f"instances must have the shape of labels {labels.shape}; "
                             f"received instances.shape={np.shape(instances)}")
        num_classes = len(self.class_names)
        valid = labels != self.ignore_label
        for name, values in (("labels", labels[valid]), ("predictions", predictions)):
            if values.size and not (0 <= values.min() and values.max() < num_classes):
                raise ValueError(f"{name} must be class ids in [0, {num_classes})"
                                 f"{' or ignore_label' if name == 'labels' else ''}; received "
                                 f"values from {values.min()} to {values.max()}")
        wrong = valid & (labels != predictions)
        self._false_positive += np.bincount(predictions[wrong], minlength=num_classes)
        predictions = predictions.reshape(images.shape)
        if instances is not None:
            instances = np.asarray(instances).reshape(images.shape)
        for index, image in enumerate(images):
            for class_id in self.target_class_ids:
                mask = image == class_id
                if instances is None:
                    _, ids = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
                    ids = ids[mask] - 1
                else:
                    mask &= instances[index] != 0
                    _, ids = np.unique(instances[index][mask], return_inverse=True)
                sizes = np.bincount(ids)
                hits = np.bincount(ids[predictions[index][mask] == class_id],
                                   minlength=len(sizes))
                self._true_positive[class_id] += np.sum(hits / sizes)
                self._false_negative[class_id] += np.sum((sizes - hits) / sizes)
                self._instance_count[class_id] += len(sizes)
                self._instance_pixels[class_id] += sizes.sum()

    def result(self):
        """{"mean_iiou": float, "per_class_iiou": {class name: float}} for the target
        classes, NaN where undefined."""
        per_class = {}
        for class_id in self.target_class_ids:
            count = self._instance_count[class_id]
            if not count:
                per_class[self.class_names[class_id]] = float("nan")
                continue
            size = (self.average_sizes[class_id] if self.average_sizes is not None
                    else self._instance_pixels[class_id] / count)
            true_positive = size * self._true_positive[class_id]
            per_class[self.class_names[class_id]] = float(true_positive / (
                true_positive + self._false_positive[class_id]
                + size * self._false_negative[class_id]))
        values = [v for v in per_class.values() if not np.isnan(v)]
        return {"mean_iiou": float(np.mean(values)) if values else float("nan"),
                "per_class_iiou": per_class}


def seed_per_image_foreground_iou(labels, predictions):
    """The interferogram seed's "mean IoU", per image: |prediction ∩ truth| / |truth| of class 1.

    Not an IoU: false positives do not lower it, so a prediction covering every ground-truth
    pixel scores 1 (it is the per-image foreground recall). The seed averaged it over images
    (and on its training images); use `np.nanmean` of the values gathered over a data set to
    reproduce its figures, and `scores_from_confusion` for real scores. Images without
    ground-truth foreground have no value (0 / 0): they are NaN, so `np.nanmean` skips them.

    Args:
        labels: int array (H, W) or (B, H, W), 1 for foreground. Other values (background,
            an ignore label) are not foreground.
        predictions: int array of the same shape, 1 for foreground.

    Returns:
        float64 array (B,) (or (1,) for one image) of per-image values.
    """
    labels, predictions = _label_maps(labels, predictions)
    truth = (labels == 1).reshape(-1, labels.shape[-2] * labels.shape[-1])
    hits = truth & (predictions == 1).reshape(truth.shape)
    sizes = truth.sum(1)
    return np.divide(hits.sum(1), sizes, out=np.full(len(sizes), np.nan), where=sizes > 0)


def rgb_to_y(images):
    """Y of MATLAB `rgb2ycbcr` (ITU-R BT.601, studio swing, 16..235) of RGB 0..255 images
    (..., 3): Y = round(16 + (65.481 R + 128.553 G + 24.966 B) / 255), float64.

    Rounded as `rgb2ycbcr` rounds for uint8 images, as in the MATLAB scripts behind published
    SR tables: Set5 x4 bicubic then scores 28.42 dB / 0.8102 (published 28.42 / 0.8104) against
    28.43 / 0.8113 unrounded.
    """
    images = np.asarray(images, np.float64)
    if images.shape[-1:] != (3,):
        raise ValueError(f"images must be RGB with a last axis of 3; received shape "
                         f"{images.shape}")
    return np.round(16.0 + images @ _Y_WEIGHTS)


def psnr_y(sr, hr, *, shave):
    """PSNR in dB on the Y channel after shaving `shave` pixels off each border, peak 255.

    PSNR = 10 log10(255^2 / MSE), inf for identical images. Images are scored as given: round
    and clip an SR output to 0..255 first (`tfseg.data.super_resolution.to_8bit`), as the
    published figures measure saved 8-bit images.

    Args:
        sr: float RGB 0..255, (H, W, 3) or (B, H, W, 3).
        hr: float RGB 0..255 of the same shape.
        shave: int >= 0. Border pixels left out on each side, the scale factor by convention.

    Returns:
        float64 array of the batch shape (shape () for one image).
    """
    sr_y, hr_y = _shaved_y(sr, hr, shave)
    error = np.mean((sr_y - hr_y) ** 2, axis=(-2, -1))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(255.0 ** 2 / error)


def ssim_y(sr, hr, *, shave):
    """SSIM (Wang et al. 2004) on the Y channel after shaving `shave` pixels off each border.

    The standard settings: 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255,
    the mean of the SSIM map over window positions inside the image ("valid", as in the
    reference MATLAB `ssim_index`); computed by `tf.image.ssim`. Arguments and returns as
    `psnr_y`; the shaved images must be at least 11 pixels on each side.
    """
    sr_y, hr_y = _shaved_y(sr, hr, shave)
    if min(sr_y.shape[-2:]) < 11:
        raise ValueError(f"sr and hr must be at least 11 pixels on each side after shaving "
                         f"shave={shave}; received {sr_y.shape[-2:]} after shaving")
    return tf.image.ssim(sr_y[..., None], hr_y[..., None], max_val=255.0, filter_size=11,
                         filter_sigma=1.5, k1=0.01, k2=0.03).numpy().astype(np.float64)


def bicubic_baseline(lr, hr, scale):
    """Scores of the bicubic upscaling of `lr`, the baseline of SR tables.

    LR is upscaled by `scale` with `tf.image.resize` bicubic (no antialiasing), rounded and
    clipped to 8 bits, and scored by `psnr_y` and `ssim_y` with `shave=scale`.

    Args:
        lr: float RGB 0..255, (h, w, 3) or (B, h, w, 3).
        hr: float RGB 0..255, (h * scale, w * scale, 3) or with the batch axis.
        scale: int >= 2. Upscaling factor.

    Returns:
        {"psnr_y": array, "ssim_y": array}, each of the batch shape.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 2:
        raise ValueError(f"scale must be an integer >= 2; received scale={scale!r}")
    lr = tf.convert_to_tensor(lr, tf.float32)
    upscaled = to_8bit(tf.image.resize(lr, tf.shape(lr)[-3:-1] * scale, method="bicubic",
                                       antialias=False)).numpy()
    return y_scores(upscaled, hr, shave=scale)


def y_scores(sr, hr, *, shave):
    """{"psnr_y": array, "ssim_y": array} of `sr` against `hr` (`psnr_y`, `ssim_y`): the
    pair every SR table reports."""
    return {"psnr_y": psnr_y(sr, hr, shave=shave), "ssim_y": ssim_y(sr, hr, shave=shave)}


def _shaved_y(sr, hr, shave):
    """Y channels (..., H - 2 shave, W - 2 shave) of `sr` and `hr`, after argument checks."""
    sr, hr = np.asarray(sr), np.asarray(hr)
    if sr.shape != hr.shape or sr.ndim not in (3, 4):
        raise ValueError(f"sr and hr must have the same shape, (H, W, 3) or (B, H, W, 3); "
                         f"received sr.shape={sr.shape}, hr.shape={hr.shape}")
    if (isinstance(shave, bool) or not isinstance(shave, (int, np.integer)) or shave < 0
            or 2 * shave >= min(sr.shape[-3:-1])):
        raise ValueError(f"shave must be an integer >= 0 leaving pixels of the "
                         f"{sr.shape[-3:-1]} images; received shave={shave!r}")
    crop = (Ellipsis, slice(shave, sr.shape[-3] - shave), slice(shave, sr.shape[-2] - shave),
            slice(None))
    return rgb_to_y(sr[crop]), rgb_to_y(hr[crop])


def _label_maps(labels, predictions):
    """`labels` and `predictions` as numpy (H, W) or (B, H, W) maps of one shape."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.ndim not in (2, 3) or predictions.shape != labels.shape:
        raise ValueError(f"labels must be (H, W) or (B, H, W) and predictions of the same shape;"
                         f" received labels.shape={labels.shape}, "
                         f"predictions.shape={predictions.shape}")
    return labels, predictions
