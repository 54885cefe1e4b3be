"""The interferogram seed's frame preprocessing, one function per step (numpy + OpenCV).

Order, as in the seed: box blur -> background subtraction -> CLAHE -> resize.
"""

import cv2
import numpy as np


def box_blur(frames, kernel_size):
    """`cv2.blur` with a k x k box on each frame of (T, H, W); k = 0 returns frames unchanged."""
    if kernel_size == 0:
        return frames
    return np.stack([cv2.blur(frame, (kernel_size, kernel_size)) for frame in frames])


def subtract_background(frames, every, alpha):
    """clip(frame - alpha * background, 0), background = mean of every `every`-th frame.

    The background is shared by the whole sequence (the optics do not move, the sample does),
    so subtracting it leaves mostly the sample. Returns float32.
    """
    frames = frames.astype(np.float32)
    if every == 0:
        return frames
    background = frames[::every].mean(axis=0)
    return np.maximum(frames - alpha * background, 0.0)


def equalize(frames, clip_limit, tile_grid, max_value):
    """CLAHE per frame on values rounded into [0, max_value]; clip_limit = 0 is a no-op."""
    if clip_limit == 0:
        return frames
    dtype = np.uint8 if max_value <= 255 else np.uint16
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile_grid, tile_grid))
    rounded = np.clip(np.rint(frames), 0, max_value).astype(dtype)
    return np.stack([clahe.apply(frame) for frame in rounded]).astype(np.float32)


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
