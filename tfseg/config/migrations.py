"""Config keys of earlier tfseg versions, rewritten into their current form.

A run folder keeps the fully resolved `config.yaml` of the tfseg that made it, so a key
removed or renamed since would strand the run. `load_config` applies `migrate` to the raw
YAML mapping before validating it: every such key whose meaning maps exactly is rewritten
here, with one warning line; a file holding both an old key and its new form is refused.
"""

import dataclasses
import logging

from tfseg.config.schema import DataConfig
from tfseg.config.synthetic import SyntheticSpec
from tfseg.utils.errors import ConfigError

log = logging.getLogger(__name__)


def _generator_note(raw):
    """What a pre-randomisation `data.synthetic` section no longer pins, when it is used."""
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    if data.get("source", DataConfig.source) != "synthetic":
        return ""
    given = data.get("synthetic") if isinstance(data.get("synthetic"), dict) else {}
    missing = [f.name for f in dataclasses.fields(SyntheticSpec) if f.name not in given]
    return (f"; the generator factors this config lacks ({', '.join(missing)}) now take their "
            f"randomised defaults, so a resumed synthetic run trains on other frames")


# Old dotted key -> (its new keys and values from the old value, a note on what else changed).
MIGRATIONS = {
    # 3bf42b1: the flips moved into the data.augment section, with the same choices.
    "data.flip": (lambda flip: {"data.augment.flip": flip}, None),
    # 9764ae8: `noise: x` was read noise of std x plus shot noise of std x at full scale.
    "data.synthetic.noise": (lambda noise: {"data.synthetic.read_noise": noise,
                                            "data.synthetic.shot_noise": noise},
                             _generator_note),
}


def migrate(raw, source):
    """Rewrites the old keys of the raw config mapping `raw` (from the file `source`) in place.

    Raises:
        ConfigError: the file holds an old key and its new form both.
    """
    if not isinstance(raw, dict):
        return   # `from_dict` names the mistake
    for old, (rewrite, note) in MIGRATIONS.items():
        *sections, name = old.split(".")
        parent = _section(raw, sections)
        if parent is None or name not in parent:
            continue
        new_values = rewrite(parent.pop(name))
        for new, value in new_values.items():
            *new_sections, new_name = new.split(".")
            target = _section(raw, new_sections, create=True)
            if target is None:
                continue   # a section that is no mapping: `from_dict` names it
            if new_name in target:
                raise ConfigError(f"{source}: holds both the old key '{old}' and its new form "
                                  f"'{new}'; keep only '{new}'")
            target[new_name] = value
        log.warning("%s: old key '%s' read as %s%s", source, old,
                    " and ".join(f"'{new}'" for new in new_values), note(raw) if note else "")


def _section(raw, names, create=False):
    """The nested mapping `raw[names[0]][names[1]]...`; None where one is missing (unless
    `create`) or is no mapping."""
    for name in names:
        if create and name not in raw:
            raw[name] = {}
        raw = raw.get(name)
        if not isinstance(raw, dict):
            return None
    return raw
