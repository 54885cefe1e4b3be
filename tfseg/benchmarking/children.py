"""The parent-child protocol: every measurement runs in a fresh interpreter, which reads its
job spec as JSON on stdin and prints its result on a line of its own."""

import json
import os
import signal
import subprocess
import sys

from tfseg.benchmarking.machine import measure_machine
from tfseg.benchmarking.pipelines import run_pipeline
from tfseg.benchmarking.rows import measure_row, prepare_case
from tfseg.benchmarking.training import measure_train_row

RESULT_PREFIX = "TFSEG_BENCH_RESULT "


def run_child(spec, *, timeout):
    """Runs one job of `spec` in a fresh interpreter.

    Returns:
        The job's result dict with "status": "ok", or "status": "failed" and a one-line
        "reason" (the child's last error line, its signal or the timeout).
    """
    process = subprocess.Popen(
        [sys.executable, "-c",
         "from tfseg.benchmarking.children import child; child()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        stdout, stderr = process.communicate(json.dumps(spec), timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"no result within {timeout} s"}
    finally:
        if process.poll() is None:  # timed out or interrupted: stop its whole process
            os.killpg(process.pid, signal.SIGKILL)  # group (the ONNX converter, OpenCV's
            process.communicate()                   # worker), started as a new session
    results = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if process.returncode == 0 and results:
        return {"status": "ok", **json.loads(results[-1][len(RESULT_PREFIX):])}
    if process.returncode < 0:
        return {"status": "failed", "reason": crash_reason(-process.returncode, stderr)}
    last = (stderr.strip().splitlines() or ["(no message)"])[-1]
    return {"status": "failed", "reason": f"exit status {process.returncode}: {last[:300]}"}


def crash_reason(signal_number, stderr):
    """Why a child died of `signal_number`: running out of memory says so, because
    TensorFlow's CPU allocator reports it and then segfaults, and the kernel's OOM killer
    sends SIGKILL with no message at all."""
    if "RESOURCE_EXHAUSTED: OOM" in stderr:
        shape = stderr.split("OOM when allocating tensor with shape", 1)[-1].split(" ", 1)[0]
        return f"out of memory (TensorFlow could not allocate a tensor of shape {shape}; " \
               f"signal {signal_number})"
    if signal_number == signal.SIGKILL:
        return "killed (signal 9: out of memory, or stopped from outside)"
    return f"crashed (signal {signal_number})"


def child():
    """Entry point of a child process: reads a job spec on stdin, prints its result."""
    spec = json.loads(sys.stdin.read())
    jobs = {"machine": measure_machine, "prepare": prepare_case, "row": measure_row,
            "pipeline": run_pipeline, "train": measure_train_row}
    result = jobs[spec.pop("job")](**spec)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
