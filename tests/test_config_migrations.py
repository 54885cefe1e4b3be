"""Run folders of earlier tfseg versions: their config.yaml's old keys are rewritten into the
current ones (tfseg.config.migrations), with one warning line; an old key beside its new form
is refused in one line."""

import logging

import pytest

from tfseg.config import load_config
from tfseg.config.migrations import MIGRATIONS
from tfseg.utils.errors import ConfigError

# The data.synthetic section as tfseg wrote it before the generator's factors became ranges
# (9764ae8), with the flips still directly under data (before 3bf42b1).
OLD_SYNTHETIC = {"height": 64, "width": 64, "frames_per_sequence": 4, "max_samples": 2,
                 "fringes": 12.0, "sample_size": [0.06, 0.18], "sample_phase": [1.5, 4.0],
                 "noise": 0.03, "bit_depth": 8, "vibration": 0.15, "dust": 4}


def old_config(source="synthetic", **data):
    return {"data": {"source": source, "path": "frames", "flip": "vertical",
                     "synthetic": dict(OLD_SYNTHETIC), **data}}


def migration_warnings(caplog):
    return [record.getMessage() for record in caplog.records
            if record.name == "tfseg.config.migrations"]


def test_old_keys_load_as_their_new_form(write_yaml):
    config = load_config(write_yaml(old_config()))
    spec = config.data.synthetic
    assert spec.read_noise == (0.03, 0.03) and spec.shot_noise == (0.03, 0.03)
    assert config.data.augment.flip == "vertical"
    assert spec.fringes == (12.0, 12.0) and spec.dust == (4, 4)   # old scalars pin their range


def test_each_migration_warns_once_naming_the_file_and_keys(write_yaml, caplog):
    path = write_yaml(old_config())
    with caplog.at_level(logging.WARNING, logger="tfseg.config.migrations"):
        load_config(path)
    noise, flip = (sorted(m for m in migration_warnings(caplog) if key in m)
                   for key in ("'data.synthetic.noise'", "'data.flip'"))
    assert len(noise) == 1 and len(flip) == 1 and len(migration_warnings(caplog)) == 2
    assert noise[0].startswith(f"{path}: old key 'data.synthetic.noise' read as "
                               f"'data.synthetic.read_noise' and 'data.synthetic.shot_noise'")
    assert flip[0] == f"{path}: old key 'data.flip' read as 'data.augment.flip'"
    # A synthetic run: the factors the old section lacks are named, and their consequence.
    assert "fringe_angle" in noise[0] and "read_noise" not in noise[0].split("lacks")[1]
    assert "randomised defaults" in noise[0] and "other frames" in noise[0]


def test_no_generator_note_when_the_synthetic_section_is_unused(write_yaml, caplog):
    # A CamVid run's config carries a data.synthetic section it never renders.
    path = write_yaml(old_config(source="interferograms"))
    with caplog.at_level(logging.WARNING, logger="tfseg.config.migrations"):
        config = load_config(path)
    (noise,) = [m for m in migration_warnings(caplog) if "'data.synthetic.noise'" in m]
    assert noise == (f"{path}: old key 'data.synthetic.noise' read as "
                     f"'data.synthetic.read_noise' and 'data.synthetic.shot_noise'")
    assert config.data.synthetic.read_noise == (0.03, 0.03)


def test_current_config_loads_without_warnings(write_yaml, caplog):
    with caplog.at_level(logging.WARNING, logger="tfseg.config.migrations"):
        load_config(write_yaml({"data": {"synthetic": {"read_noise": 0.01}}}))
    assert migration_warnings(caplog) == []


@pytest.mark.parametrize("old, new", [
    (key, new) for key, (rewrite, _) in MIGRATIONS.items() for new in rewrite(0.01)])
def test_an_old_key_beside_its_new_form_is_refused_in_one_line(write_yaml, old, new):
    content = old_config()
    section = content
    for name in new.split(".")[:-1]:
        section = section.setdefault(name, {})
    section[new.rsplit(".", 1)[1]] = "horizontal" if new.endswith("flip") else 0.01
    path = write_yaml(content)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message == (f"{path}: holds both the old key '{old}' and its new form '{new}'; "
                       f"keep only '{new}'")
    assert "\n" not in message


def test_an_unknown_key_still_gets_the_closest_valid_one(write_yaml):
    content = old_config()
    content["data"]["synthetic"]["nosie"] = 0.01
    path = write_yaml(content)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    # The closest current key: the old one was rewritten before the keys are checked.
    assert str(caught.value) == (f"{path}: unknown key 'data.synthetic.nosie'; did you mean "
                                 f"'data.synthetic.shot_noise'?")
