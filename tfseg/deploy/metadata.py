"""The tfseg metadata an export carries: made from a config, written into ONNX files and
SavedModels, read back.

Metadata lives in an ONNX file's `metadata_props` (all values strings, JSON where structured,
`encode_metadata`) and in a SavedModel's `assets.extra/tfseg.json` (plain JSON); readers get
decoded values (lists, dicts, ints) for both.

A recurrent model's export (`"recurrent": true`) takes a state beside each frame and returns
the next one (`state_metadata` describes both); exports from before the key was written are
not recurrent (`recurrent_state`).

A copy of an export in another precision (`tfseg.deploy.quantization`) carries the same
metadata plus `"precision"` ("float16" or "int8"); files without the key are float32.
"""

import dataclasses
import json
from pathlib import Path

import tfseg
from tfseg.config.schema import RECURRENT_MODELS
from tfseg.data.preprocess import Preprocessing
from tfseg.runs.preflight import check_size_memory
from tfseg.tasks.panels import palette
from tfseg.tasks.test_time import VIEWS
from tfseg.utils.errors import TfsegError
from tfseg.utils.files import write_text_atomic

SAVED_MODEL_METADATA = Path("assets.extra") / "tfseg.json"
NORMALISATION = "inside the model: feed raw pixels"
# Metadata values stored as JSON text in ONNX metadata_props; input_size is "HxW".
_JSON_KEYS = ("class_names", "class_colours", "mean", "std", "preprocessing", "input_channels",
              "scale", "recurrent", "state", "min_sample_area")
# A recurrent export's state input and output (one name each: tf2onnx cannot convert a graph
# whose input and output share a name).
STATE_INPUT = "state_in"
STATE_OUTPUT = "state"
# The precisions an ONNX export is written in (metadata "precision"; absent means float32).
PRECISIONS = ("float32", "float16", "int8")


def make_metadata(*, model, task, input_size, input_channels, layout, mean, std,
                  preprocessing, class_names=None, class_colours=None, min_sample_area=None,
                  test_time="none", scale=None, recurrent=False):
    """The tfseg metadata of an export (decoded values).

    Args:
        model: str. The model family, e.g. "linknet".
        task: str. "segmentation" or "super_resolution".
        input_size: (H, W). The static input size of the export.
        input_channels: int. 1 or 3 (the frame's), plus the demodulated fringes' channels.
        layout: str. "NCHW" or "NHWC", the file's input and output layout.
        mean, std: lists of float. Informational: the normalisation is inside the model.
        preprocessing: `tfseg.data.preprocess.Preprocessing`. What is done to a raw frame
            before the network, stored as its flat mapping (`Preprocessing.to_metadata`).
        class_names: list of str. Segmentation only.
        class_colours: RGB triples, one per class (default: `tfseg.tasks.panels.palette`).
        min_sample_area: float. Segmentation: the smallest sample as a fraction of the frame
            (`data.min_sample_area`), which `predict --boxes` keeps; exports without it get
            the config's default.
        test_time: str. Segmentation: the views `predict` averages
            (`data.augment.test_time`, `tfseg.tasks.test_time`); exports without it: "none".
        scale: int. Super-resolution factor, super-resolution only.
        recurrent: bool. Whether the model carries a state from frame to frame; its export
            adds the state's description (`state_metadata`).
    """
    metadata = {"tfseg_version": tfseg.__version__, "model": model, "task": task,
                "input_size": [int(v) for v in input_size],
                "input_channels": int(input_channels), "layout": layout,
                "mean": [float(v) for v in mean], "std": [float(v) for v in std],
                "normalisation": NORMALISATION, "preprocessing": preprocessing.to_metadata(),
                "recurrent": bool(recurrent)}
    if task == "segmentation":
        metadata["class_names"] = list(class_names)
        metadata["class_colours"] = [[int(v) for v in colour] for colour in (
            palette(len(class_names)) if class_colours is None else class_colours)]
        if min_sample_area is not None:
            metadata["min_sample_area"] = float(min_sample_area)
        metadata["test_time"] = test_time
    else:
        metadata["scale"] = int(scale)
    return metadata


def state_metadata(state_shape, layout):
    """The metadata keys of a recurrent export whose state is (h, w, S) `state_shape` (NHWC,
    without the batch): `"recurrent": True` and `"state"`, its input and output names, its
    shape in the file's `layout` (batch 1; "NCHW": (1, S, h, w), as the frame) and how to
    start and reset it."""
    height, width, channels = (int(v) for v in state_shape)
    shape = [1, channels, height, width] if layout == "NCHW" else [1, height, width, channels]
    return {"recurrent": True,
            "state": {"input": STATE_INPUT, "output": STATE_OUTPUT, "shape": shape,
                      "layout": layout, "initial": "zeros",
                      "reset": "to zeros at the start of each sequence (folder, video); feed "
                               "each frame's output state with the next frame"}}


def recurrent_state(metadata):
    """The `"state"` description of a recurrent export's decoded `metadata`, or None for a
    model without a state (exports from before `"recurrent"` was written included)."""
    return metadata.get("state") if metadata.get("recurrent") else None


def encode_metadata(metadata):
    """ONNX metadata_props (str -> str) of decoded `metadata`."""
    encoded = {}
    for key, value in metadata.items():
        if key == "input_size":
            value = "x".join(str(int(v)) for v in value)
        elif key in _JSON_KEYS:
            value = json.dumps(value)
        encoded[key] = str(value)
    return encoded


def decode_metadata(properties):
    """Decoded metadata of ONNX metadata_props (str -> str)."""
    decoded = dict(properties)
    for key, value in properties.items():
        if key == "input_size":
            decoded[key] = [int(v) for v in value.split("x")]
        elif key in _JSON_KEYS:
            decoded[key] = json.loads(value)
    return decoded


def read_onnx_metadata(path):
    """Decoded tfseg metadata of the ONNX file `path`.

    Raises:
        TfsegError: not an ONNX model, or an ONNX model without tfseg metadata.
    """
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises protobuf's DecodeError and others
        raise TfsegError(f"{path}: not an ONNX model ({str(error).splitlines()[0]})") from None
    properties = {p.key: p.value for p in proto.metadata_props}
    if "tfseg_version" not in properties:
        raise TfsegError(f"{path}: not a tfseg export: no tfseg metadata")
    try:
        return check_metadata(decode_metadata(properties), path)
    except ValueError as error:
        raise TfsegError(f"{path}: malformed tfseg metadata ({error})") from None


def write_saved_model_metadata(saved_model_dir, metadata):
    """Writes decoded `metadata` to `<saved_model_dir>/assets.extra/tfseg.json`."""
    path = Path(saved_model_dir) / SAVED_MODEL_METADATA
    path.parent.mkdir(exist_ok=True)
    write_text_atomic(path, json.dumps(metadata, indent=2) + "\n")


def read_saved_model_metadata(saved_model_dir):
    """Decoded tfseg metadata of a SavedModel directory.

    Raises:
        TfsegError: not a SavedModel, or one without tfseg metadata.
    """
    saved_model_dir = Path(saved_model_dir)
    if not (saved_model_dir / "saved_model.pb").exists():
        raise TfsegError(f"{saved_model_dir}: not a SavedModel directory (no saved_model.pb)")
    path = saved_model_dir / SAVED_MODEL_METADATA
    if not path.exists():
        raise TfsegError(f"{saved_model_dir}: not a tfseg export: no tfseg metadata "
                         f"({SAVED_MODEL_METADATA} is missing)")
    try:
        metadata = json.loads(path.read_text())
    except ValueError as error:
        raise TfsegError(f"{path}: malformed tfseg metadata ({error})") from None
    if not isinstance(metadata, dict):
        raise TfsegError(f"{path}: malformed tfseg metadata (expected a JSON object)")
    return check_metadata(metadata, path)


def _integers(value, count, low, high=None):
    """Whether `value` is a list of `count` integers in [low, high]."""
    return (isinstance(value, list) and len(value) == count
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= low
                    and (high is None or v <= high) for v in value))


def check_metadata(metadata, source):
    """`metadata` (decoded) if every value it holds can describe an export; else TfsegError
    naming `source`, the key and what was expected (forged or foreign metadata). Sizes are
    bounded by the memory a network at that size needs, before anything is allocated for
    them. Keys that are absent are left to their readers."""
    def refuse(key, value, expected):
        raise TfsegError(f"{source}: tfseg metadata {key}={value!r}; expected {expected}")

    steps = metadata.get("preprocessing")
    # The frame's channels, then those of data.preprocess.phase_gradient / fringe_amplitude.
    extra = (2 * (steps.get("phase_gradient") is True) + (steps.get("fringe_amplitude") is True)
             if isinstance(steps, dict) else 0)

    checks = {"task": (lambda v: v in ("segmentation", "super_resolution"),
                       "'segmentation' or 'super_resolution'"),
              "layout": (lambda v: v in ("NCHW", "NHWC"), "'NCHW' or 'NHWC'"),
              "input_size": (lambda v: _integers(v, 2, 1), "HxW, positive integers"),
              "input_channels": (lambda v: isinstance(v, int) and v - extra in (1, 3),
                                 f"1 or 3, plus {extra} for the demodulated fringes"
                                 if extra else "1 or 3"),
              "scale": (lambda v: _integers([v], 1, 1), "a positive integer"),
              "precision": (lambda v: v in PRECISIONS, " or ".join(map(repr, PRECISIONS))),
              "class_names": (lambda v: isinstance(v, list) and v
                              and all(isinstance(name, str) for name in v),
                              "a list of class names"),
              "min_sample_area": (lambda v: isinstance(v, (int, float))
                                  and not isinstance(v, bool) and 0 <= v <= 1,
                                  "a fraction of the frame, 0..1"),
              "test_time": (lambda v: v in VIEWS, " or ".join(map(repr, VIEWS)))}
    for key, (valid, expected) in checks.items():
        if key in metadata and not valid(metadata[key]):
            refuse(key, metadata[key], expected)
    colours = metadata.get("class_colours")
    if colours is not None and not (
            isinstance(colours, list) and all(_integers(c, 3, 0, 255) for c in colours)
            and len(colours) == len(metadata.get("class_names", colours))):
        refuse("class_colours", colours, "one RGB triple of 0..255 per class name")
    if "recurrent" in metadata and not isinstance(metadata["recurrent"], bool):
        refuse("recurrent", metadata["recurrent"], "true or false")
    state = metadata.get("state")
    if metadata.get("recurrent") and not (
            isinstance(state, dict) and isinstance(state.get("input"), str)
            and isinstance(state.get("output"), str) and _integers(state.get("shape"), 4, 1)
            and state["shape"][0] == 1):
        refuse("state", state, "the state's input and output names and its shape "
                               "[1, ...] (4 positive integers)")
    views, size = metadata.get("test_time", "none"), metadata.get("input_size")
    if views == "flips_and_transpose" and _integers(size, 2, 1) and size[0] != size[1]:
        refuse("test_time", views, f"'none' or 'flips' for input_size {size[0]}x{size[1]} "
                                   f"(transposed views need a square input)")
    if views != "none" and (metadata.get("recurrent") or metadata.get("task") != "segmentation"):
        refuse("test_time", views, "'none' for a recurrent or super-resolution export")
    if "input_size" in metadata:
        check_size_memory(f"{source}: tfseg metadata input_size", metadata["input_size"])
    resize_to = (metadata.get("preprocessing") or {}).get("resize_to") if isinstance(
        metadata.get("preprocessing"), dict) else None
    if resize_to and _integers(resize_to, 2, 1):
        check_size_memory(f"{source}: tfseg metadata preprocessing.resize_to", resize_to)
    return metadata


def metadata_for(config, layout):
    """The tfseg metadata of `config`'s exports (`make_metadata`)."""
    data, task = config.data, config.model.task
    return make_metadata(
        model=config.model.name, task=task, input_size=[data.height, data.width],
        input_channels=config.model.input_channels, layout=layout, mean=data.mean,
        std=data.std, preprocessing=Preprocessing.from_config(config),
        class_names=data.class_names if task == "segmentation" else None,
        class_colours=data.class_colours or None,
        min_sample_area=data.min_sample_area if task == "segmentation" else None,
        test_time=data.augment.test_time,
        scale=config.model.scale if task == "super_resolution" else None,
        recurrent=config.model.name in RECURRENT_MODELS)


def preprocessing_of(metadata, source):
    """The `Preprocessing` that decoded `metadata` of the export `source` describes;
    TfsegError naming `source` and the key for a missing or malformed description."""
    return Preprocessing.from_metadata(metadata.get("preprocessing"),
                                       task=metadata.get("task"), source=source)


def metadata_at_size(metadata, size):
    """`metadata` of an export at `size` (H, W): that input size, and frames resized to it
    where the recipe resizes frames (a fully convolutional SR model resizes nothing); an
    oblong size has no transposed test-time views, so it keeps the flips."""
    preprocessing = preprocessing_of(metadata, "the metadata").at_size(size)
    sized = {**metadata, "input_size": [int(v) for v in size],
             "preprocessing": preprocessing.to_metadata()}
    if sized.get("test_time") == "flips_and_transpose" and size[0] != size[1]:
        sized["test_time"] = "flips"
    return sized


def check_preprocessing(metadata, config, source):
    """Raises TfsegError unless the export `source` preprocesses frames as `config` does (at
    the export's own size): scores on the config's data are then the export's scores on
    frames that `python -m tfseg.predict` would prepare alike. A .keras file (empty
    `metadata`) records no preprocessing to hold it to."""
    if not metadata:
        return
    exported, configured = preprocessing_of(metadata, source), Preprocessing.from_config(config)
    # At the export's size; where nothing is resized, the interpolation does not matter.
    configured = configured.at_size(exported.resize_to) if exported.resize_to else (
        dataclasses.replace(configured, interpolation=exported.interpolation))
    if exported.units == "native" and _eight_bit_frames(config):
        # An export from before "units" was recorded, held to a config of 8-bit frames: on
        # those both units are one preprocessing (and 8-bit units are what a model trained
        # on 8-bit frames needs for 16-bit ones too).
        configured = dataclasses.replace(configured, units="native")
    exported, configured = exported.to_metadata(), configured.to_metadata()
    for key, value in exported.items():
        if configured[key] != value:
            raise TfsegError(f"{source}: exported for frames preprocessed with "
                             f"preprocessing.{key}={value!r}, but the config gives "
                             f"{configured[key]!r}; score it on data preprocessed as it was "
                             f"trained (its run's config.yaml), or export the run again")


def _eight_bit_frames(config):
    """Whether every frame of `config`'s data is 8-bit: synthetic frames of bit depth 8 (the
    depth of files on disk is not known before they are read)."""
    return (config.data.source == "synthetic"
            and tuple(config.data.synthetic.bit_depth) == (8, 8))
