"""TensorFlow's start-up notices on a machine without a GPU, filtered where they are printed.

The `tensorflow` wheel is built for CUDA. Imported on a CPU-only machine it prints, twice
(two of its libraries log) and whatever TF_CPP_MIN_LOG_LEVEL says (absl writes to stderr
until it is initialised): that oneDNN is on, that no CUDA driver was found, then that cuInit
failed, and the advice to rebuild TensorFlow for this CPU. None of these asks anything of a
user. The command-line tools import TensorFlow lazily, after checking their arguments, from
many modules; `filter_tensorflow_start_up()` hooks that first import wherever it happens,
runs it (and the GPU probe) with file descriptor 2 captured, and writes back every captured
line but these notices. A library user's own `import tensorflow` is left alone.
"""

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile

NOTICES = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|\] oneDNN custom operations are on\."
    r"|\] Could not find cuda drivers on your machine, GPU will not be used\."
    r"|\] This TensorFlow binary is optimized to use available CPU instructions"
    r"|^To enable the following instructions: .* rebuild TensorFlow with the appropriate")
NO_DRIVER = re.compile(r"\] Could not find cuda drivers on your machine")
# cuInit fails as a consequence of the missing driver: dropped only when that was the cause.
NO_DRIVER_CONSEQUENCE = re.compile(r"\] failed call to cuInit: ")


def kept_lines(text):
    """The lines of `text` a user should see: all but TensorFlow's start-up notices (and the
    cuInit failure when no CUDA driver was found, its cause)."""
    lines = text.splitlines(keepends=True)
    no_driver = any(NO_DRIVER.search(line) for line in lines)
    return [line for line in lines if not NOTICES.search(line)
            and not (no_driver and NO_DRIVER_CONSEQUENCE.search(line))]


@contextlib.contextmanager
def stderr_filtered():
    """Captures file descriptor 2 (C libraries' output too) while the body runs, then writes
    the captured `kept_lines` to stderr, also when the body raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            sys.stderr.write("".join(kept_lines(captured.read().decode(errors="replace"))))
            sys.stderr.flush()


class _FilteredLoader(importlib.abc.Loader):
    """The module's own loader, run under `stderr_filtered`, followed by `then(module)`."""

    def __init__(self, loader, then):
        self.loader, self.then = loader, then

    def __getattr__(self, attribute):   # resource readers and the like: the loader's own
        return getattr(self.loader, attribute)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with stderr_filtered():
            self.loader.exec_module(module)
            self.then(module)


class _FirstImportFilter(importlib.abc.MetaPathFinder):
    """Finds `name` once, as Python would, with its loader wrapped in `_FilteredLoader`."""

    def __init__(self, name, then):
        self.name, self.then = name, then

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _FilteredLoader(spec.loader, self.then)
        return spec


def _probe_gpus(tensorflow):
    # Where cuInit runs and fails on a CPU-only machine; the device list stays configurable.
    tensorflow.config.list_physical_devices("GPU")


def filter_first_import(name, then=lambda module: None):
    """Runs the first import of top-level module `name` (and `then(module)`) with stderr
    filtered; nothing if it is already imported."""
    if name not in sys.modules and not any(isinstance(finder, _FirstImportFilter)
                                           and finder.name == name for finder in sys.meta_path):
        sys.meta_path.insert(0, _FirstImportFilter(name, then))


def filter_tensorflow_start_up():
    """Hooks TensorFlow's first import in this process (see the module's docstring)."""
    filter_first_import("tensorflow", then=_probe_gpus)
