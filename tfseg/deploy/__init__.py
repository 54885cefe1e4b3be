"""From a trained model to what users run: export (SavedModel, ONNX and its graph rewrites,
metadata), parity of every runtime with Keras, one interface to every runtime, and inference
and scoring on frames (tiling, preprocessing from the metadata)."""
