"""The recipes packaged with tfseg (configs/*.yaml as the package `tfseg.recipes`), and the
YAML file a `--config NAME|FILE` names."""

import importlib.resources
from pathlib import Path

from tfseg.utils.errors import ConfigError


def recipes():
    """The packaged recipes by name: configs/*.yaml, installed as the package `tfseg.recipes`
    (in a checkout's editable install, configs/ itself), so they are found from any folder."""
    try:
        folder = importlib.resources.files("tfseg.recipes")
    except ModuleNotFoundError:   # an editable install made before the recipes were packaged
        raise ConfigError("the packaged recipes (tfseg.recipes) are missing: reinstall tfseg "
                          "(`pip install -e .` in a checkout)") from None
    return {entry.name.removesuffix(".yaml"): entry for entry in folder.iterdir()
            if entry.name.endswith(".yaml")}


def recipe_path(config):
    """The YAML file `--config` names: a path (anything with a folder or a .yaml/.yml suffix,
    or an existing file) as given, else a packaged recipe's name such as `linknet_camvid`.

    Raises:
        ConfigError: neither a file nor a recipe's name; the message lists the recipes.
    """
    path = Path(config)
    if path.suffix in (".yaml", ".yml") or len(path.parts) != 1 or path.is_file():
        return path
    found = recipes()
    if config not in found:
        raise ConfigError(f"--config {config}: no such file or recipe; the recipes are "
                          f"{', '.join(sorted(found))} (or give a YAML file's path)")
    return found[config]
