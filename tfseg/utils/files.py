"""Atomic file output: a file is either complete or absent, never half-written."""

import json
import math
import os
from pathlib import Path


def write_text_atomic(path, text):
    """Writes `text` to `path` atomically (`write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path, data):
    """Writes `data` to `path` through a hidden temporary file beside it, then renames.

    The temporary name starts with a dot, so folder readers skip it; an interrupted write
    leaves the previous `path` (or none) in place.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_json(data, path):
    """Writes JSON atomically (temporary name, then rename); NaN becomes null (valid JSON)."""
    write_text_atomic(path, json.dumps(_finite_or_none(data), indent=2, allow_nan=False) + "\n")


def _finite_or_none(value):
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
