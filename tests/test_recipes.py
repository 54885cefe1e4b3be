"""Every recipe in configs/ validates, and each runs a couple of training steps end to end on
tiny inputs of its own kind (interferogram folders and HR image folders written here; CamVid
from ../shared/data when present)."""

import pytest
from conftest import REPO, run_module, write_hr_images

from tfseg.config import load_config

RECIPES = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates(path):
    load_config(path)


@pytest.fixture(scope="module")
def interferogram_folder(tmp_path_factory):
    """Two sequences of six 64x64 synthetic frames, in the on-disk format."""
    out = tmp_path_factory.mktemp("recipes") / "interferograms"
    result = run_module("tools.make_interferograms", "--out", out, "--sequences", 2,
                        "--frames", 6, "--size", "64x64", "--fringes", 8)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def hr_folders(tmp_path_factory):
    """Two folders of random 40x56 RGB images (train, validation)."""
    root = tmp_path_factory.mktemp("hr")
    write_hr_images(root / "train", 3, (40, 56))
    write_hr_images(root / "validation", 2, (40, 56), seed=1)
    return root


def tiny_overrides(config, interferogram_folder, hr_folders):
    """--set overrides that shrink `config` to seconds on tiny data of its kind."""
    overrides = ["train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=2",
                 "train.warmup_steps=0", "export.saved_model=false", "export.onnx=false"]
    if config.data.source == "interferograms":
        overrides += [f"data.path={interferogram_folder}", "data.height=64", "data.width=64",
                      "data.val_fraction=0.2"]
        if config.data.augment.crop:
            overrides.append("data.augment.crop=[64, 32]")
    elif config.data.source == "super_resolution":
        overrides += [f"data.super_resolution.train=[{hr_folders / 'train'}]",
                      f"data.super_resolution.validation=[{hr_folders / 'validation'}]",
                      "data.super_resolution.patch_size=32", "data.height=8",
                      "data.width=8", "train.log_images=2"]
        if config.train.loss == "perceptual":
            overrides.append("train.perceptual.weights=random")
    elif config.data.source == "camvid" and not (REPO / config.data.path).exists():
        pytest.skip(f"{config.data.path}: the CamVid data is not on this machine")
    return overrides


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_trains_for_two_steps(path, tmp_path, interferogram_folder, hr_folders):
    config = load_config(path)
    overrides = tiny_overrides(config, interferogram_folder, hr_folders)
    result = run_module("tfseg.train", "--config", path, "--run-dir", tmp_path / "run",
                        *[arg for override in overrides for arg in ("--set", override)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "metrics.json").exists()
