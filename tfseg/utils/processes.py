"""A tfseg module run as a child process, for work that must not share this process (a
converter's memory, a fresh import of a saved model)."""

import ctypes
import os
import signal
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
                                env=environment, preexec_fn=die_with_parent(os.getpid()))
    except subprocess.TimeoutExpired:
        raise TfsegError(f"{what} took longer than {timeout} s") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise TfsegError(f"{what} failed: {last}")
    return result.stdout


PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid):
    """A `preexec_fn` that has the child killed (SIGKILL) when this process dies, however it
    dies (on Linux; elsewhere None): a killed export leaves no converter running."""
    if not sys.platform.startswith("linux"):
        return None

    def preexec():
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:   # the parent died before the request took effect
            os._exit(1)

    return preexec


def process_alive(pid):
    """Whether a process `pid` runs on this host (another user's included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True                      # another user's process
    return True
