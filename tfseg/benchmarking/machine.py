"""This machine's measured figures (a large matmul, the practical ceiling; a 3x3 convolution
and ResNet50, to compare the machine with TOOLCHAIN.md's) and the timing and memory
measurements every row uses."""

import dataclasses
import resource
import statistics
import time

import tfseg
from tfseg.deploy.opencv_dnn import installed_engines
from tfseg.utils.hardware import choose_precision, cpu_info, gpus

# A 3x3 convolution, 64 -> 64 channels, on one 256x256 image (TOOLCHAIN.md: about 420 GFLOP/s
# on the project machine); a measured kernel, not a ceiling (onnxruntime runs past it).
REFERENCE_CONV = {"size": 256, "channels": 64, "kernel": 3}
# The same machine's figures in TOOLCHAIN.md, re-measured by every run to show how fast the
# machine is today: the 3x3 convolution above, a 4096^3 float32 matmul, and
# keras.applications ResNet50 (no top, weights=None) on one 512x512x3 image in a tf.function.
TOOLCHAIN_ANCHORS = {"conv_gflop_per_s": 420.0, "matmul_gflop_per_s": 270.0,
                     "resnet50_ms": 115.0}


def measure_machine():
    """This machine's practical float32 ceiling (a 4096^3 matmul's GFLOP/s), its reference
    figures (`TOOLCHAIN_ANCHORS`), and the runtimes' versions (OpenCV's as the OpenCV DNN
    worker imports it, see `tfseg.deploy.opencv_dnn.python`)."""
    # Imported here: the parent process of `python -m tfseg.bench` never loads them.
    import keras
    import numpy as np
    import onnxruntime
    import tensorflow as tf

    size, channels, kernel = (REFERENCE_CONV[k] for k in ("size", "channels", "kernel"))
    images = tf.random.normal((1, size, size, channels))
    filters = tf.random.normal((kernel, kernel, channels, channels))
    conv = tf.function(lambda x: tf.nn.conv2d(x, filters, 1, "SAME"))
    seconds = time_calls(lambda: conv(images).numpy(), warmup=3, repeats=20)["median_s"]
    flops = 2 * size * size * kernel * kernel * channels * channels
    matrix = tf.random.normal((4096, 4096))
    matmul = tf.function(lambda x: tf.linalg.matmul(x, x))
    matmul_s = time_calls(lambda: matmul(matrix).numpy(), warmup=1, repeats=5)["median_s"]
    resnet = keras.applications.ResNet50(include_top=False, weights=None,
                                         input_shape=(512, 512, 3))
    resnet_call = tf.function(lambda x: resnet(x, training=False))
    image = tf.random.uniform((1, 512, 512, 3))
    resnet_s = time_calls(lambda: resnet_call(image).numpy(), warmup=2, repeats=10)["median_s"]
    return {"precision": dataclasses.asdict(choose_precision(cpu_info(), gpus())),
            "matmul_gflop_per_s": 2 * 4096 ** 3 / 1e9 / matmul_s,
            "anchors": {"conv_gflop_per_s": flops / 1e9 / seconds,
                        "matmul_gflop_per_s": 2 * 4096 ** 3 / 1e9 / matmul_s,
                        "resnet50_ms": 1e3 * resnet_s},
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                         "onnxruntime": onnxruntime.__version__, "opencv": installed_engines()[1],
                         "numpy": np.__version__, "tfseg": tfseg.__version__}}


def time_calls(call, *, warmup, repeats):
    """Median, p90, minimum and maximum seconds of `repeats` calls after `warmup` calls."""
    import numpy as np

    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return {"median_s": statistics.median(seconds), "p90_s": float(np.percentile(seconds, 90)),
            "min_s": min(seconds), "max_s": max(seconds)}


def peak_rss_mib(who=resource.RUSAGE_SELF):
    """High-water mark of resident memory (Linux reports KiB): this process's, or with
    RUSAGE_CHILDREN the largest of its finished child processes'."""
    return resource.getrusage(who).ru_maxrss / 1024
