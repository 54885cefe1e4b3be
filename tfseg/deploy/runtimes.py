"""One way to run any tfseg model, exported or in memory: `load(path)` or `from_keras(model)`.

Every `Runtime` takes float32 raw pixels NHWC (N, H, W, C) and returns float32 NHWC outputs
(segmentation logits (N, H, W, K); super-resolution pixels (N, sH, sW, C)) whatever the
file's own layout, and carries the export's tfseg metadata (`tfseg.deploy.metadata`), decoded.

A recurrent model (metadata `"recurrent": true`, `tfseg.deploy.metadata.state_metadata`) runs
the frames of one sequence in order: each call continues from the state the previous call left
(zeros at first), and `reset()` starts a new sequence. Every runtime feeds its own state back
in, in the file's layout, and hands it out NHWC (`Runtime.advance`).

Nothing here loads TensorFlow until a Keras model or a SavedModel is run: predicting with
onnxruntime or OpenCV DNN never imports it.
"""

import time
from pathlib import Path

import numpy as np

from tfseg.deploy.metadata import (
    metadata_for,
    read_onnx_metadata,
    read_saved_model_metadata,
    recurrent_state,
    state_metadata,
)
from tfseg.deploy.opencv_dnn import RUNTIMES as OPENCV_RUNTIMES
from tfseg.deploy.opencv_dnn import EngineUnavailable, OpenCVError, OpenCVWorker
from tfseg.runs.presets import is_preset
from tfseg.utils.errors import TfsegError

RUNTIMES = ("keras", "savedmodel", "onnxruntime", *OPENCV_RUNTIMES)
EXPORT_RUNTIMES = RUNTIMES[1:]   # every runtime but the Keras reference
# The file of a run directory each exported runtime loads.
RUN_RUNTIMES = {"savedmodel": Path("export") / "saved_model",
                **{name: Path("export") / "model.onnx"
                   for name in ("onnxruntime", *OPENCV_RUNTIMES)}}
# The name of a recurrent step model's state input and output (`tfseg.models.clips.STATE`;
# not imported from there, which would load Keras).
STATE = "state"


class RuntimeUnavailable(TfsegError):
    """The runtime does not exist in what is installed here (e.g. an OpenCV engine that this
    OpenCV version lacks): not a disagreement, and not the model's fault."""


class Runtime:
    """A loaded model: call it with float32 raw pixels NHWC, get float32 NHWC outputs.

    Attributes:
        name: str. One of `RUNTIMES`.
        version: str. What ran the model, e.g. "onnxruntime 1.32.0" or
            "OpenCV 5.1.0 (ENGINE_OPENCV)", for reports.
        metadata: dict. The export's tfseg metadata, decoded.
        input_size: (H, W) the model requires, or None when any size works.
        channels: int. Input channels.
        seconds: float. Wall time spent in calls so far (inference, for frame-rate reports).
        state_shape: (h, w, S) of a recurrent model's state (NHWC, without the batch), or
            None for a model without one.
        state: float32 (1, h, w, S), the state the next frame is run from (None without).

    `predict` is `pixels -> outputs`, or for a recurrent model `(pixels, state) -> (outputs,
    states)`: the frames run in order from `state`, the states after each frame (N, h, w, S).
    """

    def __init__(self, name, predict, *, version, metadata, input_size, channels,
                 close=None, state_shape=None):
        self.name, self.version = name, version
        self.metadata, self.channels = metadata, channels
        self.input_size = tuple(input_size) if input_size else None
        self.state_shape = tuple(int(v) for v in state_shape) if state_shape else None
        self._predict, self._close = predict, close
        self.seconds = 0.0
        self.reset()

    @property
    def recurrent(self):
        """Whether the model carries a state from frame to frame."""
        return self.state_shape is not None

    def reset(self):
        """Starts a new sequence: a recurrent model's state back to zeros (no-op otherwise)."""
        self.state = np.zeros((1, *self.state_shape), np.float32) if self.recurrent else None

    def __call__(self, pixels):
        """float32 NHWC outputs of `pixels` (N, H, W, C); a recurrent model runs them as the
        next N frames of the current sequence (`advance`)."""
        return self.advance(pixels)[0] if self.recurrent else self._run(pixels)

    def advance(self, pixels):
        """(outputs, states) of a recurrent model for the next frames `pixels`, in order,
        from `state` (which becomes the last frame's): states (N, h, w, S) after each frame."""
        if not self.recurrent:
            raise TfsegError(f"{self.name}: the model carries no state")
        outputs, states = self._run(pixels)
        self.state = states[-1:]
        return outputs, states

    def run_sequence(self, frames):
        """`advance` over `frames`, one whole sequence from a zero state."""
        self.reset()
        return self.advance(frames)

    def _run(self, pixels):
        pixels = np.asarray(pixels, np.float32)
        if pixels.ndim != 4 or pixels.shape[-1] != self.channels:
            raise TfsegError(f"{self.name}: expected (N, H, W, {self.channels}) pixels, got "
                             f"shape {pixels.shape}")
        if self.input_size and tuple(pixels.shape[1:3]) != self.input_size:
            height, width = self.input_size
            raise TfsegError(f"{self.name}: the model takes {height}x{width} frames, got "
                             f"{pixels.shape[1]}x{pixels.shape[2]}; resize them first")
        started = time.perf_counter()
        if self.recurrent:
            outputs, states = self._predict(pixels, self.state)
            outputs = np.asarray(outputs, np.float32), np.asarray(states, np.float32)
        else:
            outputs = np.asarray(self._predict(pixels), np.float32)
        self.seconds += time.perf_counter() - started
        return outputs

    def close(self):
        """Releases what the runtime holds (OpenCV's child process)."""
        if self._close:
            self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return (f"Runtime({self.name!r}, input_size={self.input_size}, "
                f"channels={self.channels}, model={self.metadata.get('model')!r})")


def load(path, runtime=None):
    """The model at `path` in `runtime`.

    Args:
        path: str or Path. A SavedModel directory ("savedmodel"), a `.onnx` file
            ("onnxruntime", or an OpenCV DNN engine: "opencv", "opencv_classic",
            "opencv_ort", see `tfseg.deploy.opencv_dnn`), a `.keras` file ("keras";
            such files carry no tfseg metadata, so `metadata` is empty) or a preset,
            `preset:NAME` ("keras", with the metadata its export would carry).
        runtime: str. One of `RUNTIMES`, or None for the file's natural one.

    Raises:
        RuntimeUnavailable: the installed OpenCV lacks the OpenCV engine asked for.
        TfsegError: missing path, not a model, not a tfseg export, or a runtime that does not
            run this kind of file.
    """
    if is_preset(path):
        return _load_preset(str(path), runtime)
    path = Path(path)
    if not path.exists():
        raise TfsegError(f"{path}: no such file or directory; expected a SavedModel "
                         f"directory, a .onnx or a .keras file")
    if runtime is not None and runtime not in RUNTIMES:
        raise TfsegError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    kind = "savedmodel" if path.is_dir() else {".onnx": "onnx", ".keras": "keras"}.get(
        path.suffix.lower())
    if kind is None:
        raise TfsegError(f"{path}: not a model file; expected a SavedModel directory, a "
                         f".onnx or a .keras file")
    allowed = {"savedmodel": ("savedmodel",), "keras": ("keras",),
               "onnx": ("onnxruntime", *OPENCV_RUNTIMES)}[kind]
    runtime = runtime or allowed[0]
    if runtime not in allowed:
        raise TfsegError(f"{path}: runtime {runtime!r} cannot run this file; use "
                         f"{' or '.join(allowed)}")
    loaders = {"savedmodel": _load_saved_model, "keras": _load_keras,
               "onnxruntime": _load_onnxruntime}
    return loaders.get(runtime, _load_opencv)(path, runtime)


def model_state_shape(model):
    """(h, w, S) of the state input of a recurrent step model (`tfseg.models.build`), or None
    for a model without one."""
    names = [tensor.name for tensor in model.inputs]
    return tuple(model.inputs[names.index(STATE)].shape[1:]) if STATE in names else None


def frame_input_shape(model):
    """(batch, H, W, C) of `model`'s frame input (a recurrent step model's other input)."""
    return tuple(next(t for t in model.inputs if t.name != STATE).shape)


def step_outputs(model, pixels, state):
    """{"logits", "state"} of one inference call (`training=False`, TOOLCHAIN.md trap 1) of
    a recurrent step `model` on a frame and a state: what every export of it returns."""
    outputs = model([state if tensor.name == STATE else pixels for tensor in model.inputs],
                    training=False)
    return {"logits": outputs["logits"], STATE: outputs[STATE]}


def run_frames(step, pixels, state):
    """(outputs, states) of `step` ((1, ...) frame, state -> output, new state, numpy) run
    over the frames of `pixels` in order from `state`."""
    outputs, states = [], []
    for frame in pixels:
        output, state = step(frame[None], state)
        outputs.append(output)
        states.append(state)
    return np.concatenate(outputs), np.concatenate(states)


def from_keras(model, metadata=None, *, batch_size=8, jit_compile=False, frozen=True):
    """A "keras" runtime for an in-memory model, `batch_size` frames at a time (a recurrent
    step model: one frame at a time, its state carried; its metadata gets the state's
    description, `state_metadata`).

    The model is called with `training=False` (TOOLCHAIN.md trap 1) inside one tf.function
    with a fixed input signature, the graph every export traces: eager calls took 1.2x the
    time for LinkNet at 360x480 and 3.4x for the SR network at 72x72 on the project machine.
    `frozen` (the default) makes the weights as they are now constants of that graph, as an
    export does: oneDNN then packs each filter once instead of at every call and batch norm
    folds into the convolutions, which made FCN-32s 2.3x and LinkNet 1.6x faster
    (docs/benchmarks.md); the logits stay within float32 rounding. A model whose weights
    change between calls (training's validation) needs `frozen=False`. `jit_compile`
    compiles the graph with XLA.
    """
    import tensorflow as tf

    _, height, width, channels = frame_input_shape(model)
    spec = tf.TensorSpec((None, height, width, channels), tf.float32)
    state_shape = model_state_shape(model)
    if state_shape is not None:
        state_spec = tf.TensorSpec((None, *state_shape), tf.float32)
        call = _graph(lambda pixels, state: step_outputs(model, pixels, state),
                      [spec, state_spec], frozen=frozen, jit_compile=jit_compile)

        def step(frame, state):
            outputs = call(frame, state)
            return outputs["logits"].numpy(), outputs[STATE].numpy()

        return Runtime("keras", lambda pixels, state: run_frames(step, pixels, state),
                       version=_tensorflow_version(),
                       metadata={**(metadata or {}), **state_metadata(state_shape, "NHWC")},
                       input_size=(height, width), channels=channels,
                       state_shape=state_shape)
    infer = _graph(lambda pixels: model(pixels, training=False), [spec], frozen=frozen,
                   jit_compile=jit_compile)

    def predict(pixels):
        pixels = np.asarray(pixels, np.float32)
        return np.concatenate([infer(pixels[start:start + batch_size]).numpy()
                               for start in range(0, len(pixels), batch_size)])

    return Runtime("keras", predict, version=_tensorflow_version(),
                   metadata=dict(metadata or {}),
                   input_size=(height, width) if height and width else None,
                   channels=channels)


def _graph(function, signature, *, frozen, jit_compile):
    """`function` as one graph of `signature`, `frozen` or on the live variables."""
    import tensorflow as tf

    traced = tf.function(function, input_signature=signature,
                         jit_compile=jit_compile and not frozen)
    if not frozen:
        return traced
    return tf.function(_frozen(traced.get_concrete_function()), input_signature=signature,
                       jit_compile=jit_compile)


def _frozen(function):
    """The concrete `function` with its variables turned into constants
    (`convert_variables_to_constants_v2`, the step tf2onnx takes before converting), called
    with its inputs positionally (in their flattened order) and returning its structure."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    constant = convert_variables_to_constants_v2(function)
    return lambda *inputs: tf.nest.pack_sequence_as(function.structured_outputs,
                                                     constant(*inputs))


def _load_keras(path, runtime):
    import keras

    # Registers the custom layers the file names; imported here, as TensorFlow is, so that
    # the other runtimes never load it.
    import tfseg.models  # noqa: F401

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a bad archive
        raise TfsegError(f"{path}: not a Keras model file "
                         f"({str(error).splitlines()[0]})") from None
    return from_keras(model)


def _load_preset(reference, runtime):
    """The preset `reference` in memory ("keras"), with the metadata of its NHWC export."""
    if runtime not in (None, "keras"):
        raise TfsegError(f"{reference}: a preset runs in keras; to run it in {runtime}, "
                         f"export it first (python -m tfseg.export --model {reference} "
                         f"--output DIR) and give DIR's model")
    from tfseg.runs.presets import load_preset   # loads Keras and TensorFlow

    _, config, model = load_preset(reference)
    return from_keras(model, metadata_for(config, "NHWC"))


def _load_saved_model(path, runtime):
    import tensorflow as tf

    metadata = read_saved_model_metadata(path)
    loaded = tf.saved_model.load(str(path))   # alive while its variables are read
    signature = loaded.signatures["serving_default"]
    specs = dict(signature.structured_input_signature[1])
    frozen, names = _frozen(signature), sorted(specs)

    def serve(**inputs):   # the frozen signature takes its inputs in name order
        return frozen(*[inputs[name] for name in names])

    state = recurrent_state(metadata)
    if state:
        return _saved_model_step(path, runtime, serve, specs, metadata, state)
    (name, spec), = specs.items()
    _, height, width, channels = spec.shape

    def predict(pixels):
        (output,) = serve(**{name: tf.constant(pixels)}).values()
        return output.numpy()

    return Runtime(runtime, predict, version=_tensorflow_version(), metadata=metadata,
                   input_size=(height, width) if height and width else None,
                   channels=channels)


def _saved_model_step(path, runtime, serve, specs, metadata, state):
    """The runtime of a recurrent SavedModel: its signature takes the frame and the state
    (`state["input"]`) and returns the logits and the next state (`state["output"]`)."""
    import tensorflow as tf

    if state["input"] not in specs or len(specs) != 2:
        raise TfsegError(f"{path}: the signature takes {sorted(specs)}; its tfseg metadata "
                         f"describes a frame and the state {state['input']!r}")
    state_spec = specs[state["input"]]
    (name, spec), = ((key, value) for key, value in specs.items() if key != state["input"])
    _, height, width, channels = spec.shape

    def step(frame, current):
        outputs = serve(**{name: tf.constant(frame), state["input"]: tf.constant(current)})
        return outputs["logits"].numpy(), outputs[state["output"]].numpy()

    return Runtime(runtime, lambda pixels, current: run_frames(step, pixels, current),
                   version=_tensorflow_version(), metadata=metadata,
                   input_size=(height, width), channels=channels,
                   state_shape=state_spec.shape[1:])


def _state_nhwc(state, nchw):
    """(h, w, S) of a recurrent export's state (its metadata's shape is in the file's
    layout), or None."""
    if not state:
        return None
    shape = state["shape"][1:]
    return (shape[1], shape[2], shape[0]) if nchw else tuple(shape)


def _onnx_input(metadata):
    """(input size, channels, NCHW?) from the metadata onnx_conversion writes."""
    if not {"input_size", "input_channels", "layout"} <= metadata.keys():
        raise TfsegError("tfseg metadata without input_size, input_channels and layout: "
                         "export the model again with this tfseg version")
    return metadata["input_size"], metadata["input_channels"], metadata["layout"] == "NCHW"


def _to_nhwc(outputs, nchw):
    return outputs.transpose(0, 2, 3, 1) if nchw else outputs


def _from_nhwc(array, nchw):
    return np.ascontiguousarray(array.transpose(0, 3, 1, 2)) if nchw else array


def _load_onnxruntime(path, runtime):
    import onnxruntime

    metadata = read_onnx_metadata(path)
    size, channels, nchw = _onnx_input(metadata)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _check_onnx_shapes(path, session, metadata)
    name = session.get_inputs()[0].name
    state = recurrent_state(metadata)
    if state:
        def step(frame, current):
            logits, new = session.run(["logits", state["output"]], {
                name: _from_nhwc(frame, nchw), state["input"]: _from_nhwc(current, nchw)})
            return _to_nhwc(logits, nchw), _to_nhwc(new, nchw)

        return Runtime(runtime, lambda pixels, current: run_frames(step, pixels, current),
                       version=f"onnxruntime {onnxruntime.__version__}", metadata=metadata,
                       input_size=size, channels=channels, state_shape=_state_nhwc(state, nchw))

    def predict(pixels):
        # Exports have a static batch of 1.
        batches = pixels.transpose(0, 3, 1, 2) if nchw else pixels
        return _to_nhwc(np.concatenate([session.run(None, {name: batch[None]})[0]
                                        for batch in batches]), nchw)

    return Runtime(runtime, predict, version=f"onnxruntime {onnxruntime.__version__}",
                   metadata=metadata, input_size=size, channels=channels)


def _check_onnx_shapes(path, session, metadata):
    """TfsegError if the graph's input shape, or a segmentation output's class count,
    contradicts the file's tfseg metadata (a forged or foreign file)."""
    size, channels, nchw = _onnx_input(metadata)
    expected = [1, channels, *size] if nchw else [1, *size, channels]
    actual = session.get_inputs()[0].shape
    if actual != expected:
        raise TfsegError(f"{path}: the graph takes input {actual}, its tfseg metadata "
                         f"describes {expected} ({metadata['layout']}, {channels} channel(s), "
                         f"{size[0]}x{size[1]})")
    others = {tensor.name: tensor.shape for tensor in session.get_inputs()[1:]}
    state = recurrent_state(metadata)
    if others != ({state["input"]: state["shape"]} if state else {}):
        raise TfsegError(f"{path}: the graph's other inputs are {others}; its tfseg metadata "
                         f"describes {'the state ' + repr(state) if state else 'none'}")
    output = session.get_outputs()[0].shape
    if metadata.get("task") == "segmentation" and "class_names" in metadata and len(output) == 4:
        classes = output[1] if nchw else output[3]
        if isinstance(classes, int) and classes != len(metadata["class_names"]):
            raise TfsegError(f"{path}: the graph outputs {classes} classes, its tfseg "
                             f"metadata names {len(metadata['class_names'])}")


def _tensorflow_version():
    import keras
    import tensorflow as tf

    return f"TensorFlow {tf.__version__}, Keras {keras.__version__}"


def _load_opencv(path, runtime):
    metadata = read_onnx_metadata(path)
    size, channels, nchw = _onnx_input(metadata)
    if not nchw:
        raise TfsegError(f"{path}: OpenCV DNN feeds NCHW blobs; this export is "
                         f"{metadata.get('layout')}")
    state = recurrent_state(metadata)
    streams = {"inputs": [metadata.get("input_name", "pixels"), state["input"]],
               "outputs": ["logits", state["output"]]} if state else None
    try:
        worker = OpenCVWorker(path, runtime, streams=streams)
    except EngineUnavailable as error:
        raise RuntimeUnavailable(str(error)) from None
    except OpenCVError as error:
        raise TfsegError(f"{path}: {error}") from None

    def predict(pixels, *current):
        try:
            outputs = worker(pixels, *(_from_nhwc(c, nchw) for c in current))
        except OpenCVError as error:
            raise TfsegError(f"{path}: {error}") from None
        return tuple(_to_nhwc(o, nchw) for o in outputs) if state else _to_nhwc(outputs, nchw)

    return Runtime(runtime, predict, version=worker.version, metadata=metadata,
                   input_size=size, channels=channels, close=worker.close,
                   state_shape=_state_nhwc(state, nchw))


def states_file(outputs):
    """Where `run_on_files` saves a recurrent model's states beside its `outputs` file."""
    return Path(outputs).with_suffix(".states.npy")


def run_on_files(path, runtime, inputs, outputs):
    """Runs the model at `path` in `runtime` on the pixels in the .npy file `inputs`, saves
    its outputs to the .npy file `outputs` and returns the runtime's version (the work of
    `python -m tfseg.runtimes`, which checks an export in a process of its own). A recurrent
    model runs them as one sequence from a zero state; its states after each frame go to
    `states_file(outputs)`."""
    with load(path, runtime) as model:
        if model.recurrent:
            results, states = model.run_sequence(np.load(inputs))
            np.save(states_file(outputs), states)
        else:
            results = model(np.load(inputs))
        np.save(outputs, results)
        return model.version
