"""Inference on frames as stored: image files, folders and videos read as sequences, each
frame preprocessed as an export's metadata says, run (tile by tile where needed) and turned
into masks and overlays at the frame's own size (and the samples' boxes), or upscaled
images. The library of `python -m tfseg.predict`."""

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from tfseg.config import DataConfig
from tfseg.data.labels import ROI_FILE, write_roi_json, write_yolo
from tfseg.data.sequences import (
    FRAME_SUFFIXES,
    VIDEO_SUFFIXES,
    Sequence,
    frame_files,
    find_sequences,
)
from tfseg.deploy import runtimes
from tfseg.deploy.metadata import preprocessing_of
from tfseg.deploy.tiling import predict_tiled
from tfseg.tasks.samples import background_class, component_boxes, foreground
from tfseg.tasks.test_time import averaging_predictor
from tfseg.utils.errors import TfsegError
from tfseg.utils.images import stretch_to_8bit, write_png

TASKS = ("segmentation", "super_resolution")
OVERLAY_ALPHA = 0.5
UNSEEN = 255   # mask value of frame pixels outside the crop the network sees


def input_sequences(paths):
    """The `Sequence`s of command-line inputs: the sequences of each folder (the folder, or
    its subfolders that hold frames, as `data.path` is read in training), one per video, and
    one for the image files named directly. Raises TfsegError for a missing or unknown
    input, a folder without frames, or two frames that would get the same output file."""
    loose, sequences = [], []
    for path in map(Path, paths):
        suffix = path.suffix.lower()
        if path.is_dir():
            sequences.extend(Sequence(images=tuple(frame_files(folder)),
                                      name="" if folder == path else folder.name)
                             for folder in find_sequences(path))
        elif not path.exists():
            raise TfsegError(f"{path}: no such file or folder")
        elif suffix in VIDEO_SUFFIXES:
            sequences.append(Sequence(video=path))
        elif suffix in FRAME_SUFFIXES:
            loose.append(path)
        else:
            raise TfsegError(f"{path}: not an image ({', '.join(FRAME_SUFFIXES)}) or a video "
                             f"({', '.join(VIDEO_SUFFIXES)})")
    if loose:
        sequences.append(Sequence(images=tuple(loose)))
    _check_unique_names(sequences)
    return sequences


def _check_unique_names(sequences):
    seen = {}
    for sequence in sequences:
        for path in sequence.images or [sequence.video]:
            key = (sequence.name, path.stem)
            if key in seen:
                raise TfsegError(f"{path}: its outputs would overwrite those of {seen[key]} "
                                 f"(same name {path.stem!r})")
            seen[key] = path


def load_model(path, runtime=None):
    """`tfseg.deploy.runtimes.load`, checked to carry the tfseg metadata prediction needs."""
    model = runtimes.load(path, runtime)
    metadata = model.metadata
    try:
        if metadata.get("task") not in TASKS:
            raise TfsegError(f"{path}: not a tfseg export (its metadata names no task "
                             f"{' or '.join(TASKS)})")
        needed = "class_colours" if metadata["task"] == "segmentation" else "scale"
        if needed not in metadata:
            raise TfsegError(f"{path}: tfseg metadata without {needed}; export the model "
                             f"again")
        preprocessing_of(metadata, path)
    except TfsegError:
        model.close()
        raise
    return model


def run_model(model, image, tile=None, overlap=None, views="none", slope_channels=None):
    """Model output (H', W', K) of one preprocessed frame, tiled when `tile` is given, and
    averaged over the test-time `views` (`tfseg.tasks.test_time`; the input's phase slopes
    in `slope_channels`). A recurrent model runs the frame whole, as the next of its
    sequence (its state carried)."""
    if model.recurrent:
        if tuple(image.shape[:2]) != model.input_size:
            raise TfsegError(f"the {model.name} model is recurrent and takes whole "
                             f"{model.input_size[0]}x{model.input_size[1]} frames (one state "
                             f"per frame, no tiles); the frames are prepared at "
                             f"{image.shape[0]}x{image.shape[1]}")
        return model(image[None])[0]
    predict = averaging_predictor(model, views, slope_channels)
    if tile:
        return predict_tiled(predict, image, tile, overlap)
    return predict(image[None])[0]


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


def resize_logits(logits, size):
    """float32 (h, w, K) logits resized bilinearly (half-pixel centres, as
    `tf.image.resize`, which `tfseg.evaluate` uses) to `size` (H, W)."""
    if tuple(logits.shape[:2]) == tuple(size):
        return logits
    resized = cv2.resize(np.asarray(logits, np.float32), (int(size[1]), int(size[0])),
                         interpolation=cv2.INTER_LINEAR)
    return resized.reshape(*size, logits.shape[-1])


def mask_in_frame(logits, frame_size, region=()):
    """uint8 (H, W) class ids of a raw frame of `frame_size` from the logits of its
    preprocessed version: the logits resized (bilinear) to the `region` (x, y, w, h) the
    network saw (the preprocessing's crop; () the whole frame), then the argmax; pixels
    outside the region are `UNSEEN`."""
    height, width = frame_size
    x, y, w, h = region or (0, 0, width, height)
    mask = np.full((height, width), UNSEEN, np.uint8)
    mask[y:y + h, x:x + w] = resize_logits(logits, (h, w)).argmax(-1)
    return mask


def frame_picture(frame):
    """uint8 RGB (H, W, 3) view of a raw frame as read: 8-bit frames as they are, others
    (16-bit, float) min-max stretched to 0..255 (`stretch_to_8bit`)."""
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.dtype != np.uint8:
        return stretch_to_8bit(frame)
    return np.repeat(frame, 3, axis=-1) if frame.shape[-1] == 1 else frame


def segmentation_pictures(logits, frame, colours, region=()):
    """{"mask": uint8 class ids (H, W) at the size of `frame` (`mask_in_frame`), "overlay":
    RGB class colours blended on the frame (`frame_picture`), left unpainted where the
    network did not look}."""
    mask = mask_in_frame(logits, np.shape(frame)[:2], region)
    shown = frame_picture(frame)
    seen = mask != UNSEEN
    painted = np.asarray(colours, np.uint8)[np.where(seen, mask, 0)]
    # OpenCV's blend rounds half to even, as np.round did on the same sums in float64 (at
    # 0.5, halves of 8-bit values are exact in either), in one pass over 3072x3072x3 bytes.
    overlay = cv2.addWeighted(shown, 1 - OVERLAY_ALPHA, painted, OVERLAY_ALPHA, 0.0)
    if not seen.all():
        overlay[~seen] = shown[~seen]
    return {"mask": mask, "overlay": overlay}


def sample_boxes(mask, background_id, min_area):
    """The samples of a frame-size class-id `mask`: (x, y, w, h) boxes of the 8-connected
    components of every class but `background_id` covering at least `min_area` of the frame
    (`tfseg.tasks.samples`), as evaluate scores them."""
    return component_boxes(foreground(mask, background_id, UNSEEN), min_area=min_area)


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


def predict_sequence(model, sequence, *, tile=None, overlap=None, match_histogram=False,
                     test_time=None):
    """(name, {suffix: uint8 picture}) for every frame of `sequence`, each preprocessed as
    the model's metadata says; segmentation pictures at the frame's own size, averaged over
    the `test_time` views (`tfseg.tasks.test_time`; default: the metadata's). A recurrent
    model starts the sequence from a zero state and carries it through the frames, in
    order. Each frame is read and preprocessed while the model runs on the one before
    (`prepared_frames`)."""
    metadata = model.metadata
    preprocessing = preprocessing_of(metadata, f"the {model.name} model")
    background = sequence.background(preprocessing)
    views = test_time_views(model, f"the {model.name} model", test_time)
    model.reset()
    for name, frame, image in prepared_frames(sequence, preprocessing, background):
        output = run_model(model, image, tile, overlap, views, preprocessing.slope_channels)
        yield name, frame_pictures(metadata, preprocessing, output, frame, image,
                                   match_histogram)


def test_time_views(model, source, views=None):
    """The test-time views the export `source` runs: `views` if given, else its metadata's
    ("test_time", checked with it; "none" for exports without it). TfsegError where the
    views given cannot apply."""
    if not views:
        return model.metadata.get("test_time", "none")
    if views != "none" and (model.recurrent or model.metadata["task"] != "segmentation"):
        raise TfsegError(f"test-time views {views!r}: {source} "
                         f"{'is recurrent' if model.recurrent else 'is not a segmentation model'}"
                         f"; run it with 'none'")
    size = model.input_size
    if views == "flips_and_transpose" and size and size[0] != size[1]:
        raise TfsegError(f"test-time views 'flips_and_transpose' need a square model input; "
                         f"{source} takes {size[0]}x{size[1]}: use 'flips'")
    return views


def prepared_frames(sequence, preprocessing, background):
    """(name, frame, network input) of every frame of `sequence`, in order, each read and
    preprocessed in a worker thread one frame ahead of the caller: reading and preprocessing
    (OpenCV and numpy, which release the GIL) overlap the model, the pictures and their
    files. A frame that cannot be read or preprocessed raises TfsegError naming it when the
    caller reaches it, after the frames before it."""
    frames = sequence.frames(preprocessing.colour)

    def prepare_next():
        for name, source, frame in frames:
            try:
                return name, frame, preprocessing.image(frame, background)
            except ValueError as error:
                raise TfsegError(f"{source}: {error}") from None
        return None

    with ThreadPoolExecutor(max_workers=1) as worker:
        pending = worker.submit(prepare_next)
        while (prepared := pending.result()) is not None:
            pending = worker.submit(prepare_next)
            yield prepared


def frame_pictures(metadata, preprocessing, output, frame, image, match_histogram=False):
    """{suffix: uint8 picture} of one frame from the model's `output` on its preprocessed
    `image`: segmentation pictures at the raw `frame`'s size, or the upscaled frame."""
    if metadata["task"] == "super_resolution":
        return super_resolution_picture(output, image, metadata["scale"], match_histogram)
    return segmentation_pictures(output, frame, metadata["class_colours"],
                                 preprocessing.steps.crop)


def write_pictures(folder, name, pictures):
    """Writes a frame's pictures as `<name>_<suffix>.png` PNGs into `folder`."""
    for suffix, picture in pictures.items():
        write_png(folder / f"{name}_{suffix}.png", picture, rgb=True)


def frame_rate_line(count, seconds, model):
    """The run's end-to-end frame rate (backgrounds, reading, preprocessing, inference,
    writing), the share of it `model` spent inferring, and what ran the model."""
    return (f"{count / seconds:.3g} frames/s end to end ({seconds:.3f} s: backgrounds, "
            f"reading, preprocessing, writing and {model.name} inference, which took "
            f"{model.seconds:.3f} s = {model.seconds / count:.4f} s per frame); "
            f"{model.version}")


def predict_files(model_path, inputs, output, *, runtime=None, tile=None, overlap=None,
                  match_histogram=False, boxes=False, min_sample_area=None, test_time=None):
    """Predicts every frame of `inputs` (images, folders of images, videos) with the export at
    `model_path` and writes the pictures into the folder `output`; prints the frame count and
    the end-to-end frame rate. With `boxes`, each output folder also gets the samples found
    (`write_boxes`): components of at least `min_sample_area` of the frame (default: the
    export's metadata, else the config's default). `test_time`: the views averaged
    (`tfseg.tasks.test_time`; default: the export's metadata). Inputs, model and names are
    checked before anything is written.
    """
    sequences = input_sequences(inputs)
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise TfsegError(f"{output}: exists and is not a folder")
    if boxes:
        _check_box_folders(sequences, output)
    with load_model(model_path, runtime) as model:
        tile = choose_tile(model, tile, overlap)
        test_time = test_time_views(model, model_path, test_time)
        background_id = _background_for_boxes(model, model_path) if boxes else None
        if min_sample_area is None:
            # Exports from before the metadata carried it: the config's default.
            min_sample_area = model.metadata.get("min_sample_area", DataConfig.min_sample_area)
        output.mkdir(parents=True, exist_ok=True)
        count, started = 0, time.perf_counter()
        for sequence in sequences:
            folder = output / sequence.name
            folder.mkdir(exist_ok=True)
            files = {path.stem: path.name for path in sequence.images}
            found = []
            try:
                for name, pictures in predict_sequence(model, sequence, tile=tile,
                                                       overlap=overlap,
                                                       match_histogram=match_histogram,
                                                       test_time=test_time):
                    write_pictures(folder, name, pictures)
                    if boxes:
                        mask = pictures["mask"]
                        samples = sample_boxes(mask, background_id, min_sample_area)
                        found.append((files.get(name, name), samples))
                        write_yolo(folder / f"{name}.txt", samples, *mask.shape)
                    count += 1
            finally:
                if boxes:   # the frames done so far, also when a later frame fails
                    write_roi_json(folder / ROI_FILE, found)
        print(f"{count} frame(s) -> {output}")
        if count:
            print(frame_rate_line(count, time.perf_counter() - started, model))
    return count


def _check_box_folders(sequences, output):
    """--boxes writes rois.json and YOLO files: never into a folder of input frames, where
    they would replace labels."""
    for sequence in sequences:
        folder = (output / sequence.name).resolve()
        if any(path.parent.resolve() == folder for path in sequence.images):
            raise TfsegError(f"{output / sequence.name}: holds input frames; --boxes would "
                             f"write {ROI_FILE} and YOLO .txt files among them, over any "
                             f"labels there: choose another --output")


def _background_for_boxes(model, path):
    """The background class id of a segmentation export, for --boxes."""
    metadata = model.metadata
    if metadata["task"] != "segmentation":
        raise TfsegError(f"--boxes: {path} is a {metadata['task']} model; boxes are the "
                         f"samples a segmentation model finds")
    background_id = background_class(metadata.get("class_names", ()))
    if background_id is None:
        raise TfsegError(f"--boxes: {path} has no class named background (classes: "
                         f"{', '.join(map(str, metadata.get('class_names', ())))}), so "
                         f"nothing tells samples from the rest")
    return background_id
