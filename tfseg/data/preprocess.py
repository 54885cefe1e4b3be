"""The interferogram seed's frame preprocessing, one function per step (numpy + OpenCV).

Order, as in the seed: box blur -> background subtraction -> CLAHE -> crop -> resize.
`prepare_frame` chains them for one frame; the background is estimated once per sequence
(folder) by `estimate_background` and shared by all of its frames.
"""

import cv2
import numpy as np


def box_blur(frame, kernel_size):
    """`cv2.blur` with a k x k box; k = 0 returns the frame unchanged."""
    if kernel_size == 0:
        return frame
    return cv2.blur(frame, (kernel_size, kernel_size))


def estimate_background(frames, blur):
    """Mean of the (blurred) frames given: the optics do not move between frames, the sample
    does, so the mean of frames spread over a sequence keeps mostly the background.

    Args:
        frames: iterable of (H, W) frames, e.g. every 10th frame of a folder.
        blur: int. Box-blur kernel applied to each frame first, as to every input frame.

    Returns:
        (H, W) float32 background.
    """
    total, count = None, 0
    for frame in frames:
        blurred = box_blur(frame, blur).astype(np.float32)
        total = blurred if total is None else total + blurred
        count += 1
    if count == 0:
        raise ValueError("estimate_background needs at least one frame")
    return total / count


def subtract_background(frame, background, alpha):
    """clip(frame - alpha * background, 0) as float32; background None returns the frame."""
    frame = frame.astype(np.float32)
    if background is None:
        return frame
    return np.maximum(frame - alpha * background, 0.0)


def equalize(frame, clip_limit, tile_grid, max_value):
    """CLAHE on values rounded into [0, max_value]; clip_limit = 0 is a no-op."""
    if clip_limit == 0:
        return frame
    dtype = np.uint8 if max_value <= 255 else np.uint16
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile_grid, tile_grid))
    rounded = np.clip(np.rint(frame), 0, max_value).astype(dtype)
    return clahe.apply(rounded).astype(np.float32)


def crop(array, region):
    """The (x, y, w, h) region of a 2-D array (the seed's column strip); [] keeps it all."""
    if not region:
        return array
    x, y, w, h = region
    if x + w > array.shape[1] or y + h > array.shape[0]:
        raise ValueError(f"crop region (x, y, w, h) = {tuple(region)} reaches outside the "
                         f"{array.shape[0]}x{array.shape[1]} (HxW) frame")
    return array[y:y + h, x:x + w]


def boxes_to_mask(boxes, height, width):
    """uint8 (H, W) mask: 1 inside any (x, y, w, h) box (clipped to the frame), 0 elsewhere."""
    mask = np.zeros((height, width), np.uint8)
    for x, y, w, h in boxes:
        mask[max(y, 0):max(y + h, 0), max(x, 0):max(x + w, 0)] = 1
    return mask


def resize_pair(image, mask, height, width):
    """Resizes an image (bicubic) and its mask (nearest: label ids are never blended)."""
    if image.shape[:2] == (height, width):
        return image, mask
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
    mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    return image, mask


def prepare_frame(frame, boxes, background, data_config):
    """One raw frame and its boxes -> network-size image (H, W, 1) float32 and mask uint8.

    Args:
        frame: (H, W) uint8 or uint16 raw frame.
        boxes: list of (x, y, w, h) pixel boxes.
        background: (H, W) float32 from `estimate_background`, or None (no subtraction).
        data_config: `tfseg.config.DataConfig` (its `preprocess` steps and output size).
    """
    steps = data_config.preprocess
    max_value = float(np.iinfo(frame.dtype).max)
    image = subtract_background(box_blur(frame, steps.blur), background,
                                steps.background_alpha)
    image = equalize(image, steps.clahe_clip_limit, steps.clahe_tile_grid, max_value)
    mask = boxes_to_mask(boxes, *frame.shape)
    image, mask = crop(image, steps.crop), crop(mask, steps.crop)
    image, mask = resize_pair(image, mask, data_config.height, data_config.width)
    return image[..., None], mask
