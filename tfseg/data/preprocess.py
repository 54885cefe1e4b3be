"""The one preprocessing of raw frames, for training data, evaluation and inference alike.

`Preprocessing` describes what is done to a raw frame before the network (which normalises
its input itself): it is built from a config (`from_config`), written into every export's
metadata (`to_metadata`), read back from it (`from_metadata`) and executed by its methods,
with numpy and OpenCV, for every frame a network sees. The order is the interferogram seed's:
8-bit reduction -> box blur -> background subtraction -> CLAHE -> crop -> resize, then, where
the steps ask for it, channels more from the demodulated fringes (`tfseg.data.fringes`). The
background is estimated once per sequence (`background`) and shared by all of its frames.
Every frame is expressed in 8-bit grey levels once blurred (`units`: value x 255 / its
dtype's max, / 257 for uint16; CLAHE still equalises 16-bit frames on 0..65535), so one
`data.mean` / `data.std` serves 8- and 16-bit frames; 8-bit frames are unchanged by it.
`tools/opencv_segment.py` follows the same description with OpenCV alone;
tests/test_preprocessing_paths.py holds every path to the network to the same inputs.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from tfseg.config import PreprocessConfig, from_dict
from tfseg.config.schema import bounded, check_ranges
from tfseg.data.fringes import fringe_channels
from tfseg.utils.errors import TfsegError

INTERPOLATIONS = {"cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA}
# Masks: the nearest label on half-pixel centres (TensorFlow's "nearest"), so labels stay on
# the pixels that the cubic or area resize of the frame puts them on.
MASK_INTERPOLATION = cv2.INTER_NEAREST_EXACT


def _no_steps():
    return PreprocessConfig(blur=0, background_every=0, clahe_clip_limit=0.0)


@dataclass(frozen=True)
class Preprocessing:
    """What is done to a raw frame, (H, W) grey or (H, W, 3) RGB, before the network."""

    steps: PreprocessConfig = field(default_factory=_no_steps)   # blur, background, CLAHE, crop
    colour: Literal["gray", "rgb"] = "gray"   # how frames are read: the network's channels
    # 16-bit frames reduced to their high byte first: how TensorFlow's decoders read the
    # files of every source but interferogram folders in training.
    eight_bit: bool = False
    resize_to: list[int] = bounded([], 1)   # [H, W] after the crop; [] keeps the size
    interpolation: Literal["cubic", "area"] = "cubic"   # of the frame; masks: nearest
    # The network's units. "8bit": 8-bit grey levels (value x 255 / the dtype's max, so
    # / 257 for uint16) from the blur on (CLAHE works at the frame's own depth, in between),
    # so a model meets 8- and 16-bit frames of a scene alike; "native": frames at their own
    # scale (exports from before "units" was recorded). 8-bit frames are the same in both.
    units: Literal["8bit", "native"] = "8bit"

    def __post_init__(self):
        check_ranges(self)
        if len(self.resize_to) not in (0, 2):
            raise ValueError(f"resize_to={self.resize_to} must be [] or [height, width]")

    @classmethod
    def from_config(cls, config):
        """The preprocessing `config` trains with: frames read in the model's channels; the
        `data.preprocess` steps for interferograms (frames read as stored, cubic resize),
        none for the sources TensorFlow decodes (8-bit; area resize, as `data.resize_frames`
        did in TensorFlow); SR models resize nothing."""
        data = config.data
        interferograms = data.source in ("synthetic", "interferograms")
        steps = data.preprocess if interferograms else _no_steps()
        frame_channels = config.model.input_channels - steps.fringe_channels
        return cls(steps=steps, colour="rgb" if frame_channels == 3 else "gray",
                   eight_bit=not interferograms,
                   resize_to=([] if config.model.task == "super_resolution"
                              else [data.height, data.width]),
                   interpolation="cubic" if interferograms else "area")

    @property
    def frame_channels(self):
        """Channels of the frame in the network input: 1 for grey frames, 3 for RGB ones."""
        return 1 if self.colour == "gray" else 3

    @property
    def slope_channels(self):
        """(x, y): the channels of the fringe phase's slopes in the network input, or None."""
        if not self.steps.phase_gradient:
            return None
        return self.frame_channels, self.frame_channels + 1

    @property
    def channels(self):
        """Channels of the network input: the frame's, then the demodulated fringes'."""
        return self.frame_channels + self.steps.fringe_channels

    def at_size(self, size):
        """The same preprocessing for a model of input `size` (H, W): frames resized to it,
        where frames are resized at all."""
        return dataclasses.replace(self, resize_to=[int(v) for v in size]) if (
            self.resize_to) else self

    @property
    def mask_size(self):
        """(H, W) the masks are resized to, as the frames are; () keeps their size."""
        return tuple(self.resize_to)

    def for_network_at(self, size):
        """Frames preprocessed for a network of input `size` (H, W), as `at_size` does, and
        masks kept at this preprocessing's size: an export made at another size, fed what
        `python -m tfseg.predict` feeds it, scored on the config's labels."""
        if not self.resize_to or tuple(size) == self.mask_size:
            return self
        fields = {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}
        return LabelsAtOtherSize(**{**fields, "resize_to": [int(v) for v in size]},
                                 label_size=list(self.resize_to))

    def to_metadata(self):
        """The flat mapping an export's metadata stores as "preprocessing" (JSON values)."""
        return {**dataclasses.asdict(self.steps), "colour": self.colour,
                "eight_bit": self.eight_bit, "resize_to": list(self.resize_to),
                "interpolation": self.interpolation, "units": self.units}

    @classmethod
    def from_metadata(cls, values, *, task, source):
        """The preprocessing an export's metadata describes (`to_metadata`). Exports from
        before "eight_bit", "interpolation" and "units" were recorded read as they were
        predicted then (SR frames in 8 bits, cubic resize, other frames at their own scale).

        Raises:
            TfsegError: naming `source` and the missing, unknown or malformed key.
        """
        if not isinstance(values, dict):
            raise TfsegError(f"{source}: tfseg metadata without a preprocessing mapping; "
                             f"export the model again")
        # What tfseg.predict did with exports from before these keys were recorded.
        values = {"eight_bit": task == "super_resolution", "interpolation": "cubic",
                  "phase_gradient": False, "fringe_amplitude": False, **values}
        # Frames reduced to 8 bits are in 8-bit units either way: the one way to say it.
        values = {"units": "8bit" if values["eight_bit"] is True else "native", **values}
        step_keys = [item.name for item in dataclasses.fields(PreprocessConfig)]
        keys = step_keys + [item.name for item in dataclasses.fields(cls)
                            if item.name != "steps"]
        missing = [key for key in keys if key not in values]
        if missing:
            raise TfsegError(f"{source}: tfseg metadata without preprocessing."
                             f"{missing[0]} (expected {', '.join(keys)}); export the model "
                             f"again")
        steps = from_dict(PreprocessConfig, {key: values.pop(key) for key in step_keys},
                          source=source, prefix="preprocessing.")
        return dataclasses.replace(
            from_dict(cls, values, source=source, prefix="preprocessing."), steps=steps)

    def background(self, sampled):
        """The background of a sequence: the mean of its blurred frames, float32, in the
        network's units (`units`).

        Args:
            sampled: iterable of (source, frame): every `steps.background_every`-th frame of
                the sequence, in `colour` as stored.

        Raises:
            TfsegError: a frame of another size than the first, named by its source.
        """
        total, count = None, 0
        for source, frame in sampled:
            blurred = self._in_units(self._blurred(self._reduced(frame)))
            if total is not None:
                total, blurred = _same_channels(total, blurred)
                if blurred.shape != total.shape:
                    raise TfsegError(f"{source}: {_size(blurred)} frame in a sequence of "
                                     f"{_size(total)} frames (one background needs one size)")
            total = blurred if total is None else total + blurred
            count += 1
        if count == 0:
            raise ValueError("a background needs at least one frame")
        return total / count

    def image(self, frame, background=None):
        """A raw frame -> the float32 (h, w, C) network input, in `units`.

        Args:
            frame: (H, W) grey or (H, W, 3) RGB, uint8 or uint16, as stored.
            background: from `background`, or None (subtract none).

        Raises:
            ValueError: the frame does not fit the background or the crop.
        """
        blurred = self._blurred(self._reduced(frame))
        image = self._in_units(blurred)
        if background is not None:
            image, background = _same_channels(image, background)
            if background.shape != image.shape:
                raise ValueError(f"{_size(image)} frame in a sequence of {_size(background)} "
                                 f"frames (one background needs one size)")
            # In place: `image` is this call's own copy, and a 3072x3072 frame's temporaries
            # cost more than the arithmetic.
            image -= self.steps.background_alpha * background
            np.maximum(image, 0.0, out=image)
        image = image.reshape(*image.shape[:2], -1)
        if self.steps.clahe_clip_limit:
            max_value, divisor = np.iinfo(blurred.dtype).max, self._divisor(blurred.dtype)
            channels = [self._equalized(image[..., c], max_value, divisor)
                        for c in range(image.shape[-1])]
            image = np.stack(channels, axis=-1) if len(channels) > 1 else channels[0][..., None]
        image = _resized(crop(image, self.steps.crop), self.resize_to,
                         INTERPOLATIONS[self.interpolation])
        image = image.reshape(*image.shape[:2], -1)
        # A grey file for an RGB network (`to_colour` keeps it grey): every step above works
        # per channel, so its three equal channels are made last, on the fewest pixels.
        if image.shape[-1] < self.frame_channels:
            image = np.repeat(image, self.frame_channels, axis=-1)
        if self.steps.fringe_channels:
            image = np.concatenate([image, fringe_channels(
                image[..., 0], slopes=self.steps.phase_gradient,
                amplitude=self.steps.fringe_amplitude)], axis=-1)
        return image

    def mask(self, mask):
        """A raw frame's (H, W) class ids, cropped as `image` crops the frame and resized to
        `mask_size`."""
        return _resized(crop(mask, self.steps.crop), self.mask_size, MASK_INTERPOLATION)

    def _reduced(self, frame):
        if self.eight_bit and frame.dtype == np.uint16:
            return (frame >> 8).astype(np.uint8)
        return frame

    def _blurred(self, frame):
        """The frame box-blurred k x k by `cv2.blur` (its dtype kept); k = 0: unchanged."""
        size = self.steps.blur
        return cv2.blur(frame, (size, size)) if size else frame

    def _divisor(self, dtype):
        """What divides a frame of `dtype` into the network's units: its max / 255 (1 for
        uint8, 257 for uint16) in "8bit" units, 1 in "native" ones."""
        dtype = np.dtype(dtype)
        if self.units == "native" or dtype.kind != "u":
            return 1.0
        return np.iinfo(dtype).max / 255

    def _in_units(self, blurred):
        """The blurred frame as float32 in the network's units; 8-bit frames: its values."""
        image = blurred.astype(np.float32)
        divisor = self._divisor(blurred.dtype)
        return image if divisor == 1 else image / np.float32(divisor)

    def _equalized(self, channel, max_value, divisor=1.0):
        """CLAHE on values rounded into [0, max_value] (the frame's own bit depth: `channel`
        times `divisor`), in the channel's units."""
        grid = self.steps.clahe_tile_grid
        clahe = cv2.createCLAHE(clipLimit=self.steps.clahe_clip_limit,
                                tileGridSize=(grid, grid))
        native = channel if divisor == 1 else channel * np.float32(divisor)
        # The values are never negative (frames, or frames minus a background clipped at 0):
        # OpenCV's saturating conversion of their absolute values rounds half to even as
        # np.rint does, in one pass instead of four.
        rounded = (cv2.convertScaleAbs(native) if max_value <= 255 else
                   np.clip(np.rint(native), 0, max_value).astype(np.uint16))
        equalized = clahe.apply(rounded).astype(np.float32)
        return equalized if divisor == 1 else equalized / np.float32(divisor)



@dataclass(frozen=True)
class LabelsAtOtherSize(Preprocessing):
    """A `Preprocessing` whose masks keep the `label_size` (H, W) while frames are resized to
    another network's size (`Preprocessing.for_network_at`). Not a description an export
    carries: labels never reach the network."""

    label_size: list[int] = bounded([], 1)

    @property
    def mask_size(self):
        return tuple(self.label_size)


def _same_channels(first, second):
    """Two frames of a sequence in the same channels: a grey one (H, W) repeated into three
    where the other is RGB (H, W, 3), as a sequence may mix grey and colour files."""
    if first.ndim == second.ndim:
        return first, second
    return tuple(np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a
                 for a in (first, second))


def _resized(array, size, interpolation):
    """`array` resized to `size` (H, W); () or its own size: unchanged."""
    if not size or array.shape[:2] == tuple(size):
        return array
    height, width = size
    return cv2.resize(array, (width, height), interpolation=interpolation)


def crop(array, region):
    """The (x, y, w, h) region of an (H, W, ...) array (the seed's column strip); [] keeps
    it all."""
    if not region:
        return array
    x, y, w, h = region
    if x + w > array.shape[1] or y + h > array.shape[0]:
        raise ValueError(f"crop region (x, y, w, h) = {tuple(region)} reaches outside the "
                         f"{_size(array)} (HxW) frame")
    return array[y:y + h, x:x + w]


def boxes_to_mask(boxes, height, width):
    """uint8 (H, W) mask: 1 inside any (x, y, w, h) box (clipped to the frame), 0 elsewhere."""
    mask = np.zeros((height, width), np.uint8)
    for x, y, w, h in boxes:
        mask[max(y, 0):max(y + h, 0), max(x, 0):max(x + w, 0)] = 1
    return mask


def _size(array):
    return f"{array.shape[0]}x{array.shape[1]}"
