"""Segment frames with a tfseg ONNX export using OpenCV alone: copy this file and adapt it.

    python opencv_segment.py model.onnx frame_0001.bmp [frame_0002.bmp ...] --output masks/

Needs only OpenCV (4.6 or newer, 4.x and 5.x alike), numpy and the standard library. The export records in its metadata how a
frame must be prepared (the recipe's blur, background subtraction, CLAHE, crop and resize);
this script reads it with a few lines of protobuf parsing, prepares each frame the same way,
runs the network in OpenCV DNN, and writes `<stem>_mask.png` (class ids, uint8) and
`<stem>_overlay.png` (class colours on the prepared frame). The frames given form one
sequence: with `background_every` = k their background is the mean of every k-th of them.
The network normalises its input itself: feed raw pixel values, 8- or 16-bit as in training.
"""

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

MINIMUM_OPENCV = (4, 6)   # older OpenCV importers mis-read tfseg's ONNX exports


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
        if number == 14:
            entry = dict(protobuf_fields(value))
            metadata[bytes(entry[1]).decode()] = bytes(entry.get(2, b"")).decode()
    return metadata


def read_frame(path, colour):
    """An 8- or 16-bit image as (H, W) gray or (H, W, 3) BGR (OpenCV's channel order)."""
    frame = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if frame is None:
        raise SystemExit(f"error: {path}: unreadable image")
    if frame.ndim == 3 and frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if colour == "gray" and frame.ndim == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if colour == "rgb" and frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    return frame


def blur(frame, size):
    return cv2.blur(frame, (size, size)) if size else frame


def background_of(paths, colour, steps):
    """Mean of every k-th blurred frame (k = background_every), or None when off."""
    every = steps["background_every"]
    if not every:
        return None
    sampled = [blur(read_frame(path, colour), steps["blur"]).astype(np.float32)
               for path in paths[::every]]
    return sum(sampled) / len(sampled)


def prepare(frame, background, steps):
    """Raw frame -> float32 network input: blur, background subtraction, CLAHE, crop, resize
    (the training order)."""
    image = blur(frame, steps["blur"]).astype(np.float32)
    if background is not None:
        image = np.maximum(image - steps["background_alpha"] * background, 0)
    if steps["clahe_clip_limit"]:
        grid = steps["clahe_tile_grid"]
        clahe = cv2.createCLAHE(clipLimit=steps["clahe_clip_limit"], tileGridSize=(grid, grid))
        rounded = np.clip(np.rint(image), 0, np.iinfo(frame.dtype).max).astype(frame.dtype)
        image = cv2.merge([clahe.apply(c) for c in cv2.split(rounded)]).astype(np.float32)
    if steps["crop"]:
        x, y, w, h = steps["crop"]
        image = image[y:y + h, x:x + w]
    if steps["resize_to"]:
        height, width = steps["resize_to"]
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
    return image


def overlay(image, mask, colours_rgb):
    """Class colours blended half and half on the prepared frame (stretched to 0..255)."""
    shown = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).round().astype(np.uint8)
    if shown.ndim == 2:
        shown = cv2.cvtColor(shown, cv2.COLOR_GRAY2BGR)
    painted = np.asarray(colours_rgb, np.uint8)[:, ::-1][mask]   # RGB -> BGR
    return cv2.addWeighted(shown, 0.5, painted, 0.5, 0)


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a tfseg segmentation export (.onnx, NCHW)")
    parser.add_argument("frames", nargs="+", help="frames of one sequence, in order")
    parser.add_argument("--output", required=True, type=Path, help="output folder")
    args = parser.parse_args()

    metadata = read_onnx_metadata(args.model)
    if metadata.get("task") != "segmentation" or metadata.get("layout") != "NCHW":
        raise SystemExit(f"error: {args.model}: not a tfseg NCHW segmentation export")
    steps = json.loads(metadata["preprocessing"])
    colours = json.loads(metadata["class_colours"])
    input_size = tuple(int(v) for v in metadata["input_size"].split("x"))
    colour = steps["colour"]

    net = load_network(args.model)
    background = background_of(args.frames, colour, steps)
    args.output.mkdir(parents=True, exist_ok=True)
    for path in map(Path, args.frames):
        image = prepare(read_frame(path, colour), background, steps)
        if image.shape[:2] != input_size:
            raise SystemExit(f"error: {path}: prepared frame is {image.shape[0]}x"
                             f"{image.shape[1]}, the model takes {input_size[0]}x"
                             f"{input_size[1]} (python -m tfseg.predict tiles larger frames)")
        # (1, C, H, W); OpenCV frames are BGR and the network was trained on RGB.
        net.setInput(cv2.dnn.blobFromImage(image, swapRB=colour == "rgb"))
        mask = net.forward()[0].argmax(0).astype(np.uint8)
        cv2.imwrite(str(args.output / f"{path.stem}_mask.png"), mask)
        cv2.imwrite(str(args.output / f"{path.stem}_overlay.png"), overlay(image, mask, colours))


if __name__ == "__main__":
    main()
