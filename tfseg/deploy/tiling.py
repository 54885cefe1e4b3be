"""Sliding-window inference: frames larger (or smaller) than a model's input, tile by tile.

Overlapping tiles are blended with a window that ramps smoothly (raised cosine) over the
overlap and is flat elsewhere, so every output pixel is a weighted mean of the tiles covering
it and no seam is left where tiles meet. The same code serves segmentation (logits are
blended, then the caller takes the argmax) and super-resolution (the output grid is the input
grid times the scale).
"""

import math

import numpy as np


def tile_starts(length, tile, overlap):
    """Start offsets of tiles of `tile` pixels covering `length` with at least `overlap`
    pixels shared by neighbours, spread evenly so the first starts at 0 and the last ends at
    `length` (`length` >= `tile`)."""
    if length <= tile:
        return [0]
    count = math.ceil((length - tile) / (tile - overlap)) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def blend_window(size, overlap, *, ramp_start=True, ramp_end=True):
    """1-D weights of one tile: a raised-cosine ramp over `overlap` pixels at each end that
    meets a neighbouring tile, 1 elsewhere.

    A tile's outputs near its edges are the least reliable (the network sees padding there),
    so they get the least weight; the ramp never reaches 0 and an end on the frame border is
    flat, so a pixel covered by a single tile keeps its value once the blend is normalised.
    """
    window = np.ones(size, np.float32)
    if overlap <= 0:
        return window
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap, dtype=np.float32) + 0.5) / overlap)
    if ramp_start:
        window[:overlap] = ramp
    if ramp_end:
        window[size - overlap:] = np.minimum(window[size - overlap:], ramp[::-1])
    return window


def predict_tiled(run, image, tile, overlap=None, batch_size=8):
    """Runs `run` over `image` in overlapping tiles and blends the outputs.

    Args:
        run: callable. float32 (N, h, w, C) -> float32 (N, s*h, s*w, K), e.g. a
            `tfseg.deploy.runtimes.Runtime`; s = 1 for segmentation, the upscaling factor for SR.
        image: float32 (H, W, C) frame.
        tile: (h, w). The model's input size. A frame smaller than the tile is reflect-padded
            up to it and the output cropped back.
        overlap: int. Pixels shared by neighbouring tiles (at least; tiles spread evenly).
            Defaults to a quarter of the smaller tile side.
        batch_size: int. Tiles per call of `run`.

    Returns:
        float32 (s*H, s*W, K): equal to `run(image[None])[0]` whenever the tile is the
        frame size.
    """
    tile_h, tile_w = tile
    if overlap is None:
        overlap = min(tile_h, tile_w) // 4
    if not 0 <= overlap < min(tile_h, tile_w):
        raise ValueError(f"overlap {overlap} must be in [0, {min(tile_h, tile_w)}) for "
                         f"{tile_h}x{tile_w} tiles")
    height, width = image.shape[:2]
    padded = _pad_to(image, tile_h, tile_w)
    corners = [(y, x) for y in tile_starts(padded.shape[0], tile_h, overlap)
               for x in tile_starts(padded.shape[1], tile_w, overlap)]
    outputs = _run_batched(run, [padded[y:y + tile_h, x:x + tile_w] for y, x in corners],
                           batch_size)
    scale = _scale(outputs.shape[1:3], tile)
    if len(corners) == 1:
        blended = outputs[0]
    else:
        blended = _blend(outputs, corners, scale, padded.shape[:2], overlap)
    return blended[:scale * height, :scale * width]


def _pad_to(image, height, width):
    """`image` reflect-padded at the bottom and right to at least `height` x `width`."""
    pad_h, pad_w = max(height - image.shape[0], 0), max(width - image.shape[1], 0)
    if not pad_h and not pad_w:
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")


def _run_batched(run, tiles, batch_size):
    batches = [run(np.stack(tiles[i:i + batch_size]).astype(np.float32))
               for i in range(0, len(tiles), batch_size)]
    return np.concatenate(batches)


def _scale(output_size, tile):
    """The integer factor between a tile and its output (1 for segmentation)."""
    scale = output_size[0] // tile[0]
    if tuple(output_size) != (scale * tile[0], scale * tile[1]):
        raise ValueError(f"a {tile[0]}x{tile[1]} tile gave a {output_size[0]}x"
                         f"{output_size[1]} output: not an integer multiple")
    return scale


def _blend(outputs, corners, scale, size, overlap):
    """Weighted mean of the tile outputs placed at `corners` (input pixels) x `scale`."""
    tile_h, tile_w, channels = outputs.shape[1:]
    total = np.zeros((scale * size[0], scale * size[1], channels), np.float32)
    weights = np.zeros((scale * size[0], scale * size[1], 1), np.float32)
    for output, (y, x) in zip(outputs, corners):
        top, left = scale * y, scale * x
        weight = np.outer(
            blend_window(tile_h, scale * overlap, ramp_start=top > 0,
                         ramp_end=top + tile_h < total.shape[0]),
            blend_window(tile_w, scale * overlap, ramp_start=left > 0,
                         ramp_end=left + tile_w < total.shape[1]))[..., None]
        window = np.s_[top:top + tile_h, left:left + tile_w]
        total[window] += weight * output
        weights[window] += weight
    return total / weights
