"""A training run on disk: its folder, its checkpoints, and the model restored from them."""
