"""Image files through OpenCV: frames read as stored with a clear error for a bad file, and
PNGs written atomically; float frames shown as 8-bit pictures."""

import cv2
import numpy as np

from tfseg.utils.errors import TfsegError
from tfseg.utils.files import check_regular_file, write_bytes_atomic


def read_unchanged(path):
    """The image at `path` as stored: (H, W) or (H, W, C) uint8 or uint16, OpenCV's BGR order.

    Raises:
        TfsegError: not a regular file (a FIFO or device would block or never end, so it is
            never opened), unreadable, truncated or corrupt file (OpenCV's own log lines about
            it are silenced), or pixels of another type.
    """
    check_regular_file(path, "an image file")
    log_level = cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error:   # OpenCV raises for some corrupt headers (a huge size, say)
        image = None
    finally:
        cv2.utils.logging.setLogLevel(log_level)
    if image is None:
        raise TfsegError(f"{path}: unreadable or truncated image")
    if image.dtype.name not in ("uint8", "uint16"):
        raise TfsegError(f"{path}: {image.dtype} pixels; expected 8- or 16-bit images")
    return image


def write_png(path, image, *, rgb=False):
    """Writes a grey (H, W) or colour (H, W, 3) image as PNG, complete or not at all; `rgb`:
    the image is in RGB order (OpenCV writes BGR)."""
    if rgb and image.ndim == 3 and image.shape[-1] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise TfsegError(f"{path}: OpenCV could not encode the image")
    write_bytes_atomic(path, encoded.tobytes())


def stretch_to_8bit(images):
    """uint8 RGB view of float frames (..., H, W, C), C = 1 or 3: each frame min-max
    stretched to 0..255 and rounded. How panels and overlays show preprocessed frames, whose
    range depends on the preprocessing (tools/opencv_segment.py draws its overlay alike)."""
    images = np.asarray(images, np.float32)
    low = images.min(axis=(-3, -2, -1), keepdims=True)
    high = images.max(axis=(-3, -2, -1), keepdims=True)
    scaled = np.round(255 * (images - low) / np.maximum(high - low, 1e-6)).astype(np.uint8)
    return np.repeat(scaled, 3, axis=-1) if scaled.shape[-1] == 1 else scaled
