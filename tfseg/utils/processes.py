"""A tfseg module run as a child process, for work that must not share this process (a
converter's memory, a fresh import of a saved model)."""

import os
import subprocess
import sys

from tfseg.utils.errors import TfsegError


def run_child(module, *args, what, timeout, environment=None):
    """stdout of `python -m module args...` run in a child process (TensorFlow's notices
    off, `environment` added).

    Raises:
        TfsegError: "<what> failed: <the child's last error line>", or took too long.
    """
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(environment or {})}
    try:
        result = subprocess.run([sys.executable, "-m", module, *map(str, args)],
                                capture_output=True, text=True, timeout=timeout,
                                env=environment)
    except subprocess.TimeoutExpired:
        raise TfsegError(f"{what} took longer than {timeout} s") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise TfsegError(f"{what} failed: {last}")
    return result.stdout
