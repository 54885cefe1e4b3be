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
        return {"status": "failed", "reason": f"crashed (signal {-process.returncode})"}
    last = (stderr.strip().splitlines() or ["(no message)"])[-1]
    return {"status": "failed", "reason": f"exit status {process.returncode}: {last[:300]}"}


def child():
    """Entry point of a child process: reads a job spec on stdin, prints its result."""
    spec = json.loads(sys.stdin.read())
    jobs = {"machine": measure_machine, "prepare": prepare_case, "row": measure_row,
            "pipeline": run_pipeline, "train": measure_train_row}
    result = jobs[spec.pop("job")](**spec)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
