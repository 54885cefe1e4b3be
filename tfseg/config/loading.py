"""YAML files and `--set` overrides to a `Config`, and back.

`load_config` is the only place YAML becomes a `Config`. Unknown keys, wrong types and invalid
choices raise `ConfigError` naming the source (file or `--set` override), the dotted key, what
was expected and, for a misspelled key or choice, the closest valid one. Keys of earlier
tfseg versions are first rewritten into their current form (`tfseg.config.migrations`).
"""

import dataclasses
import difflib
import math
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from tfseg.config.migrations import migrate
from tfseg.config.schema import Config
from tfseg.utils.errors import ConfigError


def load_config(path, overrides=()):
    """Reads a YAML file into a `Config` and applies `section.key=value` overrides.

    Args:
        path: str or Path. The YAML file.
        overrides: iterable of str. `dotted.key=value` strings; values are parsed as YAML.

    Returns:
        A validated `Config`.

    Raises:
        ConfigError: unreadable or malformed file, a key given twice, unknown key, wrong type
            or invalid choice, or an old key given with its new form (`migrations`).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config file ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a YAML text file (byte {error.start} is not "
                          f"UTF-8)") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise ConfigError(_yaml_error(path, text, error)) from None
    except RecursionError:
        raise ConfigError(f"{path}: malformed YAML: nested too deeply") from None
    migrate(raw, source=str(path))   # keys of earlier versions, as old run folders hold them
    config = from_dict(Config, {} if raw is None else raw, source=str(path))
    return apply_overrides(config, overrides)


def apply_overrides(config, overrides):
    """`config` with `section.key=value` overrides applied (YAML values), validated again.

    Raises:
        ConfigError: an override is malformed, names an unknown key or gives a bad value.
    """
    if not overrides:
        return config
    # All overrides first, then one validation: checks that tie keys together (warm-up
    # shorter than the run, say) see the final values whatever the overrides' order.
    raw = to_dict(config)
    for override in overrides:
        _set_override(raw, override)
    return from_dict(Config, raw, source=", ".join(f"--set {o}" for o in overrides))


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last
    silently)."""

    def construct_mapping(self, node, deep=False):
        first_lines = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = (key_node.tag, key_node.value)
                if key in first_lines:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r} (first on line "
                        f"{first_lines[key]})", key_node.start_mark)
                first_lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _yaml_error(path, text, error):
    """`file:line:column: malformed YAML: problem` in one line for a PyYAML error."""
    if isinstance(error, yaml.reader.ReaderError):   # a character YAML does not allow
        line = text.count("\n", 0, error.position) + 1
        column = error.position - text.rfind("\n", 0, error.position)
        return (f"{path}:{line}:{column}: malformed YAML: character #x{error.character:04x} "
                f"is not allowed")
    mark = getattr(error, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{where}: malformed YAML: {problem}"


def _set_override(raw, override):
    """Sets one `dotted.key=value` override in the plain config data `raw`."""
    source = f"--set {override}"
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{source}: expected section.key=value")
    try:
        value = yaml.load(value, Loader=_UniqueKeyLoader)
    except yaml.YAMLError:
        raise ConfigError(f"{source}: value is not valid YAML") from None
    node = raw
    parts = key.strip().split(".")
    for depth, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            dotted = ".".join(parts[:depth + 1])
            raise ConfigError(f"{source}: '{dotted}' is not a section"
                              + _suggest(part, [k for k, v in node.items() if isinstance(v, dict)]))
        node = node[part]
    node[parts[-1]] = value


def to_dict(config):
    """The config as plain YAML-safe data (tuples become lists)."""
    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return plain(dataclasses.asdict(config))


def save_config(config, path):
    """Writes the resolved config as YAML (readable back by `load_config`)."""
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def from_dict(cls, data, *, source, prefix=""):
    """Builds dataclass `cls` from a mapping, checking every key and value recursively."""
    if not isinstance(data, dict):
        what = f"section '{prefix[:-1]}'" if prefix else "the top level"
        raise ConfigError(f"{source}: {what} must be a mapping of keys to values, "
                          f"got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        if key not in hints:
            raise ConfigError(f"{source}: unknown key '{prefix}{key}'"
                              + _suggest(str(key), list(fields), prefix))
        values[key] = _convert(value, hints[key], source=source, key=f"{prefix}{key}")
    try:
        return cls(**values)
    except ValueError as error:
        where = f"section '{prefix[:-1]}'" if prefix else "config"
        raise ConfigError(f"{source}: {where}: {error}") from None


def _convert(value, expected, *, source, key):
    """Checks `value` against the type annotation `expected`; returns it converted."""
    origin = typing.get_origin(expected)
    args = typing.get_args(expected)
    if dataclasses.is_dataclass(expected):
        return from_dict(expected, value, source=source, prefix=f"{key}.")
    if origin is Literal:
        if value not in args or isinstance(value, bool):
            hint = (" (YAML reads bare off/on/no/yes as false/true: quote the word)"
                    if isinstance(value, bool) else "")
            raise ConfigError(f"{source}: {key}={_REPR.repr(value)} is not one of {list(args)}"
                              + hint
                              + _suggest(str(value), [str(a) for a in args], quoted=True))
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, source=source, key=key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key}: expected a list, got {_describe(value)}")
        if origin is tuple and Ellipsis not in args:
            if len(value) != len(args):
                raise ConfigError(f"{source}: {key}: expected a list of {len(args)} values, "
                                  f"got {len(value)}")
            return tuple(_convert(v, a, source=source, key=f"{key}[{i}]")
                         for i, (v, a) in enumerate(zip(value, args)))
        items = [_convert(v, args[0], source=source, key=f"{key}[{i}]")
                 for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key}: expected a mapping, got {_describe(value)}")
        return dict(value)
    if expected is float and not isinstance(value, bool):
        number = value
        if isinstance(value, str):
            # YAML 1.1 reads exponents without a dot (`1e-4`) as strings: accept them.
            try:
                number = float(value)
            except ValueError:
                pass
        if isinstance(number, (int, float)):
            if not math.isfinite(number):
                raise ConfigError(f"{source}: {key}: expected a finite number, got {value!r}")
            return float(number)
    if expected is Any or (isinstance(value, expected)
                           and not (expected is int and isinstance(value, bool))):
        return value
    raise ConfigError(f"{source}: {key}: expected {_TYPE_NAMES.get(expected, expected)}, "
                      f"got {_describe(value)}")


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _describe(value):
    return "nothing" if value is None else f"{_REPR.repr(value)} ({type(value).__name__})"


_REPR = reprlib.Repr()   # values in messages, shortened to about a line
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 2


def _suggest(word, candidates, prefix="", quoted=False):
    """`; did you mean 'x'?` for the closest candidate, else the list of valid ones."""
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.5)
    if close:
        return f"; did you mean '{prefix}{close[0]}'?"
    if quoted:
        return ""
    return f"; valid keys: {', '.join(prefix + c for c in candidates)}"
