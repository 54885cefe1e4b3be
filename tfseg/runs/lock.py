"""One writer per run folder: `RUN/lock` names the training process (pid, host) that writes it.

The lock is created atomically (O_EXCL) and removed when the process leaves its `with` block,
by any exit but SIGKILL or a power cut; such a stale lock is recognised by its pid (no longer
alive on this host) and taken over with a note. A lock from another host cannot be checked
and is refused, naming the file to delete once that process is known to be gone.
"""

import json
import os
import socket
import time
from pathlib import Path

from tfseg.runs.folder import refuse_file
from tfseg.utils.errors import TfsegError
from tfseg.utils.processes import process_alive

LOCK_NAME = "lock"


class RunLock:
    """Context manager holding `run_dir/lock` for this process; creates `run_dir` if needed
    and removes it again on exit if it is still empty (nothing was written)."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.created_dir = False

    def __enter__(self):
        refuse_file(self.run_dir)
        self.created_dir = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        while True:
            try:
                descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(descriptor, "w") as file:
                file.write(json.dumps(record) + "\n")
            return self

    def __exit__(self, *exc_info):
        self.path.unlink(missing_ok=True)
        if self.created_dir and not any(self.run_dir.iterdir()):
            self.run_dir.rmdir()
        return False

    def _take_over_if_stale(self):
        """Removes a lock whose process is gone; TfsegError if it may still be running."""
        try:
            holder = json.loads(self.path.read_text())
            pid, host, started = int(holder["pid"]), str(holder["host"]), holder["started"]
        except FileNotFoundError:
            return                       # released meanwhile: try again
        except (ValueError, KeyError, TypeError, OSError):
            raise TfsegError(f"{self.path}: unreadable lock file (expected the pid and host of "
                             f"the process training this run); delete it if no process "
                             f"trains {self.run_dir}") from None
        if host != socket.gethostname():
            raise TfsegError(f"{self.run_dir}: locked by pid {pid} on host {host} (since "
                             f"{started}); if that process is gone, delete {self.path}")
        if process_alive(pid):
            raise TfsegError(f"{self.run_dir}: another process (pid {pid}, since {started}) is "
                             f"training this run; wait for it to end or choose another "
                             f"--run-dir")
        print(f"tfseg: {self.path}: taking over the stale lock of pid {pid} (since {started}),"
              f" which is no longer running")
        self.path.unlink(missing_ok=True)
