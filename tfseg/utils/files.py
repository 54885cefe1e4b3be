"""Atomic file output: a file (or a folder, `replacing_folder`) is either complete or absent,
never half-written; output folders checked before the work that fills them."""

import contextlib
import json
import math
import os
import re
import shutil
from pathlib import Path

from tfseg.utils.errors import TfsegError
from tfseg.utils.processes import process_alive


def check_regular_file(path, expected):
    """TfsegError if `path` exists but is no regular file: a FIFO or device would block its
    reader or never end, so it is never opened. `expected` names what should be there."""
    if os.path.exists(path) and not os.path.isfile(path):
        raise TfsegError(f"{path}: not a regular file (a FIFO, device, socket or folder); "
                         f"expected {expected}")


def write_text_atomic(path, text):
    """Writes `text` to `path` atomically (`write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path, data):
    """Writes `data` to `path` through a hidden temporary file beside it, then renames.

    The temporary name starts with a dot, so folder readers skip it; an interrupted write
    leaves the previous `path` (or none) in place.

    Raises:
        TfsegError: the file cannot be written (a read-only or full disk, no such folder).
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise TfsegError(f"{path}: cannot write ({error.strerror or error})") from None
    finally:
        temporary.unlink(missing_ok=True)


def write_failure(error):
    """Why a write failed, in a few words: an OSError's strerror, or the end of a TensorFlow
    file-system error ("<file>; No space left on device [Op:SaveV2]")."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return re.sub(r"\s*\[Op:\w+\]$", "", text).rsplit("; ", 1)[-1]


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


def check_writable_folder(folder, what="output folder"):
    """Raises TfsegError unless `folder` is, or can be created as, a folder this process may
    write in, so a long job is refused before it starts rather than after it ends. Nothing
    is created."""
    folder = Path(folder).absolute()
    existing = existing_ancestor(folder)
    if not existing.is_dir():
        raise TfsegError(f"{folder}: cannot write the {what} there ({existing} is not a "
                         f"folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TfsegError(f"{folder}: cannot write the {what} there ({existing} is not "
                         f"writable)")


def existing_ancestor(path):
    """`path` (absolute) if it exists, else its nearest parent that does."""
    existing = Path(path).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


@contextlib.contextmanager
def replacing_folder(folder):
    """Yields an empty temporary folder beside `folder` to build its new contents in, and
    swaps it in for `folder` when the block ends without an error; after an error, or a
    SIGKILL, `folder` is left as it was.

    Temporaries of processes that died (`.<name>.partial-<pid>`, `.<name>.old-<pid>`) are
    cleaned up first; a swap killed half-way gets its previous folder back.
    """
    folder = Path(folder)
    clean_stale_temporaries(folder)
    build = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    for path in (build, old):
        shutil.rmtree(path, ignore_errors=True)
    build.mkdir(parents=True)
    try:
        yield build
        if folder.exists():
            os.replace(folder, old)
        try:
            os.replace(build, folder)
        except OSError:
            if old.exists():
                os.replace(old, folder)
            raise
    finally:
        shutil.rmtree(build, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def clean_stale_temporaries(folder):
    """Removes `replacing_folder`'s temporaries of `folder` left by dead processes, first
    putting back a previous folder whose swap was killed half-way."""
    folder = Path(folder)
    prefix = f".{folder.name}."
    stale = []
    for path in folder.parent.glob(f"{prefix}*-*"):
        kind, _, pid = path.name[len(prefix):].rpartition("-")
        if kind in ("partial", "old") and pid.isdigit() and not process_alive(int(pid)):
            stale.append((kind, path))
    for kind, path in sorted(stale, key=lambda item: item[0] == "partial"):
        if kind == "old" and not folder.exists():
            os.replace(path, folder)
        else:
            shutil.rmtree(path, ignore_errors=True)
