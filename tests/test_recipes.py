"""Every recipe in configs/ validates, and each runs a couple of training steps end to end."""

from pathlib import Path

import pytest
from conftest import REPO, run_module

from tfseg.config import load_config

RECIPES = sorted((REPO / "configs").glob("*.yaml"))
SHARED = REPO.parent / "shared" / "data"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates(path):
    load_config(path)


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_trains_for_two_steps(path, tmp_path):
    config = load_config(path)
    if config.data.source != "synthetic" and not Path(REPO / config.data.path).exists():
        pytest.skip(f"{config.data.path}: the recipe's data is not on this machine")
    result = run_module(
        "tfseg.train", "--config", path, "--run-dir", tmp_path / "run",
        "--set", "train.epochs=1", "--set", "train.steps_per_epoch=2",
        "--set", "train.batch_size=2", "--set", "train.warmup_steps=0",
        "--set", "export.saved_model=false", "--set", "export.onnx=false")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "metrics.json").exists()
