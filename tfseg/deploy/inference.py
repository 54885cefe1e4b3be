"""Inference on frames as stored: image files, folders and videos read as sequences, each
frame preprocessed as an export's metadata says, run (tile by tile where needed) and turned
into masks and overlays, or upscaled images. The library of `python -m tfseg.predict`."""

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tfseg.data import preprocess
from tfseg.deploy import runtimes
from tfseg.deploy.tiling import predict_tiled
from tfseg.utils.errors import TfsegError
from tfseg.utils.images import read_unchanged, stretch_to_8bit, write_png

IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv")
TASKS = ("segmentation", "super_resolution")
OVERLAY_ALPHA = 0.5
# The metadata's `preprocessing` (the recipe's data.preprocess, resize_to and colour).
PREPROCESSING_KEYS = ("blur", "background_every", "background_alpha", "clahe_clip_limit",
                      "clahe_tile_grid", "crop", "resize_to", "colour")
_TO_COLOUR = {("gray", 3): cv2.COLOR_BGR2GRAY, ("gray", 4): cv2.COLOR_BGRA2GRAY,
              ("rgb", 3): cv2.COLOR_BGR2RGB, ("rgb", 4): cv2.COLOR_BGRA2RGB}


@dataclass(frozen=True)
class Sequence:
    """Frames that share one background: image files in order, or one video."""

    images: tuple = ()
    video: Path = None

    def frames(self, colour, every=1):
        """(name, source, frame) of every `every`-th frame; frames are (H, W) "gray" or
        (H, W, 3) "rgb", uint8 or uint16."""
        if self.video is None:
            for path in self.images[::every]:
                yield path.stem, path, read_image(path, colour)
        else:
            yield from read_video(self.video, colour, every)


def read_image(path, colour):
    """An image file as a `colour` ("gray" or "rgb") uint8/uint16 frame; TfsegError naming
    an unreadable one."""
    return to_colour(read_unchanged(path), colour, path)


def read_video(path, colour, every=1):
    """(name, source, frame) of every `every`-th frame of a video (skipped frames are only
    grabbed, not decoded)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise TfsegError(f"{path}: unreadable video")
    index = 0
    try:
        while capture.grab():
            if index % every == 0:
                ok, frame = capture.retrieve()
                if not ok:
                    raise TfsegError(f"{path}: frame {index} cannot be decoded")
                yield f"{path.stem}_{index:06d}", f"{path} frame {index}", to_colour(
                    frame, colour, path)
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise TfsegError(f"{path}: no frames could be read from this video")


def to_colour(frame, colour, source):
    """`frame` as decoded by OpenCV (gray, BGR or BGRA) -> (H, W) gray or (H, W, 3) RGB."""
    if frame.dtype not in (np.uint8, np.uint16):
        raise TfsegError(f"{source}: {frame.dtype} pixels; expected 8- or 16-bit images")
    if frame.ndim == 2:
        return frame if colour == "gray" else cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(frame, _TO_COLOUR[colour, frame.shape[2]])


def find_sequences(paths):
    """The `Sequence`s of command-line inputs: one per folder and per video, and one for the
    image files named directly. Raises TfsegError for a missing or unknown input, an empty
    folder, or two frames that would get the same output name."""
    loose, sequences = [], []
    for path in map(Path, paths):
        suffix = path.suffix.lower()
        if path.is_dir():
            images = tuple(sorted(p for p in path.iterdir() if p.suffix.lower()
                                  in IMAGE_SUFFIXES and not p.name.startswith(".")))
            if not images:
                raise TfsegError(f"{path}: no images in this folder (expected "
                                 f"{', '.join(IMAGE_SUFFIXES)} files)")
            sequences.append(Sequence(images=images))
        elif not path.exists():
            raise TfsegError(f"{path}: no such file or folder")
        elif suffix in VIDEO_SUFFIXES:
            sequences.append(Sequence(video=path))
        elif suffix in IMAGE_SUFFIXES:
            loose.append(path)
        else:
            raise TfsegError(f"{path}: not an image ({', '.join(IMAGE_SUFFIXES)}) or a video "
                             f"({', '.join(VIDEO_SUFFIXES)})")
    if loose:
        sequences.append(Sequence(images=tuple(loose)))
    _check_unique_names(sequences)
    return sequences


def _check_unique_names(sequences):
    seen = {}
    for sequence in sequences:
        for path in sequence.images or [sequence.video]:
            if path.stem in seen:
                raise TfsegError(f"{path}: its outputs would overwrite those of "
                                 f"{seen[path.stem]} (same name {path.stem!r})")
            seen[path.stem] = path


def load_model(path, runtime=None):
    """`tfseg.deploy.runtimes.load`, checked to carry the tfseg metadata prediction needs."""
    model = runtimes.load(path, runtime)
    metadata = model.metadata
    if metadata.get("task") not in TASKS:
        model.close()
        raise TfsegError(f"{path}: not a tfseg export (its metadata names no task "
                         f"{' or '.join(TASKS)})")
    needed = ("class_colours",) if metadata["task"] == "segmentation" else ("scale",)
    missing = [key for key in needed if key not in metadata] + [
        f"preprocessing.{key}" for key in PREPROCESSING_KEYS
        if key not in metadata.get("preprocessing", {})]
    if missing:
        model.close()
        raise TfsegError(f"{path}: tfseg metadata without {', '.join(missing)}; export the "
                         f"model again")
    return model


def sequence_background(sequence, steps, convert=None):
    """Mean of every k-th blurred frame of `sequence` (k = background_every), or None."""
    every = steps["background_every"]
    if not every:
        return None

    def sampled():
        shape = None
        for _, source, frame in sequence.frames(steps["colour"], every):
            shape = shape or frame.shape
            if frame.shape != shape:
                raise TfsegError(f"{source}: {_size(frame)} frame in a sequence of "
                                 f"{shape[0]}x{shape[1]} frames (one background needs one "
                                 f"size)")
            yield convert(frame) if convert else frame

    return preprocess.estimate_background(sampled(), steps["blur"])


def preprocess_frame(frame, background, steps):
    """One raw frame -> float32 (H, W, C) network input, in the training order: box blur,
    background subtraction, CLAHE (per channel), crop, bicubic resize to `resize_to`."""
    max_value = float(np.iinfo(frame.dtype).max)
    image = preprocess.subtract_background(preprocess.box_blur(frame, steps["blur"]),
                                           background, steps["background_alpha"])
    image = image.reshape(*image.shape[:2], -1)
    image = np.stack([preprocess.equalize(image[..., c], steps["clahe_clip_limit"],
                                          steps["clahe_tile_grid"], max_value)
                      for c in range(image.shape[-1])], axis=-1)
    image = preprocess.crop(image, steps["crop"])
    if steps["resize_to"] and image.shape[:2] != tuple(steps["resize_to"]):
        height, width = steps["resize_to"]
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
    return image.reshape(*image.shape[:2], -1)


def run_model(model, image, tile=None, overlap=None):
    """Model output (H', W', K) of one preprocessed frame, tiled when `tile` is given."""
    if tile:
        return predict_tiled(model, image, tile, overlap)
    return model(image[None])[0]


def choose_tile(model, tile, overlap):
    """The tile size for `model`: `tile` (--tile), else a static model's input size, else
    None (whole frames). Raises TfsegError for a tile or overlap the model cannot use."""
    if tile and model.input_size and tuple(tile) != model.input_size:
        raise TfsegError(f"--tile {tile[0]}x{tile[1]}: the model takes "
                         f"{model.input_size[0]}x{model.input_size[1]} frames only")
    tile = tuple(tile or model.input_size or ()) or None
    if tile and overlap is not None and not 0 <= overlap < min(tile):
        raise TfsegError(f"--overlap {overlap}: must be in [0, {min(tile)}) for "
                         f"{tile[0]}x{tile[1]} tiles")
    return tile


def segmentation_pictures(logits, image, colours):
    """{"mask": uint8 class ids (H, W), "overlay": RGB class colours on the frame}."""
    mask = logits.argmax(-1).astype(np.uint8)
    painted = np.asarray(colours, np.float32)[mask]
    overlay = (1 - OVERLAY_ALPHA) * stretch_to_8bit(image) + OVERLAY_ALPHA * painted
    return {"mask": mask, "overlay": np.round(overlay).astype(np.uint8)}


def super_resolution_picture(pixels, image, scale, match):
    """{"x<scale>": uint8 (sH, sW, C) upscaled frame}, histogram-matched to `image` when
    `match`."""
    upscaled = np.clip(np.round(pixels), 0, 255).astype(np.uint8)
    if match:
        upscaled = match_histogram(upscaled, np.clip(np.round(image), 0, 255).astype(np.uint8))
    return {f"x{scale}": upscaled}


def match_histogram(image, reference):
    """uint8 `image` with each channel remapped so that its cumulative histogram follows the
    same channel of uint8 `reference` (any size): an upscaled frame keeps its input's tones."""
    matched = np.empty_like(image)
    for channel in range(image.shape[-1]):
        counts = np.bincount(image[..., channel].ravel(), minlength=256)
        values, cdf = _cumulative(reference[..., channel])
        lookup = np.interp(np.cumsum(counts) / counts.sum(), cdf, values)
        matched[..., channel] = np.round(lookup).astype(np.uint8)[image[..., channel]]
    return matched


def _cumulative(channel):
    """The values present in a uint8 channel and their cumulative frequencies (increasing)."""
    counts = np.bincount(channel.ravel(), minlength=256)
    values = np.flatnonzero(counts)
    return values, np.cumsum(counts)[values] / channel.size


def predict_sequence(model, sequence, *, tile=None, overlap=None, match_histogram=False):
    """(name, {suffix: uint8 picture}) for every frame of `sequence`."""
    metadata = model.metadata
    steps = metadata["preprocessing"]
    super_resolution = metadata["task"] == "super_resolution"
    convert = to_8bit if super_resolution else None
    background = sequence_background(sequence, steps, convert)
    for name, source, frame in sequence.frames(steps["colour"]):
        frame = convert(frame) if convert else frame
        if background is not None and background.shape != frame.shape:
            raise TfsegError(f"{source}: {_size(frame)} frame in a sequence of "
                             f"{_size(background)} frames (one background needs one size)")
        try:
            image = preprocess_frame(frame, background, steps)
        except ValueError as error:
            raise TfsegError(f"{source}: {error}") from None
        output = run_model(model, image, tile, overlap)
        if super_resolution:
            yield name, super_resolution_picture(output, image, metadata["scale"],
                                                 match_histogram)
        else:
            yield name, segmentation_pictures(output, image, metadata["class_colours"])


def to_8bit(frame):
    """16-bit frames scaled into 8 bits (/257, rounded); 8-bit frames unchanged."""
    if frame.dtype == np.uint8:
        return frame
    return np.round(frame / 257.0).astype(np.uint8)


def _size(frame):
    return f"{frame.shape[0]}x{frame.shape[1]}"


def frame_rate_line(count, seconds, model):
    """The run's end-to-end frame rate (backgrounds, reading, preprocessing, inference,
    writing), the share of it `model` spent inferring, and what ran the model."""
    return (f"{count / seconds:.3g} frames/s end to end ({seconds:.3f} s: backgrounds, "
            f"reading, preprocessing, writing and {model.name} inference, which took "
            f"{model.seconds:.3f} s = {model.seconds / count:.4f} s per frame); "
            f"{model.version}")


def predict_files(model_path, inputs, output, *, runtime=None, tile=None, overlap=None,
                  match_histogram=False):
    """Predicts every frame of `inputs` (images, folders of images, videos) with the export at
    `model_path` and writes the pictures into the folder `output`; prints the frame count and
    the end-to-end frame rate. Inputs, model and names are checked before anything is written.
    """
    sequences = find_sequences(inputs)
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise TfsegError(f"{output}: exists and is not a folder")
    with load_model(model_path, runtime) as model:
        tile = choose_tile(model, tile, overlap)
        output.mkdir(parents=True, exist_ok=True)
        count, started = 0, time.perf_counter()
        for sequence in sequences:
            for name, pictures in predict_sequence(model, sequence, tile=tile,
                                                   overlap=overlap,
                                                   match_histogram=match_histogram):
                for suffix, picture in pictures.items():
                    write_png(output / f"{name}_{suffix}.png", picture, rgb=True)
                count += 1
        print(f"{count} frame(s) -> {output}")
        if count:
            print(frame_rate_line(count, time.perf_counter() - started, model))
    return count
