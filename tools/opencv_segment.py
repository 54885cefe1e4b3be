"""Segment frames with a tfseg ONNX export using OpenCV alone: copy this file and adapt it.

    python opencv_segment.py model.onnx frame_0001.bmp [frame_0002.bmp ...] --output masks/

Needs only OpenCV (4.6 or newer, 4.x and 5.x alike), numpy and the standard library. The
export's metadata describes how a frame must be prepared ("preprocessing": 8-bit reduction,
blur, background subtraction, CLAHE, crop, resize, the demodulated fringes' phase slopes
and amplitude; tfseg.data.preprocess writes it and prepares training frames by it); this
script reads it with a few lines of protobuf parsing,
prepares each frame exactly so (a tfseg test holds its network inputs equal to tfseg's),
runs the network in OpenCV DNN, and writes, at the frame's own size and aligned with it, as
`python -m tfseg.predict` does (a tfseg test holds them equal): `<stem>_mask.png`, uint8 class
ids of the network's scores resized back (bilinear) to the region of the frame the
preprocessing crops (the whole frame without a crop), 255 outside it, where the network never
looks; `<stem>_overlay.png`, the class colours blended half and half on the frame (8-bit
frames as they are, 16-bit ones min-max stretched to 0..255), unpainted outside the crop.
Each is written complete or not at all (those of an earlier run are replaced). The frames
given form one sequence, of one size: with `background_every` = k their background is the
mean of every k-th of them. A recurrent export (metadata "recurrent": "true", e.g.
icnet_temporal) carries a state from frame to frame: it starts from zeros (the metadata's
"state" gives its input and output names and its shape) and each frame's output state is fed
with the next frame, in the order given; run the script once per sequence (folder, video) so
that every sequence starts from zeros. An export whose metadata names test-time views
("test_time": "flips" or "flips_and_transpose") runs each frame flipped (and transposed) as
well, its phase slopes negated along a flip and swapped by a transpose, maps each view's
class probabilities back and averages them, as tfseg.predict does. A crop reaching outside a frame is refused, as in training. The
network normalises its input itself: feed pixel values as prepared, which are 8-bit grey
levels for 8- and 16-bit frames alike ("units": "8bit", a 16-bit frame's values / 257 once
blurred, its CLAHE still on 0..65535), or the frame's own values in exports from before
"units" was recorded.
"""

import argparse
import json
import os
from pathlib import Path

import cv2
import numpy as np

MINIMUM_OPENCV = (4, 6)   # older OpenCV importers mis-read tfseg's ONNX exports
# The preprocessing keys this script follows, and the values of the two that exports from
# before they were recorded lack (what segmentation exports were prepared with then).
PREPROCESSING_KEYS = ("blur", "background_every", "background_alpha", "clahe_clip_limit",
                      "clahe_tile_grid", "crop", "colour", "eight_bit", "resize_to",
                      "interpolation", "units", "phase_gradient", "fringe_amplitude")
# Exports from before "units" was recorded fed 16-bit frames at their own scale.
OLD_EXPORTS = {"eight_bit": False, "interpolation": "cubic", "units": "native",
               "phase_gradient": False, "fringe_amplitude": False}
UNITS = ("8bit", "native")
INTERPOLATIONS = {"cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA}
UNSEEN = 255   # mask value of frame pixels outside the crop the network sees
# Test-time views (metadata "test_time") as (transpose, flip rows, flip columns).
TEST_TIME_VIEWS = {
    "none": [(False, False, False)],
    "flips": [(False, rows, columns) for rows in (False, True) for columns in (False, True)],
    "flips_and_transpose": [(transpose, rows, columns) for transpose in (False, True)
                            for rows in (False, True) for columns in (False, True)],
}


def read_varint(data, position):
    """A protobuf base-128 varint at `position`: (value, next position)."""
    value = shift = 0
    while True:
        byte = data[position]
        value |= (byte & 0x7F) << shift
        position, shift = position + 1, shift + 7
        if byte < 0x80:
            return value, position


def protobuf_fields(data):
    """(field number, value) of each top-level field of a protobuf message; nested messages
    and strings come as bytes, and are skipped by their length when not wanted."""
    position = 0
    while position < len(data):
        key, position = read_varint(data, position)
        wire_type = key & 7
        if wire_type == 0:
            value, position = read_varint(data, position)
        elif wire_type in (1, 2, 5):
            if wire_type == 2:
                size, position = read_varint(data, position)
            else:
                size = 8 if wire_type == 1 else 4
            value, position = data[position:position + size], position + size
        else:
            raise ValueError(f"not a protobuf message (wire type {wire_type})")
        yield key >> 3, value


def read_onnx_metadata(path):
    """The ONNX file's metadata_props: ModelProto field 14, each a StringStringEntryProto
    (key = field 1, value = field 2)."""
    metadata = {}
    for number, value in protobuf_fields(memoryview(Path(path).read_bytes())):
        if number == 14 and isinstance(value, memoryview):
            entry = dict(protobuf_fields(value))
            key, text = entry.get(1), entry.get(2, b"")
            if isinstance(key, memoryview) and isinstance(text, (memoryview, bytes)):
                metadata[bytes(key).decode()] = bytes(text).decode()
    return metadata


def preprocessing_steps(metadata, model_path):
    """The export's preprocessing description; exits with one line for one it cannot follow."""
    steps = {**OLD_EXPORTS, **json.loads(metadata["preprocessing"])}
    unknown = sorted(set(steps) - set(PREPROCESSING_KEYS))
    missing = [key for key in PREPROCESSING_KEYS if key not in steps]
    if (unknown or missing or steps["interpolation"] not in INTERPOLATIONS
            or steps["units"] not in UNITS):
        raise SystemExit(f"error: {model_path}: preprocessing this script cannot follow "
                         f"(unknown {unknown}, missing {missing}, interpolation "
                         f"{steps.get('interpolation')!r}, units {steps.get('units')!r}); "
                         f"expected the keys "
                         f"{', '.join(PREPROCESSING_KEYS)}")
    counts = {"blur": 0, "background_every": 0, "clahe_tile_grid": 1}
    for key, low in counts.items():
        if not is_integer(steps[key], low):
            raise SystemExit(f"error: {model_path}: preprocessing {key}={steps[key]!r}; "
                             f"expected an integer >= {low}")
    if steps["crop"] and not (len(steps["crop"]) == 4
                              and all(is_integer(v, 0) for v in steps["crop"])):
        raise SystemExit(f"error: {model_path}: preprocessing crop={steps['crop']!r}; "
                         f"expected [] or [x, y, w, h], integers >= 0")
    return steps


def is_integer(value, low):
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def export_facts(metadata, model_path):
    """(preprocessing steps, class colours (RGB), input size (H, W)) of the export; exits with
    one line for metadata that cannot describe one (forged, foreign or damaged)."""
    if metadata.get("task") != "segmentation" or metadata.get("layout") != "NCHW":
        raise SystemExit(f"error: {model_path}: not a tfseg NCHW segmentation export")
    try:
        steps = preprocessing_steps(metadata, model_path)
        colours = json.loads(metadata["class_colours"])
        input_size = tuple(int(v) for v in metadata["input_size"].split("x"))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise SystemExit(f"error: {model_path}: malformed tfseg metadata "
                         f"({type(error).__name__}: {error})") from None
    if not (isinstance(colours, list) and colours and all(
            isinstance(c, list) and len(c) == 3 and all(is_integer(v, 0) and v <= 255
                                                        for v in c) for c in colours)):
        raise SystemExit(f"error: {model_path}: tfseg metadata class_colours={colours!r}; "
                         f"expected one RGB triple of 0..255 per class")
    if len(input_size) != 2 or steps["resize_to"] and list(steps["resize_to"]) != list(
            input_size):
        raise SystemExit(f"error: {model_path}: tfseg metadata input_size "
                         f"{metadata['input_size']!r} and preprocessing resize_to "
                         f"{steps['resize_to']!r} disagree; expected HxW and the same [H, W]")
    return steps, colours, input_size


def recurrent_state(metadata, model_path):
    """The "state" description of a recurrent export ({"input", "output", "shape"}, and the
    names of the frame input and the scores output), or None (exports from before
    "recurrent" was written are not recurrent); exits with one line for a malformed one."""
    try:
        if not json.loads(metadata.get("recurrent", "false")):
            return None
        state = json.loads(metadata["state"])
        shape = state["shape"]
        if not (isinstance(state["input"], str) and isinstance(state["output"], str)
                and isinstance(shape, list) and len(shape) == 4
                and all(is_integer(v, 1) for v in shape)):
            raise ValueError(f"state={state!r}")
    except (ValueError, KeyError, TypeError) as error:
        raise SystemExit(f"error: {model_path}: malformed tfseg metadata of a recurrent "
                         f"export ({type(error).__name__}: {error}); expected its state's "
                         f"input and output names and shape") from None
    return {**state, "frame": metadata.get("input_name", "pixels"),
            "logits": metadata.get("output_name", "logits")}


def test_time_views(metadata, input_size, state, model_path):
    """The views of the export's metadata "test_time" (exports without it: one); exits with
    one line where they cannot apply."""
    views = metadata.get("test_time", "none")
    if views not in TEST_TIME_VIEWS or views != "none" and (
            state is not None
            or views == "flips_and_transpose" and input_size[0] != input_size[1]):
        raise SystemExit(f"error: {model_path}: tfseg metadata test_time={views!r}; expected "
                         f"'none' (recurrent exports), 'flips' or 'flips_and_transpose' "
                         f"(square inputs)")
    return TEST_TIME_VIEWS[views]


def view_of(image, view, steps):
    """The prepared (H, W, C) frame as seen in `view` (transposed, then flipped); the phase
    slopes (after the frame's channels) swapped by a transpose and negated along a flip."""
    transpose, flip_rows, flip_columns = view
    image = image.transpose(1, 0, 2) if transpose else image
    image = image[::-1 if flip_rows else 1, ::-1 if flip_columns else 1].copy()
    if steps["phase_gradient"]:
        x = 1 if steps["colour"] == "gray" else 3
        if transpose:
            image[..., [x, x + 1]] = image[..., [x + 1, x]]
        image[..., x] *= -1.0 if flip_columns else 1.0
        image[..., x + 1] *= -1.0 if flip_rows else 1.0
    return image


def averaged_scores(net, image, views, steps):
    """(1, K, H, W) scores averaged over the test-time `views`, as tfseg.predict does: each
    view's class probabilities mapped back onto the frame, and the log of their mean."""
    total = 0.0
    for transpose, flip_rows, flip_columns in views:
        scores = run_network(net, network_input(
            view_of(image, (transpose, flip_rows, flip_columns), steps)), None)[0][0]
        scores = scores[:, ::-1 if flip_rows else 1, ::-1 if flip_columns else 1]
        scores = scores.transpose(0, 2, 1) if transpose else scores
        probabilities = np.exp(scores - scores.max(axis=0))
        total = total + probabilities / probabilities.sum(axis=0)
    return np.log(np.maximum(total / len(views), np.finfo(np.float32).tiny))[None]


def run_network(net, blob, state):
    """(scores (1, K, H, W), next state) of one prepared frame's `blob`: a recurrent
    export's `state` (a dict holding the current "value") is fed beside the frame, and
    the state it outputs is returned; (scores, None) for other exports."""
    if state is None:
        net.setInput(blob)
        return net.forward(), None
    net.setInput(blob, state["frame"])
    net.setInput(state["value"], state["input"])
    scores, value = net.forward([state["logits"], state["output"]])
    return scores, value


def read_frame(path, steps):
    """The frame at `path` as `prepare` takes it."""
    return in_depth(decode_frame(path, steps), steps)


def in_depth(frame, steps):
    """A decoded frame reduced to its high byte where the description says "eight_bit"."""
    if steps["eight_bit"] and frame.dtype == np.uint16:
        return (frame >> 8).astype(np.uint8)
    return frame


def decode_frame(path, steps):
    """An 8- or 16-bit image as (H, W) gray or (H, W, 3) RGB, the network's channel order
    (OpenCV decodes BGR; preparing RGB, not swapping at the end, keeps every float rounding
    of the resize as in training), at its own bit depth (the overlay shows it so). A grey
    file stays grey: `prepare` makes an RGB network's three equal channels last."""
    frame = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if frame is None:
        raise SystemExit(f"error: {path}: unreadable image")
    if frame.dtype not in (np.uint8, np.uint16):
        raise SystemExit(f"error: {path}: {frame.dtype} pixels; expected an 8- or 16-bit image")
    colour = steps["colour"]
    if frame.ndim != 2:
        codes = {("gray", 3): cv2.COLOR_BGR2GRAY, ("gray", 4): cv2.COLOR_BGRA2GRAY,
                 ("rgb", 3): cv2.COLOR_BGR2RGB, ("rgb", 4): cv2.COLOR_BGRA2RGB}
        frame = cv2.cvtColor(frame, codes[colour, frame.shape[2]])
    return frame


def blur(frame, size):
    return cv2.blur(frame, (size, size)) if size else frame


def divisor(dtype, steps):
    """What divides a frame of `dtype` into the network's units: its max / 255 (1 for 8-bit
    frames, 257 for 16-bit ones) in "8bit" units, 1 in "native" ones."""
    return np.iinfo(dtype).max / 255 if steps["units"] == "8bit" else 1.0


def in_units(blurred, steps):
    """The blurred frame as float32 in the network's units."""
    image = blurred.astype(np.float32)
    scale = divisor(blurred.dtype, steps)
    return image if scale == 1 else image / np.float32(scale)


def background_of(paths, steps):
    """Mean of every k-th blurred frame (k = background_every), or None when off."""
    every = steps["background_every"]
    if not every:
        return None
    total = None
    for path in paths[::every]:
        blurred = in_units(blur(read_frame(path, steps), steps["blur"]), steps)
        if total is not None:
            total, blurred = same_channels(total, blurred)
        total = blurred if total is None else total + blurred
    return total / len(paths[::every])


def check_frames(paths, steps):
    """Exits with one line, before any output is written, for a frame that cannot be read, is
    not the size of the first, or that the export's crop reaches outside of: training refuses
    such a crop (clamping it would feed the network another region, resized)."""
    height, width = read_frame(paths[0], steps).shape[:2]
    x, y, w, h = steps["crop"] or (0, 0, width, height)
    if x + w > width or y + h > height:
        raise SystemExit(f"error: {paths[0]}: the export's crop (x, y, w, h) = {(x, y, w, h)} "
                         f"reaches outside the {height}x{width} (HxW) frame")
    for path in paths[1:]:
        size = read_frame(path, steps).shape[:2]
        if size != (height, width):
            raise SystemExit(f"error: {path}: {size[0]}x{size[1]} frame, {paths[0]} is "
                             f"{height}x{width}; expected the frames of one sequence, of one "
                             f"size")


def prepare(frame, background, steps):
    """Frame as `read_frame` gives it -> float32 (H, W[, 3]): blur (then the network's
    units), background subtraction, CLAHE per channel at the frame's own bit depth, crop,
    resize (the training order)."""
    image = in_units(blur(frame, steps["blur"]), steps)
    if background is not None:
        image, background = same_channels(image, background)
        image = np.maximum(image - steps["background_alpha"] * background, 0.0)
    if steps["clahe_clip_limit"]:
        grid = steps["clahe_tile_grid"]
        clahe = cv2.createCLAHE(clipLimit=steps["clahe_clip_limit"], tileGridSize=(grid, grid))
        scale = divisor(frame.dtype, steps)
        native = image if scale == 1 else image * np.float32(scale)
        rounded = np.clip(np.rint(native), 0, np.iinfo(frame.dtype).max).astype(frame.dtype)
        image = cv2.merge([clahe.apply(c) for c in cv2.split(rounded)]).astype(np.float32)
        image = image if scale == 1 else image / np.float32(scale)
    if steps["crop"]:
        x, y, w, h = steps["crop"]
        image = image[y:y + h, x:x + w]
    if steps["resize_to"] and image.shape[:2] != tuple(steps["resize_to"]):
        height, width = steps["resize_to"]
        image = cv2.resize(image, (width, height),
                           interpolation=INTERPOLATIONS[steps["interpolation"]])
    if steps["colour"] == "rgb" and image.ndim == 2:
        image = cv2.merge([image] * 3)
    if steps["phase_gradient"] or steps["fringe_amplitude"]:
        image = cv2.merge([image, *cv2.split(fringe_channels(
            image, slopes=steps["phase_gradient"], amplitude=steps["fringe_amplitude"]))])
    return image


def fringe_channels(image, *, slopes, amplitude):
    """float32 (H, W, C) of the frame's first channel: the slopes of the fringe phase along x
    and y (radians per pixel), carrier removed (if `slopes`), then the log of the fringes'
    amplitude less its median (if `amplitude`). Fourier demodulation as tfseg.data.fringes
    does it (the strongest frequency of one half-plane beyond 4 cycles across the frame is
    the carrier; a Gaussian window of a third of its frequency around it; the median slope
    subtracted). Deliberately the same lines as tfseg.data.fringes.fringe_channels, since
    this file runs without tfseg; tests/test_preprocessing_paths.py holds the two to the same
    bits."""
    image = np.asarray(image if image.ndim == 2 else image[..., 0], np.float32)
    height, width = image.shape
    channels = np.zeros((height, width, 2 * slopes + amplitude), np.float32)
    spectrum = np.fft.fft2(image - image.mean())
    freq_y = np.fft.fftfreq(height)[:, None]
    freq_x = np.fft.fftfreq(width)[None, :]
    half_plane = (freq_x > 0) | ((freq_x == 0) & (freq_y > 0))
    candidates = half_plane & (np.hypot(freq_y, freq_x) > 4 / max(height, width))
    strength = np.where(candidates, np.abs(spectrum), 0.0)
    if not strength.any():
        return channels
    row, column = np.unravel_index(np.argmax(strength), strength.shape)
    carrier_y, carrier_x = freq_y[row, 0], freq_x[0, column]
    sigma = np.hypot(carrier_y, carrier_x) / 3
    window = (np.exp(-(freq_y - carrier_y) ** 2 / (2 * sigma ** 2)).astype(np.float32)
              * np.exp(-(freq_x - carrier_x) ** 2 / (2 * sigma ** 2)).astype(np.float32))
    field = np.fft.ifft2(spectrum * window)
    if slopes:
        channels[:, :-1, 0] = np.angle(field[:, 1:] * np.conj(field[:, :-1])
                                       * np.complex64(np.exp(-2j * np.pi * carrier_x)))
        channels[:-1, :, 1] = np.angle(field[1:, :] * np.conj(field[:-1, :])
                                       * np.complex64(np.exp(-2j * np.pi * carrier_y)))
        channels[:, -1, 0], channels[-1, :, 1] = channels[:, -2, 0], channels[-2, :, 1]
        channels[..., :2] -= np.median(channels[..., :2], axis=(0, 1))
    if amplitude:
        log_amplitude = np.log(np.abs(field) + np.float32(1e-3))
        channels[..., -1] = log_amplitude - np.median(log_amplitude)
    return channels


def same_channels(first, second):
    """Two frames of a sequence, a grey one made RGB where the other is RGB."""
    if first.ndim == second.ndim:
        return first, second
    return tuple(cv2.merge([a] * 3) if a.ndim == 2 else a for a in (first, second))


def network_input(image):
    """(1, C, H, W) blob of a prepared frame."""
    return cv2.dnn.blobFromImage(image)


def mask_in_frame(scores, frame_size, crop):
    """uint8 (H, W) class ids of a frame of `frame_size` (H, W) from the network's (K, h, w)
    scores, as tfseg.predict computes them: the scores resized bilinearly (half-pixel
    centres, as tf.image.resize) to the `crop` [x, y, w, h] the network saw (the whole frame
    for []), then the argmax; pixels outside the crop are UNSEEN."""
    height, width = frame_size
    x, y, w, h = crop or (0, 0, width, height)
    scores = np.ascontiguousarray(np.asarray(scores, np.float32).transpose(1, 2, 0))
    if scores.shape[:2] != (h, w):
        scores = cv2.resize(scores, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)
    mask = np.full((height, width), UNSEEN, np.uint8)
    mask[y:y + h, x:x + w] = scores.argmax(-1)
    return mask


def overlay(frame, mask, colours_rgb):
    """BGR picture (for cv2.imwrite) of the class colours blended half and half on the frame
    as decoded (8-bit as it is, 16-bit min-max stretched to 0..255 and rounded), unpainted
    where the mask is UNSEEN: as tfseg.predict draws it."""
    shown = frame
    if frame.dtype != np.uint8:
        image = frame.astype(np.float32)
        low, high = image.min(), image.max()
        shown = np.round(255 * (image - low) / max(high - low, 1e-6)).astype(np.uint8)
    if shown.ndim == 2:
        shown = cv2.cvtColor(shown, cv2.COLOR_GRAY2RGB)
    seen = mask != UNSEEN
    painted = np.asarray(colours_rgb, np.float32)[np.where(seen, mask, 0)]
    blended = np.where(seen[..., None], 0.5 * shown + 0.5 * painted, shown)
    return cv2.cvtColor(np.round(blended).astype(np.uint8), cv2.COLOR_RGB2BGR)


def load_network(path):
    """The ONNX model in OpenCV DNN's default engine (4.x: its only one; 5.x: ENGINE_AUTO)."""
    version = tuple(int(part) for part in cv2.__version__.split(".")[:2])
    if version < MINIMUM_OPENCV:
        raise SystemExit(f"error: OpenCV {cv2.__version__} is older than 4.6, the oldest "
                         f"that runs tfseg exports; install opencv-python>=4.6")
    try:
        net = cv2.dnn.readNetFromONNX(str(path))
    except cv2.error as error:
        net, reason = None, (str(error).strip().splitlines() or ["(no message)"])[-1]
    else:
        # OpenCV 5 returns an empty network instead of raising; its log says why.
        reason = "see OpenCV's messages above"
    if net is None or net.empty():
        raise SystemExit(f"error: {path}: OpenCV {cv2.__version__} cannot load this model: "
                         f"{reason}")
    return net


def check_inputs(model, frames):
    """Exits with one line for a model or frame that is not a regular file (a FIFO would block
    its reader) or two frames whose outputs would overwrite each other."""
    for path in (model, *frames):
        if os.path.exists(path) and not os.path.isfile(path):
            raise SystemExit(f"error: {path}: not a regular file (a FIFO, device, socket or "
                             f"folder)")
    stems = {}
    for path in frames:
        if not path.exists():
            raise SystemExit(f"error: {path}: no such frame")
        if path.stem in stems:
            raise SystemExit(f"error: {path}: its outputs would overwrite those of "
                             f"{stems[path.stem]} (same name {path.stem!r})")
        stems[path.stem] = path


def write_png(path, picture):
    """Writes `picture` as PNG under a temporary name, then renames it: complete or absent."""
    ok, encoded = cv2.imencode(".png", picture)
    if not ok:
        raise SystemExit(f"error: {path}: OpenCV could not encode the picture")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(encoded.tobytes())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a tfseg segmentation export (.onnx, NCHW)")
    parser.add_argument("frames", nargs="+", type=Path,
                        help="frames of one sequence, in order")
    parser.add_argument("--output", required=True, type=Path,
                        help="output folder; per frame <stem>_mask.png (class ids at the "
                        "frame's own size, 255 outside the export's crop) and "
                        "<stem>_overlay.png (the classes painted on the frame)")
    args = parser.parse_args(argv)

    check_inputs(args.model, args.frames)
    try:
        metadata = read_onnx_metadata(args.model)
    except (OSError, ValueError, IndexError, KeyError) as error:
        raise SystemExit(f"error: {args.model}: not a readable ONNX file "
                         f"({getattr(error, 'strerror', None) or error})") from None
    steps, colours, input_size = export_facts(metadata, args.model)
    state = recurrent_state(metadata, args.model)
    views = test_time_views(metadata, input_size, state, args.model)

    net = load_network(args.model)
    try:
        check_frames(args.frames, steps)
        background = background_of(args.frames, steps)
        args.output.mkdir(parents=True, exist_ok=True)
        if state is not None:   # a new sequence starts from zeros
            state["value"] = np.zeros(state["shape"], np.float32)
        for path in args.frames:
            segment(net, path, background, steps, colours, input_size, args, state, views)
    except cv2.error as error:
        raise SystemExit(f"error: OpenCV failed: {str(error).strip().splitlines()[-1]}") from None
    except OSError as error:
        raise SystemExit(f"error: {args.output}: cannot write there ({error.strerror})") from None


def segment(net, path, background, steps, colours, input_size, args, state=None,
            views=TEST_TIME_VIEWS["none"]):
    """Writes the mask and overlay of the frame at `path`, at its size; exits with one line
    for a frame that does not fit the model or a network whose output does not fit the
    metadata. A recurrent export's `state` (`recurrent_state`, its current "value") is fed
    with the frame and replaced by the next one; other exports' scores are averaged over
    the test-time `views` (`test_time_views`)."""
    frame = decode_frame(path, steps)
    image = prepare(in_depth(frame, steps), background, steps)
    if image.shape[:2] != input_size:
        raise SystemExit(f"error: {path}: prepared frame is {image.shape[0]}x"
                         f"{image.shape[1]}, the model takes {input_size[0]}x"
                         f"{input_size[1]} (python -m tfseg.predict tiles larger frames)")
    if len(views) > 1:
        output = averaged_scores(net, image, views, steps)
    else:
        output, next_state = run_network(net, network_input(image), state)
        if state is not None:
            state["value"] = next_state
    if output.shape != (1, len(colours), *input_size):
        raise SystemExit(f"error: {args.model}: the network outputs shape {output.shape}, "
                         f"its metadata describes (1, {len(colours)}, {input_size[0]}, "
                         f"{input_size[1]}) (one score per class and pixel)")
    mask = mask_in_frame(output[0], frame.shape[:2], steps["crop"])
    for name, picture in (("mask", mask), ("overlay", overlay(frame, mask, colours))):
        write_png(args.output / f"{path.stem}_{name}.png", picture)


if __name__ == "__main__":
    main()
