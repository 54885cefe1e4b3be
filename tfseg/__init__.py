"""tfseg: semantic segmentation and super-resolution in Keras 3, exported for OpenCV DNN."""

__version__ = "0.1.0"
