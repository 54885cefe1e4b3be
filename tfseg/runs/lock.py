"""One writer per run folder: `RUN/lock` names the training process (pid, host) that writes it.

The writer holds an exclusive `flock` on the lock file. The kernel releases it when the
process ends, however it ends (SIGKILL and crashes included), and grants it to one process at
a time: of several processes that find a dead writer's lock at once, exactly one takes it
over, with no window between judging the lock stale and replacing it (which a pid check
followed by delete-and-recreate has). The pid and host inside only name the holder in
messages. A lock file whose holder may still run without holding the flock (a live pid on this
host, as an older tfseg wrote; any other host's, whose flock may not reach here; or one that
cannot be read) is refused, naming the file to delete once that process is known to be gone.
"""

import fcntl
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
        self.descriptor = None

    def __enter__(self):
        refuse_file(self.run_dir)
        self.created_dir = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        while self.descriptor is None:
            self.descriptor = self._acquire()
        try:
            self._check_previous_holder()
        except BaseException:
            os.close(self.descriptor)
            self.descriptor = None
            raise
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(self.descriptor, 0)
        os.pwrite(self.descriptor, (json.dumps(record) + "\n").encode(), 0)
        return self

    def __exit__(self, *exc_info):
        # Unlinked while still held: a process waiting on this file then sees that it is
        # no longer the lock (`_acquire`) and opens the new one.
        self.path.unlink(missing_ok=True)
        os.close(self.descriptor)
        self.descriptor = None
        if self.created_dir and not any(self.run_dir.iterdir()):
            self.run_dir.rmdir()
        return False

    def _acquire(self):
        """The lock file's descriptor, flocked by this process; None if the file was replaced
        meanwhile (try again). TfsegError if a live process holds it."""
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            try:
                holder = self._holder()
            except TfsegError:            # being rewritten by the process that holds it
                holder = None
            raise TfsegError(self._busy(holder)) from None
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = None
        if current != os.fstat(descriptor).st_ino:   # released and removed before our flock
            os.close(descriptor)
            return None
        return descriptor

    def _holder(self):
        """The previous holder's record (None for an empty file, written by no one yet)."""
        try:
            text = self.path.read_text()
            if not text:
                return None
            holder = json.loads(text)
            return {"pid": int(holder["pid"]), "host": str(holder["host"]),
                    "started": holder["started"]}
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, OSError):
            raise TfsegError(f"{self.path}: unreadable lock file (expected the pid and host of "
                             f"the process training this run); delete it if no process "
                             f"trains {self.run_dir}") from None

    def _check_previous_holder(self):
        """With the flock held: notes a dead holder's lock taken over; TfsegError if the
        holder may still be running."""
        holder = self._holder()
        if holder is None:
            return
        if holder["host"] != socket.gethostname() or process_alive(holder["pid"]):
            raise TfsegError(self._busy(holder))
        print(f"tfseg: {self.path}: taking over the stale lock of pid {holder['pid']} (since "
              f"{holder['started']}), which is no longer running")

    def _busy(self, holder):
        """Why this process cannot have the lock of `holder` (None: not yet known)."""
        if holder is None or (holder["host"] == socket.gethostname()
                              and not process_alive(holder["pid"])):
            # The flock is held, by a process that has not written its record yet (maybe
            # taking over that dead holder's lock).
            return (f"{self.run_dir}: another process is training this run; wait for it to "
                    f"end or choose another --run-dir")
        if holder["host"] != socket.gethostname():
            return (f"{self.run_dir}: locked by pid {holder['pid']} on host {holder['host']} "
                    f"(since {holder['started']}); if that process is gone, delete "
                    f"{self.path}")
        return (f"{self.run_dir}: another process (pid {holder['pid']}, since "
                f"{holder['started']}) is training this run; wait for it to end or choose "
                f"another --run-dir")
