"""The training loop behind `python -m tfseg.train`: train, validate, log to TensorBoard,
checkpoint, resume, export and verify the exports.

One custom training loop serves one device, several devices and several hosts alike: the model
and optimizer are built inside a `tf.distribute` strategy scope and the data are fed through
`strategy.experimental_distribute_dataset`, so scaling out changes the config, not this code.
The steps are `tfseg.training.steps`; what differs between segmentation and super-resolution
lives in `tfseg.tasks`.
"""

import contextlib
import dataclasses
import signal
import sys
import time
from pathlib import Path

import keras
import tensorflow as tf

from tfseg.config import save_config
from tfseg.data.interferograms import data_error
from tfseg.data.pipeline import make_datasets
from tfseg.deploy.exports import export_from_config
from tfseg.models.from_config import float32_copy, is_recurrent
from tfseg.runs.checkpoints import RunCheckpoints, variables_bytes
from tfseg.runs.folder import prepare_run_dir, refuse_existing_run
from tfseg.runs.preflight import check_free_disk
from tfseg.runs.presets import init_from_preset, is_preset
from tfseg.runs.restore import init_from_run
from tfseg.tasks.factory import make_task
from tfseg.tasks.losses import class_pixel_counts, linknet_class_weights
from tfseg.training.distribution import is_chief, make_strategy, precision_of
from tfseg.training.steps import build_training, build_validation
from tfseg.training.summary import format_scores, print_summary
from tfseg.training.state import LoopState
from tfseg.training.tensorboard import TensorBoardLog
from tfseg.utils.errors import TfsegError
from tfseg.utils.files import write_json
from tfseg.utils.hardware import cpu_info


class NonFiniteLoss(TfsegError):
    """The loss or its gradients became NaN or Inf (with `train.nan_policy: stop`)."""


class Interrupted(TfsegError):
    """SIGINT or SIGTERM stopped the run after writing a checkpoint."""

    def __init__(self, message, signal_number):
        super().__init__(message)
        self.exit_status = 128 + signal_number


def train(config, run_dir, *, resume=False, profile=False):
    """Runs training, validation, logging, checkpointing and export for `config`.

    Args:
        config: `tfseg.config.Config`. The run's recipe.
        run_dir: str or Path. Output folder; must not hold another run unless `resume`.
        resume: bool. Continue the run in `run_dir` from its latest checkpoint (`config` must
            be the run's own config.yaml).
        profile: bool. Record a trace of a few training steps for TensorBoard's Profile tab.

    Returns:
        dict of final validation metrics (also written to `run_dir/metrics.json`).

    Raises:
        TfsegError: bad configuration or data (a bad frame is named with its problem), a
            non-finite loss, or an interruption by SIGINT/SIGTERM (after a checkpoint).
    """
    try:
        return _train(config, Path(run_dir), resume=resume, profile=profile)
    except tf.errors.OpError as error:
        reported = data_error(error)
        if reported is None:
            raise
        raise reported from None


def _train(config, run_dir, *, resume, profile):
    started = time.perf_counter()
    # First: a multi-worker strategy configures collectives before any other TensorFlow op.
    strategy = make_strategy(config.train.strategy)
    precision = precision_of(config.train)
    print(f"tfseg: precision {precision}")
    if not resume:
        refuse_existing_run(run_dir)
    keras.utils.set_random_seed(config.train.seed)
    chief = is_chief(strategy)
    # The data folders are checked and the model built before anything is written.
    data = make_datasets(config)
    saved = with_computed_class_weights(config, data.train)
    # config.yaml keeps the setting ("auto" stays "auto"), so a run resumed on another
    # machine computes in that machine's precision; metrics.json records each epoch's.
    config = dataclasses.replace(saved, train=dataclasses.replace(
        saved.train, mixed_precision=precision.setting))
    with strategy.scope():
        task = make_task(config)
    model, optimizer, train_step = build_training(config, strategy, task)
    evaluation_model, validate = build_validation(config, strategy, task, model,
                                                  data.validation)
    # Restored before anything is written, so a bad train.init_from leaves no run behind (a
    # resumed run's own checkpoint then replaces these weights).
    initial_weights = initial_weights_of(config, model) if config.train.init_from else None
    check_free_disk(run_dir, config, model_bytes=variables_bytes(model.variables),
                    checkpoint_bytes=variables_bytes(
                        [*model.variables, *optimizer.variables, *random_states(task)]))
    if not resume:
        prepare_run_dir(run_dir)
        save_config(saved, run_dir / "config.yaml")
    # The optimizer without mixed_float16's loss-scale wrapper, whose scale adapts again in a
    # few steps: checkpoints then fit every precision a resumed run may pick.
    checkpoints = RunCheckpoints(run_dir / "checkpoints",
                                 {"model": model,
                                  "optimizer": getattr(optimizer, "inner_optimizer", optimizer),
                                  "random": random_states(task)},
                                 max_to_keep=config.train.checkpoints_to_keep)
    saved_state = checkpoints.restore_latest() if resume else None
    if saved_state is None and initial_weights:
        print(f"tfseg: starting from the weights of {initial_weights}")
    state = (LoopState.from_json(saved_state) if saved_state
             else LoopState(statistics=task.zero_statistics()))
    log = TensorBoardLog(run_dir / "logs") if chief else None
    if resume and state.step:
        print(f"tfseg: resuming {run_dir} at step {state.step}")
    elif chief and getattr(task, "perceptual", None) and task.perceptual.random_weights:
        log.write_text("warnings", "The perceptual loss uses a RANDOM VGG16 "
                       "(train.perceptual.weights: random): its features are not perceptual.")
    # Training time over every part of a resumed run, kept in each checkpoint's state.
    earlier_seconds = state.train_seconds
    if earlier_seconds is None:
        print(f"tfseg: its checkpoint predates the record of training time: metrics.json's "
              f"train_seconds will count from step {state.step} only")

    def timed_state():
        if earlier_seconds is not None:
            state.train_seconds = earlier_seconds + time.perf_counter() - started
        return state.to_json()

    print(f"tfseg: training {model.name} ({model.count_params():,} parameters) on "
          f"{strategy.num_replicas_in_sync} replica(s); run directory {run_dir}")

    steps, total = config.train.steps_per_epoch, config.train.epochs * config.train.steps_per_epoch
    # Frames through the network per step (a recurrent model's clips: warm-up frames too).
    frames_per_step = config.train.batch_size * (config.data.clips.length
                                                 if is_recurrent(config) else 1)
    batches = iter(strategy.experimental_distribute_dataset(data.train.skip(state.step)))
    # The first step traces the graph: the profile starts after it.
    profiler = StepProfiler(run_dir / "logs", first_step=state.step + 1 if profile else None,
                            steps=min(5, total - state.step - 1))
    with stop_requests() as stop:
        while state.step < total:
            epoch = state.step // steps
            epoch_start = epoch * steps
            print(f"Epoch {epoch + 1}/{config.train.epochs}")
            # A live bar on a terminal; one line per epoch in log files.
            progress = keras.utils.Progbar(steps, verbose=1 if sys.stdout.isatty() else 2,
                                           stateful_metrics=["loss", *task.progress_keys])
            epoch_started, epoch_first = time.perf_counter(), state.step
            while True:
                profiler.before(state.step)
                loss, statistics, finite = train_step(batches)
                state.add_step(loss, statistics.numpy(), bool(finite))
                profiler.after(state.step)
                if not bool(finite) and config.train.nan_policy == "stop":
                    raise NonFiniteLoss(_non_finite_message(float(loss), state.step,
                                                            checkpoints))
                done = state.step - epoch_start
                running = task.scores(state.statistics)
                progress.update(done, [("loss", state.mean_loss(epoch_start))] + [
                    (key, running[key]) for key in task.progress_keys if key in running])
                if done == steps:
                    break
                if stop.signal_number:
                    checkpoints.save(state.step, timed_state())
                    raise Interrupted(_interrupted_message(stop.signal_number, state.step,
                                                           run_dir), stop.signal_number)
                if (config.train.checkpoint_every
                        and state.step % config.train.checkpoint_every == 0):
                    checkpoints.save(state.step, timed_state())
            seconds = time.perf_counter() - epoch_started
            validation = validate(samples=config.train.log_images if chief else 0)
            panels = validation.pop("panels", None)
            scores = {"train": {"loss": state.mean_loss(epoch_start),
                                **task.scores(state.statistics)},
                      "validation": validation}
            history_row = {"epoch": epoch + 1, "step": state.step, "precision": precision.policy,
                           "images_per_second": round(
                               (state.step - epoch_first) * frames_per_step / seconds, 2),
                           **{f"{split}_{key}": value for split in ("train", "validation")
                              for key, value in scores[split].items()
                              if isinstance(value, float)}}
            best_metric = task.best_metric   # the config allows only scores of the task
            if state.end_epoch(history_row, best_metric, validation[best_metric]):
                checkpoints.save_best(state.step, timed_state())
            checkpoints.save(state.step, timed_state())
            if chief:
                log.write_epoch(state.step, scores=scores,
                                learning_rate=float(keras.ops.convert_to_numpy(
                                    optimizer.learning_rate)),
                                images_per_second=history_row["images_per_second"],
                                panels=(task.panel_tag, panels))
            print("  validation: " + format_scores(validation))
            if stop.signal_number:
                raise Interrupted(_interrupted_message(stop.signal_number, state.step,
                                                       run_dir), stop.signal_number)

    model = evaluation_model
    if precision.policy != "float32":
        # Export and score the float32 copy that users will deploy.
        with strategy.scope():
            model = float32_copy(model, config)
        _, validate = build_validation(config, strategy, task, model, data.validation)
    validation_scores = validate()
    if not chief:
        return validation_scores
    recorded = timed_state()
    final = {"split": "validation", **validation_scores, "epochs": config.train.epochs,
             "steps": state.step, "best": recorded["best"],
             "precision": {"policy": precision.policy, "reason": precision.reason},
             **({"test_time": config.data.augment.test_time}
                if config.model.task == "segmentation" else {}),
             "machine": cpu_info().describe(),   # for model cards (tools/make_preset.py)
             # Every part of a resumed run; this part's only when it resumed a state
             # written before training time was kept.
             "train_seconds": round(recorded.get("train_seconds",
                                                 time.perf_counter() - started), 1),
             "history": recorded["history"], "skipped_frames": data.skipped,
             "skipped_batches": recorded["skipped_batches"]}
    write_json(final, run_dir / "metrics.json")
    exports = export_run(model, config, run_dir, data.validation)
    final["total_seconds"] = round(time.perf_counter() - started, 1)
    write_json(final, run_dir / "metrics.json")
    print_summary(run_dir, validation_scores, exports, final["total_seconds"])
    if data.skipped:
        print(f"  skipped        {len(data.skipped)} frame(s) unreadable or smaller than a "
              f"training patch, listed in {run_dir / 'metrics.json'}")
    return final


def initial_weights_of(config, model):
    """Loads the weights `train.init_from` names into the training `model`: a run's latest
    checkpoint (`tfseg.runs.restore.init_from_run`), or a preset's weights (`preset:NAME`);
    returns where they came from."""
    if is_preset(config.train.init_from):
        return init_from_preset(config.train.init_from, config, model)
    return init_from_run(config.train.init_from, config, model)


def _non_finite_message(loss, step, checkpoints):
    latest = checkpoints.manager.latest_checkpoint
    kept = f"the last good checkpoint is {latest}" if latest else "no checkpoint was written"
    return (f"the loss or its gradients became NaN or Inf at step {step} (loss {loss}); the "
            f"run stopped and {kept}. Lower "
            f"train.learning_rate, or set train.nan_policy: skip_batch to skip such batches")


def _interrupted_message(signal_number, step, run_dir):
    return (f"{signal.Signals(signal_number).name} at step {step}: checkpoint written; "
            f"continue with python -m tfseg.train --resume {run_dir}")


class _StopRequests:
    signal_number = 0


@contextlib.contextmanager
def stop_requests():
    """Turns SIGINT and SIGTERM into a request the loop answers after the current step (it
    writes a checkpoint, then stops); the previous handlers come back afterwards."""
    requests = _StopRequests()

    def request(signal_number, frame):
        requests.signal_number = signal_number

    previous = {number: signal.signal(number, request)
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requests
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class StepProfiler:
    """Records a TensorBoard profiler trace of `steps` training steps after step
    `first_step` (None or steps < 1: no trace), into the run's logs for the Profile tab."""

    def __init__(self, log_dir, first_step, steps):
        self.log_dir, self.steps = str(log_dir), steps
        self.first_step = first_step if steps >= 1 else None

    def before(self, step):
        if step == self.first_step:
            tf.profiler.experimental.start(self.log_dir)

    def after(self, step):
        if self.first_step is not None and step == self.first_step + self.steps:
            tf.profiler.experimental.stop()
            print(f"  profiler trace of steps {self.first_step + 1}-{step} written to "
                  f"{self.log_dir} (TensorBoard's Profile tab)")


def random_states(task):
    """The augmentation's random-generator states (checkpointed, so a resumed run draws the
    augmentations the uninterrupted run would have drawn)."""
    augment = task.augment
    return list(augment.seed_states()) if hasattr(augment, "seed_states") else []


def with_computed_class_weights(config, train_batches, max_batches=100):
    """`config` with `train.class_weighting` turned into explicit `train.class_weights`,
    computed from the masks of the first epoch's training batches (at most `max_batches`;
    of clips, the trained frames, after the warm-up), so the resolved config records the
    weights the run used."""
    weighting = config.train.class_weighting
    if weighting == "none":
        return config
    batches = train_batches.take(min(config.train.steps_per_epoch, max_batches))
    if is_recurrent(config):
        warmup = config.data.clips.warmup
        batches = batches.map(lambda clips, masks: (clips, masks[:, warmup:]))
    counts = class_pixel_counts(batches, config.model.num_classes)
    weights = linknet_class_weights(counts, log=weighting.removeprefix("linknet_"))
    train = dataclasses.replace(config.train, class_weighting="none",
                                class_weights=[round(float(w), 6) for w in weights])
    return dataclasses.replace(config, train=train)


def export_run(model, config, run_dir, validation):
    """Writes the configured exports under `run_dir/export` and checks every runtime against
    Keras: the code of `python -m tfseg.export`, so both give identical exports."""
    exported = export_from_config(model, config, run_dir / "export", validation)
    # A training run exports one ONNX file, at its training size.
    onnx_paths = exported.pop("onnx")
    if onnx_paths:
        exported["onnx"] = onnx_paths[0]
    return exported
