"""The presets shipped in tfseg/pretrained/: each complete, within the size limit, holding the
weights its entry names, with its model card filled in, and (where its data is on this
machine) scoring what its card and entry say with `python -m tfseg.evaluate`."""

import json

import pytest
from conftest import REPO

from tfseg.runs import presets

SHIPPED = sorted(path.parent.name for path in (REPO / "tfseg/pretrained").glob("*/preset.json"))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_preset_is_complete_and_intact(name):
    preset = presets.find_preset(name)   # every file present
    assert preset.folder == REPO / "tfseg/pretrained" / name
    assert preset.weights_path.stat().st_size <= presets.MAX_WEIGHTS_BYTES
    presets.check_intact(preset)   # sha256 as preset.json says
    card = (preset.folder / presets.CARD_NAME).read_text()
    assert "<!--" not in card, "a part of the model card is not filled in"
    for score, value in preset.info["scores"].items():
        assert f"| {score} | {value:.4f} |" in card, f"{score} differs from the card"


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_preset_scores_what_its_entry_says(name, tmp_path):
    from tfseg import evaluate
    from tfseg.cli import run_cli

    preset, config, _ = presets.load_preset(name)
    shared = REPO.parent / "shared" / "data"
    folders = {"camvid": ["camvid"], "super_resolution": ["sr/t91", "sr/bsd200", "sr/set5"],
               "synthetic": []}[config.data.source]
    missing = [folder for folder in folders if not (shared / folder).is_dir()]
    if missing:
        pytest.skip(f"the preset's data is not on this machine ({shared / missing[0]})")
    overrides = {"camvid": ["--set", f"data.path={shared / 'camvid'}"],
                 "super_resolution": [
                     "--set", f"data.super_resolution.train=[{shared / 'sr/t91'}, "
                              f"{shared / 'sr/bsd200'}]",
                     "--set", f"data.super_resolution.validation=[{shared / 'sr/set5'}]"],
                 "synthetic": []}[config.data.source]
    assert run_cli(evaluate.main, ["--model", f"preset:{name}", "--output", str(tmp_path),
                                   *overrides]) == 0
    scores = json.loads((tmp_path / "evaluation.json").read_text())
    for key, value in preset.info["scores"].items():
        assert scores[key] == pytest.approx(value, abs=1e-4), key
