"""`python -m tfseg.evaluate --run-dir DIR`: score a trained run on its validation data.

Restores the run's latest checkpoint with the run's own `config.yaml`, runs the validation
frames through it once and writes every segmentation score to `DIR/evaluation.json`: the
confusion-matrix scores (mean IoU, per-class IoU, pixel and mean class accuracy, frequency-
weighted IoU, foreground IoU), iIoU, and the interferogram seed's per-image figure under its
honest name.
"""

import argparse
from pathlib import Path

import numpy as np

from tfseg.config import load_config
from tfseg.errors import TfsegError, run_cli


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m tfseg.evaluate",
                                     description="Score a trained run on its validation data.")
    parser.add_argument("--run-dir", type=Path, required=True, help="a tfseg.train run")
    return parser.parse_args(argv)


def evaluate_run(run_dir):
    """Scores `run_dir`'s latest checkpoint on its validation frames; returns the report."""
    import tensorflow as tf

    from tfseg.data.pipeline import make_datasets
    from tfseg.export import write_json
    from tfseg.metrics import (
        InstanceIoU,
        confusion_matrix,
        scores_from_confusion,
        seed_per_image_foreground_iou,
    )
    from tfseg.training import build_model

    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.exists():
        raise TfsegError(f"{run_dir}: not a tfseg run (no config.yaml)")
    config = load_config(config_path)
    checkpoint_path = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    if checkpoint_path is None:
        raise TfsegError(f"{run_dir / 'checkpoints'}: no checkpoint to evaluate")
    model = build_model(config)
    try:
        tf.train.Checkpoint(model=model).restore(checkpoint_path).expect_partial()
    except (tf.errors.OpError, ValueError, AssertionError) as error:
        raise TfsegError(f"{checkpoint_path}: does not fit the model of {config_path} "
                         f"({str(error).splitlines()[0]})") from None

    class_names = config.data.class_names
    num_classes, ignore = config.model.num_classes, config.data.ignore_label
    instances = InstanceIoU(class_names, ignore_label=ignore)
    matrix, seed_figures, frames = 0, [], 0
    for images, masks in make_datasets(config).validation:
        predictions = np.argmax(model(images, training=False), -1)
        matrix = matrix + confusion_matrix(masks, predictions, num_classes, ignore).numpy()
        instances.update(masks.numpy(), predictions)
        if num_classes == 2:
            seed_figures.extend(seed_per_image_foreground_iou(masks.numpy(), predictions))
        frames += int(images.shape[0])
    report = {"run_dir": str(run_dir), "checkpoint": checkpoint_path, "split": "validation",
              "frames": frames, **scores_from_confusion(matrix, class_names),
              **instances.result()}
    if seed_figures:
        # The seed's "mean IoU": |prediction & truth| / |truth| per image, averaged over
        # images with foreground (a recall; false positives do not lower it).
        report["seed_per_image_foreground_iou"] = float(np.nanmean(seed_figures))
    write_json(report, run_dir / "evaluation.json")
    return report


def main(argv=None):
    args = parse_args(argv)
    report = evaluate_run(args.run_dir)
    keys = ("mean_iou", "mean_iiou", "pixel_accuracy", "mean_class_accuracy",
            "frequency_weighted_iou", "foreground_iou", "seed_per_image_foreground_iou")
    print(f"{report['frames']} validation frames; "
          + ", ".join(f"{key} {report[key]:.4f}" for key in keys if key in report))
    print(f"written to {args.run_dir / 'evaluation.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
