"""The YAML recipes, installed as the package `tfseg.recipes` (see setup.py), so that
`python -m tfseg.train --config NAME` finds them outside a checkout too."""
