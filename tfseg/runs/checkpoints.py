"""A run's checkpoints: the TensorFlow objects (model, optimizer, random-generator states) and
the loop's position beside them, so a stopped run continues where it was.

Each save writes `state-<step>.json` (step, epoch, the epoch's running sums, metric history,
best score) atomically first, then the TensorFlow checkpoint `ckpt-<step>`, whose index file
TensorFlow renames into place last; the `checkpoint` list is replaced atomically too. A
checkpoint counts only if it verifies (`verified_checkpoints`): its index and data files read
back completely and its state file is valid JSON of the same step. Resume takes the newest
that verifies and says why any newer one was skipped; files on disk, not the `checkpoint` list
alone, are the record, so a damaged list loses nothing.
"""

import json
import math
import re
import shutil
from pathlib import Path

import tensorflow as tf

from tfseg.utils.errors import TfsegError
from tfseg.utils.files import write_failure, write_text_atomic

INDEX_NAME = "checkpoint"
# The lines of a `checkpoint` list (a CheckpointState text proto) as TensorFlow writes them.
_INDEX_LINE = re.compile(r'(model_checkpoint_path|all_model_checkpoint_paths): "[^"]+"'
                         r'|(all_model_checkpoint_timestamps|last_preserved_timestamp): \S+')


class RunCheckpoints:
    """Latest checkpoints of a run (`directory`), plus the best one by a validation score in
    `directory/best` (model weights and state).

    A damaged `checkpoint` list is rewritten from the checkpoints that verify before
    TensorFlow reads it.

    Args:
        directory: Path. The run's `checkpoints` folder.
        trackables: dict name -> trackable (model, optimizer, variables).
        max_to_keep: int. Latest checkpoints kept.
    """

    def __init__(self, directory, trackables, *, max_to_keep):
        self.directory = Path(directory)
        self.verified, self.skipped = verified_checkpoints(self.directory)
        if self.verified and (self.skipped or _index_damaged(self.directory)):
            _write_index(self.directory, self.verified)   # none verifies: resume refuses
        self.checkpoint = tf.train.Checkpoint(**trackables)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.directory),
                                                  max_to_keep=max_to_keep)
        self.best = tf.train.CheckpointManager(tf.train.Checkpoint(model=trackables["model"]),
                                               str(self.directory / "best"), max_to_keep=1)

    def save(self, step, state):
        """Saves checkpoint `step` with the loop `state` (a JSON-able dict).

        Raises:
            TfsegError: the disk has no room for it, checked before or refused while writing
                (the earlier checkpoints stay intact).
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        self._check_free_space()
        self._save(self.manager, self.directory, step, state)

    def save_best(self, step, state):
        """Keeps the model of step `step` as the best so far (TfsegError as `save`)."""
        self._save(self.best, self.directory / "best", step, state)

    def _save(self, manager, directory, step, state):
        """State file, then checkpoint: both, or neither and a TfsegError if the disk
        refuses a write (a full or read-only disk), the earlier checkpoints as they were."""
        self._write_state(directory, step, state)
        try:
            manager.save(checkpoint_number=step)
        except tf.errors.OpError as error:
            for path in directory.glob(f"ckpt-{step}[._]*"):   # its files and _temp folder
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            (directory / f"state-{step}.json").unlink(missing_ok=True)
            raise TfsegError(f"{directory}: cannot write checkpoint ckpt-{step} "
                             f"({write_failure(error)}); the earlier checkpoints are intact: "
                             f"free space, then continue with --resume "
                             f"{self.directory.parent}") from None
        self._prune_states(directory, manager.checkpoints)

    def restore_latest(self):
        """Restores the newest checkpoint that verifies and returns its state; None if the run
        has no checkpoint at all. Prints which one, and why newer ones were skipped.

        Raises:
            TfsegError: checkpoints exist but none verifies, or the newest that does does not
                fit the model and optimizer of the config.
        """
        for reason in self.skipped:
            print(f"tfseg: skipped {reason}")
        if not self.verified:
            if self.skipped:
                raise TfsegError(f"{self.directory}: no checkpoint verifies ("
                                 f"{'; '.join(self.skipped)}); nothing to resume from")
            print(f"tfseg: {self.directory}: no checkpoint yet; starting at step 0")
            return None
        path, state = self.verified[-1]
        try:
            self.checkpoint.restore(str(path)).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as error:
            raise TfsegError(f"{path}: does not fit the model of the run's config.yaml "
                             f"({str(error).splitlines()[0][:200]})") from None
        print(f"tfseg: restored {path.name}, the newest checkpoint that verifies")
        return state

    def _check_free_space(self):
        """TfsegError unless the disk holds another checkpoint (the size of the newest one,
        or before the first, of the variables), with a 10 % margin."""
        newest = self.manager.latest_checkpoint
        if newest:
            needed = sum(path.stat().st_size for path in Path(newest).parent.glob(
                Path(newest).name + ".*"))
        else:
            needed = variables_bytes(self.checkpoint.model.variables) * 3
        needed = int(needed * 1.1) + 2**20
        free = shutil.disk_usage(self.directory).free
        if free < needed:
            raise TfsegError(f"{self.directory}: {free / 2**20:.0f} MB free on its disk, a "
                             f"checkpoint needs about {needed / 2**20:.0f} MB; free space, "
                             f"then continue with --resume {self.directory.parent}")

    @staticmethod
    def _write_state(directory, step, state):
        directory.mkdir(parents=True, exist_ok=True)
        write_text_atomic(directory / f"state-{step}.json", json.dumps(state) + "\n")

    @staticmethod
    def _prune_states(directory, kept):
        numbers = {_number(path) for path in kept}
        for path in directory.glob("state-*.json"):
            if path.stem.removeprefix("state-") not in numbers:
                path.unlink(missing_ok=True)


def variables_bytes(variables):
    """Bytes the values of `variables` take in a checkpoint."""
    return sum(math.prod(variable.shape) * tf.as_dtype(variable.dtype).size
               for variable in variables)


def verified_checkpoints(directory, *, with_state=True):
    """The checkpoints of `directory` that verify, oldest first, and why the others do not.

    Every `ckpt-<step>` with any file on disk or listed in the `checkpoint` list is checked:
    its index and data files must read back completely and, if `with_state`, its
    `state-<step>.json` must be JSON with that step.

    Returns:
        (verified, skipped): list of (checkpoint path prefix, state dict or None), and a list
        of one-line reasons naming each bad file.
    """
    directory = Path(directory)
    steps = {int(match.group(1)) for path in directory.glob("ckpt-*")
             if (match := re.fullmatch(r"ckpt-(\d+)\..*", path.name))}
    steps |= set(_listed_steps(directory))
    verified, skipped = [], []
    for step in sorted(steps):
        prefix = directory / f"ckpt-{step}"
        problem = _checkpoint_problem(prefix)
        state = None
        if problem is None and with_state:
            state, problem = _read_state(directory / f"state-{step}.json", step)
        if problem is None:
            verified.append((prefix, state))
        else:
            skipped.append(problem)
    return verified, skipped


def _checkpoint_problem(prefix):
    """None if checkpoint `prefix` reads back completely, else why not (naming the file)."""
    index = prefix.with_name(prefix.name + ".index")
    if not index.is_file():
        return f"{index}: missing (the checkpoint was not completely written)"
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except Exception as error:   # noqa: BLE001 - a truncated file raises IndexError, too
        data = sorted(prefix.parent.glob(prefix.name + ".data-*"))
        named = ", ".join(str(path) for path in data) or f"{prefix}.data-*"
        return (f"{named}: unreadable with {index.name} ({type(error).__name__}: "
                f"{str(error).splitlines()[0][:120] if str(error) else 'truncated'})")
    return None


def _read_state(path, step):
    """(state, None) if `path` holds the loop state of `step`, else (None, why not)."""
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"{path}: missing (the checkpoint was not completely written)"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"{path}: unreadable or truncated JSON ({error})"
    if not isinstance(state, dict) or state.get("step") != step:
        return None, f"{path}: does not hold the state of step {step}"
    return state, None


def _index_lines(directory):
    path = directory / INDEX_NAME
    try:
        return path.read_text().splitlines() if path.exists() else []
    except (OSError, UnicodeDecodeError):
        return None


def _index_damaged(directory):
    lines = _index_lines(directory)
    return lines is None or not all(_INDEX_LINE.fullmatch(line) for line in lines)


def _listed_steps(directory):
    """Steps the `checkpoint` list names (none if it is damaged)."""
    if _index_damaged(directory):
        return []
    return [int(match.group(1)) for line in _index_lines(directory)
            if (match := re.search(r'"(?:.*/)?ckpt-(\d+)"', line))]


def _write_index(directory, verified):
    """Replaces the `checkpoint` list by the checkpoints that verify (atomically)."""
    # With their times, which CheckpointManager needs to delete them beyond max_to_keep.
    times = [prefix.with_name(prefix.name + ".index").stat().st_mtime for prefix, _ in verified]
    write_text_atomic(directory / INDEX_NAME,
                      f'model_checkpoint_path: "{verified[-1][0].name}"\n'
                      + "".join(f'all_model_checkpoint_paths: "{prefix.name}"\n'
                                for prefix, _ in verified)
                      + "".join(f"all_model_checkpoint_timestamps: {time}\n" for time in times)
                      + f"last_preserved_timestamp: {min(times) - 1}\n")


def _number(checkpoint_path):
    return str(checkpoint_path).rsplit("-", 1)[-1]
