"""The training run behind `python -m tfseg.train`: the loop, its distributed steps, the
optimizer, the distribution strategy and precision, TensorBoard and the console summary."""
