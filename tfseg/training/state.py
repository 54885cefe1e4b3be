"""The training loop's progress as one typed object: what a checkpoint stores beside the
weights (`state-<step>.json`), so a resumed run continues mid-epoch as if it had never stopped,
and what tests drive without running a model."""

import dataclasses
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Best:
    """The best validation score so far, and where it was reached."""

    metric: str
    epoch: int
    step: int
    value: float


@dataclass
class LoopState:
    """Where the loop is: the step, the current epoch's running sums over its finite steps,
    the per-epoch history, the best score, the steps skipped for a NaN or Inf loss, and the
    seconds spent training so far over every resumed part (None: a state written before
    they were kept).

    `to_json` / `from_json` give the `state-<step>.json` of every run since resume existed
    (keys step, loss_sum, statistics, history, best, skipped_batches; train_seconds in
    newer ones), so older runs resume.
    """

    statistics: np.ndarray            # the task's sums (`task.zero_statistics()` at start)
    step: int = 0
    loss_sum: float = 0.0
    history: list = field(default_factory=list)    # one dict per epoch
    best: Best | None = None
    skipped_batches: list = field(default_factory=list)
    train_seconds: float | None = 0.0

    def add_step(self, loss, statistics, finite):
        """Counts one training step: its loss and statistics if `finite`, else its number as
        skipped (its update was not applied)."""
        self.step += 1
        if finite:
            self.loss_sum += float(loss)
            self.statistics = self.statistics + np.asarray(statistics)
        else:
            self.skipped_batches.append(self.step)

    def mean_loss(self, first_step):
        """Mean loss of the finite steps since `first_step` (the epoch's first step - 1)."""
        skipped = sum(1 for step in self.skipped_batches if step > first_step)
        return self.loss_sum / max(self.step - first_step - skipped, 1)

    def end_epoch(self, row, metric, value):
        """Closes an epoch: appends its history `row`, resets the running sums, and keeps
        `value` of `metric` as the best if it beats the best so far; returns whether it did."""
        self.history.append(row)
        self.loss_sum = 0.0
        self.statistics = np.zeros_like(self.statistics)
        improved = self.best is None or value > self.best.value
        if improved:
            self.best = Best(metric=metric, epoch=row["epoch"], step=self.step, value=value)
        return improved

    def to_json(self):
        """A JSON-able dict (the `state-<step>.json` format)."""
        data = {"step": self.step, "loss_sum": self.loss_sum,
                "statistics": self.statistics.tolist(), "history": self.history,
                "best": dataclasses.asdict(self.best) if self.best else None,
                "skipped_batches": self.skipped_batches}
        if self.train_seconds is not None:   # an older state writes back as it was read
            data["train_seconds"] = self.train_seconds
        return data

    @classmethod
    def from_json(cls, data):
        """The state `to_json` wrote."""
        return cls(step=data["step"], loss_sum=data["loss_sum"],
                   statistics=np.asarray(data["statistics"]), history=list(data["history"]),
                   best=Best(**data["best"]) if data["best"] else None,
                   skipped_batches=list(data["skipped_batches"]),
                   train_seconds=data.get("train_seconds"))
