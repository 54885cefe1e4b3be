"""Runs an exported ONNX model in OpenCV DNN inside a child process.

OpenCV can crash (not just raise) on a graph it does not support (TOOLCHAIN.md trap 4), so the
parent never loads the model itself. The child imports only OpenCV and numpy, feeds each image
through `cv2.dnn.blobFromImage` exactly as a deployment user would, and returns the raw outputs.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ENGINES = {"opencv": "ENGINE_NEW", "opencv_classic": "ENGINE_CLASSIC"}


class OpenCVError(RuntimeError):
    """OpenCV DNN could not load or run the model (message holds OpenCV's own words)."""


def run_opencv(onnx_path, images, *, runtime="opencv", timeout=600):
    """Outputs of `onnx_path` in OpenCV DNN for NHWC `images`, one forward pass per image.

    Args:
        onnx_path: str or Path. A model with an NCHW input.
        images: float32 (N, H, W, C) raw pixels.
        runtime: str. A key of `ENGINES`. Defaults to "opencv" (the new engine).
        timeout: float. Seconds before the child is killed.

    Returns:
        float32 (N, ...) array of the model's first output, as OpenCV returns it (NCHW).

    Raises:
        OpenCVError: the child failed, crashed or timed out.
    """
    with tempfile.TemporaryDirectory(prefix="tfseg-opencv-") as tmp:
        inputs, outputs = Path(tmp) / "inputs.npy", Path(tmp) / "outputs.npy"
        np.save(inputs, np.asarray(images, np.float32))
        command = [sys.executable, "-m", "tfseg.opencv_dnn", str(onnx_path), ENGINES[runtime],
                   str(inputs), str(outputs)]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise OpenCVError(f"{runtime}: no answer within {timeout} s") from None
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise OpenCVError(f"{runtime}: exit status {result.returncode}: {last}")
        return np.load(outputs)


def _child(onnx_path, engine_name, inputs_path, outputs_path):
    import cv2

    net = cv2.dnn.readNetFromONNX(onnx_path, getattr(cv2.dnn, engine_name))
    outputs = []
    for image in np.load(inputs_path):
        net.setInput(cv2.dnn.blobFromImage(image, scalefactor=1.0, swapRB=False, crop=False))
        outputs.append(net.forward())
    np.save(outputs_path, np.concatenate(outputs).astype(np.float32))


if __name__ == "__main__":
    _child(*sys.argv[1:5])
