"""Runs an exported ONNX model in OpenCV DNN inside a long-lived child process.

OpenCV can crash (not just raise) on a graph it does not support (TOOLCHAIN.md trap 4), so the
parent never loads the model itself. The child imports only OpenCV and numpy, loads the model
once, then answers batch after batch over its stdin/stdout pipes (so predicting a video does
not start a process per frame). It feeds each image through `cv2.dnn.blobFromImage` exactly as
a deployment user would and returns the raw outputs.

Messages in both directions are an 8-byte little-endian length followed by a `.npy` payload;
an empty message from the child means "model loaded".
"""

import io
import os
import struct
import subprocess
import sys
import tempfile
import threading

import numpy as np

ENGINES = {"opencv": "ENGINE_NEW", "opencv_classic": "ENGINE_CLASSIC"}
_LENGTH = struct.Struct("<Q")


class OpenCVError(RuntimeError):
    """OpenCV DNN could not load or run the model (message holds OpenCV's own words)."""


class OpenCVWorker:
    """A child process holding one ONNX model in one OpenCV DNN engine.

    Args:
        onnx_path: str or Path. A model with an NCHW input.
        runtime: str. A key of `ENGINES`. Defaults to "opencv" (the new engine).
        timeout: float. Seconds the child may take to load the model or answer one call
            before it is killed.

    Raises:
        OpenCVError: the child could not load the model, crashed or timed out.
    """

    def __init__(self, onnx_path, runtime="opencv", *, timeout=600):
        self.runtime, self.timeout = runtime, timeout
        self._stderr = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tfseg.opencv_dnn", str(onnx_path), ENGINES[runtime]],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)
        self._receive()  # the "model loaded" message, or the load error

    def __call__(self, images):
        """float32 (N, ...) outputs, as OpenCV returns them (NCHW), for NHWC `images`."""
        if self._process.poll() is not None:
            raise self._failure()
        try:
            _send(self._process.stdin, np.asarray(images, np.float32))
        except BrokenPipeError:
            raise self._failure() from None
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
        return OpenCVError(f"{self.runtime}: exit status {self._process.returncode}: "
                           f"{(lines or ['(no message)'])[-1]}")


def run_opencv(onnx_path, images, *, runtime="opencv", timeout=600):
    """Outputs of `onnx_path` in OpenCV DNN for NHWC `images`, in a one-off child process.

    Returns:
        float32 (N, ...) array of the model's first output, as OpenCV returns it (NCHW).

    Raises:
        OpenCVError: the child failed, crashed or timed out.
    """
    with OpenCVWorker(onnx_path, runtime, timeout=timeout) as worker:
        return worker(images)


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


def _serve(onnx_path, engine_name):
    import cv2

    # Answers go to a private copy of stdout; anything OpenCV prints goes to stderr.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    net = cv2.dnn.readNetFromONNX(onnx_path, getattr(cv2.dnn, engine_name))
    _send(answers, None)
    while (images := _receive(requests)) is not None:
        outputs = []
        for image in images:
            net.setInput(cv2.dnn.blobFromImage(image, scalefactor=1.0, swapRB=False,
                                               crop=False))
            outputs.append(net.forward())
        _send(answers, np.concatenate(outputs).astype(np.float32))


if __name__ == "__main__":
    _serve(*sys.argv[1:3])
