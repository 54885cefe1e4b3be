"""What a training run checks before it writes its folder (and before TensorFlow loads), so a
mistake costs no half-written run: the `data.cache` path, the memory the frame size needs
(`check_size_memory` bounds the sizes of exports and their metadata alike), and that a
`train.init_from` preset exists.
"""

import os
import shutil
from pathlib import Path

from tfseg.runs.presets import find_preset, is_preset
from tfseg.utils.errors import ConfigError, TfsegError
from tfseg.utils.files import existing_ancestor

# float32 values a training step keeps per input pixel and sample: the input, the feature
# maps held for the backward pass (LinkNet and ICNet at width 1 keep about this many), the
# logits and their gradients. An estimate from below: a frame size refused by it cannot train.
VALUES_PER_PIXEL = 64


def check_before_writing(config):
    """ConfigError naming the key if `config` cannot run on this machine (TfsegError for a
    `train.init_from` preset that does not exist)."""
    check_cache_path(config.data.cache)
    check_frame_memory(config, available_memory())
    if is_preset(config.train.init_from):
        find_preset(config.train.init_from)


def check_cache_path(cache):
    """`data.cache` as a path prefix must name a file in an existing, writable folder."""
    if cache in ("memory", "none"):
        return
    folder = Path(cache).parent
    if not folder.is_dir():
        raise ConfigError(f"data.cache={cache}: folder {folder} does not exist (expected "
                          f"'memory', 'none' or a path prefix in a writable folder)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"data.cache={cache}: folder {folder} is not writable (expected "
                          f"'memory', 'none' or a path prefix in a writable folder)")


def check_frame_memory(config, available):
    """ConfigError if a batch of data.height x data.width frames needs more than `available`
    bytes (None: unknown, not checked) by the `VALUES_PER_PIXEL` estimate."""
    data, batch = config.data, config.train.batch_size
    needed = batch * data.height * data.width * VALUES_PER_PIXEL * 4
    if available is not None and needed > available:
        raise ConfigError(f"data.height x data.width {data.height}x{data.width} at "
                          f"train.batch_size {batch}: training needs about "
                          f"{needed / 2**30:.1f} GB, {available / 2**30:.1f} GB of memory is "
                          f"available; lower data.height, data.width or train.batch_size")


def check_size_memory(what, size):
    """TfsegError naming `what` if a network on one frame of `size` (H, W) needs more memory
    than is available, by the `VALUES_PER_PIXEL` estimate: an oversize value is refused before
    anything is allocated for it."""
    needed, available = int(size[0]) * int(size[1]) * VALUES_PER_PIXEL * 4, available_memory()
    if available is not None and needed > available:
        raise TfsegError(f"{what} {size[0]}x{size[1]}: a network at this size needs about "
                         f"{needed / 2**30:.1f} GB, {available / 2**30:.1f} GB of memory is "
                         f"available")


def check_free_disk(run_dir, config, *, checkpoint_bytes, model_bytes):
    """TfsegError naming `run_dir` unless its disk has room for what the run will write there:
    `train.checkpoints_to_keep` checkpoints of `checkpoint_bytes` (model, optimizer and
    random states) and one more, written before the oldest goes; the best model, twice for
    the same reason; and each export format of `model_bytes` (the ONNX conversion's copy of
    the model too). A resumed run's checkpoints already hold part of that room."""
    keep, export = config.train.checkpoints_to_keep, config.export
    needed = (checkpoint_bytes * (keep + 1) + model_bytes * 2
              + model_bytes * (export.saved_model + 2 * export.onnx))
    checkpoints = Path(run_dir) / "checkpoints"
    needed -= sum(path.stat().st_size for path in checkpoints.rglob("*") if path.is_file())
    # 10 % and 4 MB more: TensorBoard logs, metrics.json, the graphs of the exports.
    needed = int(max(needed, checkpoint_bytes) * 1.1) + 4 * 2**20
    free = shutil.disk_usage(existing_ancestor(run_dir)).free
    if free < needed:
        raise TfsegError(f"{run_dir}: the run needs about {needed / 2**20:.1f} MB of disk "
                         f"({needed} bytes: {keep + 1} checkpoints of "
                         f"{checkpoint_bytes / 2**20:.1f} MB, the best model and the "
                         f"exports), {free / 2**20:.1f} MB ({free} bytes) is free there; free "
                         f"space or choose another --run-dir")


def available_memory():
    """Bytes of memory available to a new allocation (Linux MemAvailable), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
