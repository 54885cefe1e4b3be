"""The installed package is self-contained. The recipes ship inside it: `--config NAME` finds
them from any folder, and the wheel holds every recipe in configs/, each of which loads from the
installed package; a command that once used the checkout (bench's interferogram pipeline) runs
from the wheel elsewhere."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, run_module

from tfseg import train
from tfseg.config import load_config
from tfseg.config.recipes import recipe_path, recipes
from tfseg.runs.presets import FILES
from tfseg.utils.errors import ConfigError

RECIPES = sorted(path.stem for path in (REPO / "configs").glob("*.yaml"))


def test_every_recipe_in_configs_is_packaged():
    assert sorted(recipes()) == RECIPES


def test_default_names_the_default_recipe():
    path = recipe_path("default")
    assert path.name == "default.yaml"
    assert path.read_bytes() == (REPO / "configs" / "default.yaml").read_bytes()


@pytest.mark.parametrize("given", ["configs/default.yaml", "elsewhere/missing", "my.yaml",
                                   "/abs/recipe.yml"])
def test_a_path_is_taken_as_given(given):
    assert recipe_path(given) == Path(given)


def test_an_existing_file_wins_over_a_recipe_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("default").write_text("train: {epochs: 1}\n")
    assert recipe_path("default") == Path("default")


def test_unknown_name_lists_the_recipes():
    with pytest.raises(ConfigError) as caught:
        recipe_path("linknet_camvd")
    assert str(caught.value) == (
        f"--config linknet_camvd: no such file or recipe; the recipes are "
        f"{', '.join(RECIPES)} (or give a YAML file's path)")


def test_an_install_without_the_recipes_says_to_reinstall(monkeypatch):
    def missing(package):
        raise ModuleNotFoundError(f"No module named '{package}'")

    monkeypatch.setattr("importlib.resources.files", missing)
    with pytest.raises(ConfigError, match=r"recipes \(tfseg.recipes\) are missing: reinstall"):
        recipe_path("default")


@pytest.mark.parametrize("argv, recipe", [([], "default"),
                                          (["--config", "default"], "default"),
                                          (["--config", "linknet_camvid"], "linknet_camvid")])
def test_cli_trains_the_named_recipe(argv, recipe, monkeypatch):
    calls = []
    monkeypatch.setattr("tfseg.training.loop.train", lambda config, run_dir, **_: calls.append(
        (config, run_dir)))
    assert train.main(argv) == 0
    [(config, run_dir)] = calls
    assert config == load_config(REPO / "configs" / f"{recipe}.yaml")
    assert run_dir.parent == Path("runs") and run_dir.name.startswith(f"{recipe}-")


def test_cli_unknown_recipe_is_one_line_and_exit_2(tmp_path):
    result = run_module("tfseg.train", "--config", "nope", "--run-dir", tmp_path / "run")
    assert result.returncode == 2
    assert result.stderr.startswith("error: --config nope: no such file or recipe; the "
                                    "recipes are default, ")
    assert result.stderr.count("\n") == 1 and not (tmp_path / "run").exists()


PLACEHOLDER = "wheel_check"

# What the wheel is built from (a copy, so no build/ folder of the checkout's leaks in).
BUILD_INPUTS = ["setup.py", "setup.cfg", "pyproject.toml", "README.md", "tfseg", "configs"]

# Runs in the unpacked wheel: every packaged recipe, loaded with the wheel's own tfseg.
CHECK_INSTALLED = """
import json, tfseg
from tfseg.config import load_config
from tfseg.config.recipes import recipe_path, recipes
from tfseg.runs.presets import presets
for name in recipes():
    load_config(recipe_path(name))
print(json.dumps({"tfseg": tfseg.__file__, "default": str(recipe_path("default")),
                  "recipes": sorted(recipes()),
                  "presets": {name: str(preset.folder) for name, preset in presets().items()}}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """(names in the wheel, the folder it is unpacked in): the wheel built offline from a copy
    of the checkout's build inputs."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    # A placeholder preset in the copy (never in the checkout): the wheel must carry every
    # file of every folder of tfseg/pretrained/ as package data.
    placeholder = source / "tfseg" / "pretrained" / PLACEHOLDER
    placeholder.mkdir(parents=True)
    for name in FILES:
        (placeholder / name).write_text(json.dumps({"description": "wheel check"}))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-w", tmp_path / "dist", source],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("tfseg-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    return names, tmp_path / "site"


def test_wheel_holds_every_preset_file(wheel, tmp_path):
    names, site = wheel
    shipped = {path.relative_to(REPO).as_posix()
               for path in (REPO / "tfseg" / "pretrained").glob("*/*")}
    shipped |= {f"tfseg/pretrained/{PLACEHOLDER}/{name}" for name in FILES}
    assert shipped <= names, f"preset files missing from the wheel: {shipped - names}"
    # test_wheel_holds_every_recipe_and_each_loads finds it with the installed tfseg.


def run_installed(args, cwd, site, **env):
    """Runs `python args...` in `cwd` (not the checkout) with only the unpacked wheel
    providing tfseg."""
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(site), **env})


def test_wheel_holds_every_recipe_and_each_loads(wheel, tmp_path):
    names, site = wheel
    assert {f"tfseg/recipes/{name}.yaml" for name in RECIPES} <= names
    packages = {path.relative_to(REPO).as_posix()
                for path in (REPO / "tfseg").rglob("__init__.py")}
    assert packages <= names, f"packages missing from the wheel: {packages - names}"

    run = run_installed(["-c", CHECK_INSTALLED], tmp_path, site, TFSEG_PRESETS="")
    assert run.returncode == 0, run.stderr[-2000:]
    installed = json.loads(run.stdout.splitlines()[-1])
    assert Path(installed["tfseg"]).is_relative_to(site)
    assert installed["recipes"] == RECIPES
    assert Path(installed["presets"][PLACEHOLDER]).is_relative_to(site)
    assert Path(installed["default"]).read_bytes() == (
        REPO / "configs" / "default.yaml").read_bytes()


@pytest.mark.slow
def test_bench_pipeline_runs_from_the_wheel_and_writes_nothing_where_it_runs(wheel, tmp_path):
    """The interferogram pipeline of `python -m tfseg.bench` ran tools/make_interferograms.py
    from the checkout and wrote its frames under the checkout's runs/: installed, in a folder
    that is not the checkout, it writes them in a temporary folder it removes."""
    _, site = wheel
    (tmp_path / "here").mkdir()
    (tmp_path / "tmp").mkdir()
    run = run_installed(["-m", "tfseg.bench", "--models", "--pipelines", "interferograms",
                         "--frames", "1", "--json", "bench.json"], tmp_path / "here", site,
                        TMPDIR=str(tmp_path / "tmp"))
    assert run.returncode == 0, run.stderr[-2000:]
    [pipeline] = json.loads((tmp_path / "here" / "bench.json").read_text())["pipelines"]
    assert pipeline["status"] == "ok" and pipeline["images"] == 1, pipeline
    assert [path.name for path in (tmp_path / "here").iterdir()] == ["bench.json"]
    assert not list((tmp_path / "tmp").glob("tfseg-*"))
