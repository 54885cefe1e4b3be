"""A run's checkpoints: the TensorFlow objects (model, optimizer, random-generator states) and
the loop's position beside them, so a stopped run continues where it was.

Each save writes `state-<step>.json` (step, epoch, the epoch's running sums, metric history,
best score) atomically first, then the TensorFlow checkpoint `ckpt-<step>`, whose index file
TensorFlow renames into place last. A checkpoint is complete when both exist; a crash between
the two leaves the previous checkpoint as the latest.
"""

import json
from pathlib import Path

import tensorflow as tf

from tfseg.utils.errors import TfsegError
from tfseg.utils.files import write_text_atomic


class RunCheckpoints:
    """Latest checkpoints of a run (`directory`), plus the best one by a validation score in
    `directory/best` (model weights and state).

    Args:
        directory: Path. The run's `checkpoints` folder.
        trackables: dict name -> trackable (model, optimizer, variables).
        max_to_keep: int. Latest checkpoints kept.
    """

    def __init__(self, directory, trackables, *, max_to_keep):
        self.directory = Path(directory)
        self.checkpoint = tf.train.Checkpoint(**trackables)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.directory),
                                                  max_to_keep=max_to_keep)
        self.best = tf.train.CheckpointManager(tf.train.Checkpoint(model=trackables["model"]),
                                               str(self.directory / "best"), max_to_keep=1)

    def save(self, step, state):
        """Saves checkpoint `step` with the loop `state` (a JSON-able dict)."""
        self._write_state(self.directory, step, state)
        self.manager.save(checkpoint_number=step)
        self._prune_states(self.directory, self.manager.checkpoints)

    def save_best(self, step, state):
        """Keeps the model of step `step` as the best so far."""
        self._write_state(self.directory / "best", step, state)
        self.best.save(checkpoint_number=step)
        self._prune_states(self.directory / "best", self.best.checkpoints)

    def restore_latest(self):
        """Restores the latest complete checkpoint; returns its state, or None if there is none.

        Raises:
            TfsegError: the checkpoint does not fit the model and optimizer of the config.
        """
        for path in reversed(self.manager.checkpoints):
            state_path = self.directory / f"state-{_number(path)}.json"
            if not state_path.exists():
                continue
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
            except (AssertionError, ValueError, tf.errors.OpError) as error:
                raise TfsegError(f"{path}: does not fit the model of the run's config.yaml "
                                 f"({str(error).splitlines()[0][:200]})") from None
            return json.loads(state_path.read_text())
        return None

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


def _number(checkpoint_path):
    return str(checkpoint_path).rsplit("-", 1)[-1]
