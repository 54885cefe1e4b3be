"""Packages for setuptools; the rest of the metadata is in setup.cfg.

The recipes in configs/ ship as the package `tfseg.recipes` (one copy: users read them in
configs/, `tfseg.config.recipes` through importlib.resources), a mapping setup.cfg's `find:`
cannot add. The presets (tfseg/pretrained/NAME/: config, weights, model card, registry
entry) are package data of `tfseg`, declared here beside the recipes' so that one
`package_data` holds both.
"""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["tfseg", "tfseg.*"]) + ["tfseg.recipes"],
      package_dir={"tfseg.recipes": "configs"},
      package_data={"tfseg.recipes": ["*.yaml"], "tfseg": ["pretrained/*/*"]})
