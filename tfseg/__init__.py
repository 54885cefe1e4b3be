"""tfseg: semantic segmentation and super-resolution in Keras 3, exported for OpenCV DNN."""

import os

__version__ = "0.1.0"

# TensorFlow's C++ INFO lines (XLA's start-up notices when the optimizer update compiles, the
# advice to rebuild TensorFlow for this CPU) are not for a user to act on; warnings and errors
# still show. Set TF_CPP_MIN_LOG_LEVEL=0 to see them all. Read when TensorFlow loads, so it
# only applies where tfseg is imported first (every `python -m tfseg.*` command).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
