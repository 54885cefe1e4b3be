"""`train.strategy: multi_worker`: two worker processes on localhost, configured by TF_CONFIG
as on a real cluster, train together and end with identical weights."""

import copy
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import yaml
from conftest import REPO, TINY_CONFIG

pytestmark = pytest.mark.slow


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def model_weights(run_dir):
    """{name: value} of the model variables in the run's latest checkpoint."""
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith("model/") and "OPTIMIZER_SLOT" not in name}


def test_two_workers_train_together_and_end_with_identical_weights(tmp_path):
    config = copy.deepcopy(TINY_CONFIG)
    config["train"].update(strategy="multi_worker", epochs=1, steps_per_epoch=3)
    config["export"] = {"saved_model": False, "onnx": False}
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    workers = []
    for index in range(2):
        environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                       "TF_CONFIG": json.dumps({"cluster": cluster,
                                                "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "tfseg.train", "--config", str(config_path), "--run-dir",
             str(tmp_path / f"worker{index}")], cwd=REPO, env=environment,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
    assert "2 replica(s)" in outputs[0][0]
    # Worker 0 is the chief: it alone writes the metrics and the TensorBoard logs.
    assert (tmp_path / "worker0" / "metrics.json").exists()
    assert not (tmp_path / "worker1" / "metrics.json").exists()
    assert json.loads((tmp_path / "worker0" / "metrics.json").read_text())["steps"] == 3
    chief, other = (model_weights(tmp_path / f"worker{index}") for index in range(2))
    assert chief.keys() == other.keys() and len(chief) > 10
    for name, value in chief.items():
        np.testing.assert_array_equal(other[name], value, err_msg=name)
