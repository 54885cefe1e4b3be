"""Runs an exported ONNX model in OpenCV DNN inside a long-lived child process.

OpenCV can crash (not just raise) on a graph it does not support (TOOLCHAIN.md trap 4), so the
parent never loads the model itself. The child imports only OpenCV and numpy, loads the model
once, then answers batch after batch over its stdin/stdout pipes (so predicting a video does
not start a process per frame). It feeds each image through `cv2.dnn.blobFromImage` exactly as
a deployment user would and returns the raw outputs.

Which OpenCV engine a runtime name means is decided here and nowhere else, from what the
installed OpenCV has (TOOLCHAIN.md trap 4):

| runtime          | OpenCV 4.x     | 5.0            | 5.1 and newer                       |
|------------------|----------------|----------------|-------------------------------------|
| `opencv`         | its one engine | ENGINE_NEW     | ENGINE_OPENCV                       |
| `opencv_classic` | not available  | ENGINE_CLASSIC | not available                       |
| `opencv_ort`     | not available  | ENGINE_ORT where OpenCV was built with ONNX Runtime  |

An engine the installed OpenCV lacks raises `EngineUnavailable`, which callers report as "not
available", never as a disagreement. OpenCV older than `MINIMUM_VERSION` is refused.

The child runs in `sys.executable`, or in the interpreter named by the environment variable
`TFSEG_OPENCV_PYTHON` (any Python with numpy and cv2, e.g. Debian's python3 with its OpenCV
4.6), so an export can be checked against the OpenCV a deployment target has. This file is
run as a script there and imports nothing from tfseg.

Messages in both directions are an 8-byte little-endian length followed by a `.npy` payload;
the child's first message is a JSON description of the OpenCV and engine it loaded the model
in (UTF-8 bytes as a uint8 array). A recurrent model (`streams`: the names of its frame and
state inputs and of its logits and state outputs) takes two messages per call, the frames and
the state to start from, and answers two, the logits and the state after each frame: the
frames run in order in the child, each one's state fed to the next.
"""

import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading

import numpy as np

RUNTIMES = ("opencv", "opencv_classic", "opencv_ort")
MINIMUM_VERSION = (4, 6)
PYTHON_VARIABLE = "TFSEG_OPENCV_PYTHON"
_UNAVAILABLE_STATUS = 3     # the child's exit status for an engine this OpenCV lacks
_LENGTH = struct.Struct("<Q")


class OpenCVError(RuntimeError):
    """OpenCV DNN could not load or run the model (message holds OpenCV's own words)."""


class EngineUnavailable(OpenCVError):
    """The installed OpenCV has no such engine (message says which OpenCV)."""


class OpenCVWorker:
    """A child process holding one ONNX model in one OpenCV DNN engine.

    Args:
        onnx_path: str or Path. A model with an NCHW input.
        runtime: str. One of `RUNTIMES`. Defaults to "opencv" (the installed OpenCV's
            default engine).
        timeout: float. Seconds the child may take to load the model or answer one call
            before it is killed.
        streams: dict or None. For a recurrent model: {"inputs": [frame, state],
            "outputs": [logits, state]}, the graph's names. Defaults to None.

    Attributes:
        version: str. The OpenCV version and engine, e.g. "OpenCV 5.1.0 (ENGINE_OPENCV)".

    Raises:
        EngineUnavailable: the installed OpenCV lacks that engine.
        OpenCVError: the child could not load the model, crashed or timed out, or OpenCV is
            older than `MINIMUM_VERSION`.
    """

    def __init__(self, onnx_path, runtime="opencv", *, timeout=600, streams=None):
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown OpenCV runtime {runtime!r}; one of {RUNTIMES}")
        self.runtime, self.timeout, self.recurrent = runtime, timeout, streams is not None
        self._stderr = tempfile.TemporaryFile()
        self._process = _start([python(), "-I", __file__, str(onnx_path), runtime,
                                *([json.dumps(streams)] if streams else [])],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=self._stderr)
        loaded = json.loads(self._receive().tobytes())
        self.version = describe(loaded)

    def __call__(self, images, state=None):
        """float32 (N, ...) outputs, as OpenCV returns them (NCHW), for NHWC `images`; for a
        recurrent model, (logits, states after each frame) from `state` (the graph's layout,
        (1, ...))."""
        if self._process.poll() is not None:
            raise self._failure()
        try:
            _send(self._process.stdin, np.asarray(images, np.float32))
            if self.recurrent:
                _send(self._process.stdin, np.asarray(state, np.float32))
        except BrokenPipeError:
            raise self._failure() from None
        if self.recurrent:
            return self._receive(), self._receive()
        return self._receive()

    def close(self):
        """Stops the child (it exits when its input closes)."""
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process.stdout.close()
        self._stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _receive(self):
        timed_out = threading.Event()

        def kill():
            timed_out.set()
            self._process.kill()

        watchdog = threading.Timer(self.timeout, kill)
        watchdog.start()
        try:
            answer = _receive(self._process.stdout)
        finally:
            watchdog.cancel()
        if answer is None:
            raise self._failure(timed_out.is_set())
        return answer

    def _failure(self, timed_out=False):
        self._process.wait()
        if timed_out:
            return OpenCVError(f"{self.runtime}: no answer within {self.timeout} s")
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        last = (lines or ["(no message)"])[-1]
        logged = [line for line in lines[:-1] if "ERROR" in line]   # OpenCV's own log
        if logged:
            last = f"{last}: {logged[-1]}"
        if self._process.returncode == _UNAVAILABLE_STATUS:
            return EngineUnavailable(f"{self.runtime}: {last}")
        return OpenCVError(f"{self.runtime}: exit status {self._process.returncode}: {last}")


def python():
    """The interpreter OpenCV runs in: `TFSEG_OPENCV_PYTHON`, else this one."""
    return os.environ.get(PYTHON_VARIABLE) or sys.executable


def describe(loaded):
    """"OpenCV 5.1.0 (ENGINE_OPENCV)" from the child's description of a loaded model."""
    engine = loaded["engine"] or "its only engine"
    return f"OpenCV {loaded['opencv_version']} ({engine})"


def run_opencv(onnx_path, images, *, runtime="opencv", timeout=600):
    """Outputs of `onnx_path` in OpenCV DNN for NHWC `images`, in a one-off child process.

    Returns:
        float32 (N, ...) array of the model's first output, as OpenCV returns it (NCHW).

    Raises:
        EngineUnavailable: the installed OpenCV lacks that engine.
        OpenCVError: the child failed, crashed or timed out.
    """
    with OpenCVWorker(onnx_path, runtime, timeout=timeout) as worker:
        return worker(images)


def installed_engines():
    """{runtime: None if available, else the reason it is not} for the OpenCV that
    `python()` imports, and that OpenCV's version string; asked in a child process."""
    process = _start([python(), "-I", __file__, "--engines"], stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
    stdout, stderr = process.communicate(timeout=120)
    if process.returncode != 0:
        last = (stderr.strip().splitlines() or ["(no message)"])[-1]
        raise OpenCVError(f"{python()} cannot run OpenCV DNN: {last}")
    answer = json.loads(stdout)
    return answer["engines"], answer["opencv_version"]


def _start(command, **options):
    """The child process of `command`; an interpreter that cannot start is an OpenCVError
    naming it (a wrong `TFSEG_OPENCV_PYTHON`)."""
    try:
        return subprocess.Popen(command, **options)
    except OSError as error:
        raise OpenCVError(f"cannot start {command[0]} for OpenCV DNN ({error.strerror}); "
                          f"check {PYTHON_VARIABLE}") from None


def _send(stream, array):
    buffer = io.BytesIO()
    if array is not None:
        np.save(buffer, array, allow_pickle=False)
    stream.write(_LENGTH.pack(buffer.tell()) + buffer.getvalue())
    stream.flush()


def _receive(stream):
    """The next array (an empty array for an empty message), or None at end of stream."""
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(header)
    payload = stream.read(length)
    if len(payload) < length:
        return None
    return np.load(io.BytesIO(payload), allow_pickle=False) if length else np.empty(0)


# Everything below runs in the child, beside OpenCV.

def _engine(cv2, runtime):
    """(engine attribute name or None for OpenCV 4's only engine, None) if `runtime` exists
    in this OpenCV, else (None, why not)."""
    dnn, version = cv2.dnn, cv2.__version__
    if runtime == "opencv":
        for name in ("ENGINE_OPENCV", "ENGINE_NEW"):   # 5.1+ renamed 5.0's ENGINE_NEW
            if hasattr(dnn, name):
                return name, None
        return None, None
    if runtime == "opencv_classic":
        if hasattr(dnn, "ENGINE_CLASSIC"):
            return "ENGINE_CLASSIC", None
        return None, (f"OpenCV {version} has no classic engine (only 5.0 has it beside the "
                      f"new one; 4.x's only engine is runtime 'opencv')")
    if not hasattr(dnn, "ENGINE_ORT"):
        return None, f"OpenCV {version} has no ENGINE_ORT"
    if not _built_with_onnxruntime(cv2):
        return None, (f"OpenCV {version} was built without ONNX Runtime, so ENGINE_ORT "
                      f"would fall back to its own engine")
    return "ENGINE_ORT", None


def _built_with_onnxruntime(cv2):
    for line in cv2.getBuildInformation().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "ONNX Runtime":
            return value.strip().upper().startswith("YES")
    return False


def _version_tuple(version):
    return tuple(int(part) for part in version.split("-")[0].split(".")[:2])


def _check_version(cv2):
    if _version_tuple(cv2.__version__) < MINIMUM_VERSION:
        minimum = ".".join(map(str, MINIMUM_VERSION))
        sys.exit(f"OpenCV {cv2.__version__} is older than {minimum}, the oldest OpenCV "
                 f"that runs tfseg exports; install opencv-python>={minimum}")


def _list_engines():
    import cv2

    _check_version(cv2)
    engines = {runtime: _engine(cv2, runtime)[1] for runtime in RUNTIMES}
    print(json.dumps({"opencv_version": cv2.__version__, "engines": engines}))


def _serve(onnx_path, runtime, streams=None):
    import cv2

    _check_version(cv2)
    # Answers go to a private copy of stdout; anything OpenCV prints goes to stderr.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    engine, unavailable = _engine(cv2, runtime)
    if unavailable:
        print(unavailable, file=sys.stderr)
        sys.exit(_UNAVAILABLE_STATUS)
    if engine is None:
        net = cv2.dnn.readNetFromONNX(onnx_path)
    else:
        net = cv2.dnn.readNetFromONNX(onnx_path, getattr(cv2.dnn, engine))
    if net.empty():   # OpenCV 5 returns an empty network instead of raising
        sys.exit(f"OpenCV {cv2.__version__} could not load {onnx_path}")
    loaded = {"opencv_version": cv2.__version__, "engine": engine}
    _send(answers, np.frombuffer(json.dumps(loaded).encode(), np.uint8))
    requests = sys.stdin.buffer
    streams = json.loads(streams) if streams else None
    while (images := _receive(requests)) is not None:
        if streams:
            state = _receive(requests)
            if state is None:
                break
            _send_all(answers, _run_stream(cv2, net, images, state, streams))
            continue
        outputs = []
        for image in images:
            net.setInput(_blob(cv2, image))
            outputs.append(net.forward())
        _send(answers, np.concatenate(outputs).astype(np.float32))


def _blob(cv2, image):
    return cv2.dnn.blobFromImage(image, scalefactor=1.0, swapRB=False, crop=False)


def _run_stream(cv2, net, images, state, streams):
    """(logits, states) of a recurrent model run over `images` in order from `state`."""
    (frame_name, state_name), outputs = streams["inputs"], streams["outputs"]
    logits, states = [], []
    for image in images:
        net.setInput(_blob(cv2, image), frame_name)
        net.setInput(np.ascontiguousarray(state, np.float32), state_name)
        output, state = net.forward(outputs)
        logits.append(output)
        states.append(state)
    return np.concatenate(logits), np.concatenate(states)


def _send_all(stream, arrays):
    for array in arrays:
        _send(stream, np.asarray(array, np.float32))


if __name__ == "__main__":
    if sys.argv[1:] == ["--engines"]:
        _list_engines()
    else:
        _serve(*sys.argv[1:4])
