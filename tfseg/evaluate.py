"""`python -m tfseg.evaluate`: score a trained run or an exported model on a run's data.

    python -m tfseg.evaluate --run-dir DIR                         # latest checkpoint, Keras
    python -m tfseg.evaluate --run-dir DIR --runtime onnxruntime   # DIR/export/model.onnx
    python -m tfseg.evaluate --model FILE --config FILE [--runtime opencv]
    python -m tfseg.evaluate --run-dir DIR --set data.val_path=FOLDER    # other held-out data

The model runs in any runtime of `tfseg.runtimes` (with `--run-dir`: keras = the latest
checkpoint, savedmodel = `export/saved_model`, onnxruntime and the OpenCV DNN engines
(`tfseg.opencv_dnn`) = `export/model.onnx`) on the validation frames (or one epoch of training batches with
`--split train`) of the run's `config.yaml` or `--config`. A per-class table is printed, and
written with every score to `evaluation.json`, `evaluation.csv` (one row per class) and
`confusion_matrix.png` in the run directory, the `--output` folder, or else the model's folder.

Scores: the confusion-matrix scores (mean IoU, per-class IoU, pixel and mean class accuracy,
frequency-weighted IoU, foreground IoU), iIoU, and the interferogram seed's per-image figure
under its honest name.

Frames whose size differs from a static model's input size (an ONNX file exported at another
`--size`) are resized (bilinear) to the model's size, and the logits resized back (bilinear)
to the frame size, so scores are always counted on the data's own masks; a note says so.

Super-resolution models are scored on whole validation images (Set5 in the recipes): PSNR
and SSIM on Y with the scale's border shaved, per image and on average, next to bicubic
scored by the same code (`evaluation.json`, `evaluation.csv` with one row per image). A
static-size ONNX runs tile by tile (`tfseg.tiling`, a quarter-tile overlap), so its scores
can differ slightly from the whole-image Keras ones; a note says so. `--samples N` writes
LR | bicubic | SR | HR strips of the first N images.
"""

import argparse
import csv
import io
from pathlib import Path

import numpy as np

from tfseg.errors import TfsegError, run_cli
from tfseg.images import write_png
from tfseg.opencv_dnn import RUNTIMES as OPENCV_RUNTIMES

RUN_RUNTIMES = {"savedmodel": Path("export") / "saved_model",
                **{name: Path("export") / "model.onnx"
                   for name in ("onnxruntime", *OPENCV_RUNTIMES)}}
SUMMARY_KEYS = ("mean_iou", "mean_iiou", "pixel_accuracy", "mean_class_accuracy",
                "frequency_weighted_iou", "foreground_iou", "seed_per_image_foreground_iou")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m tfseg.evaluate",
        description="Score a trained run or an exported model on a run's data.")
    parser.add_argument("--run-dir", type=Path, help="a tfseg.train run")
    parser.add_argument("--model", type=Path,
                        help="a SavedModel directory, .onnx or .keras file (instead of the "
                             "run's latest checkpoint)")
    parser.add_argument("--config", type=Path,
                        help="the recipe whose data to score on (default: the run's "
                             "config.yaml)")
    parser.add_argument("--runtime", choices=["keras", *RUN_RUNTIMES],
                        help="default: keras for a run, the file's own for --model")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override a value of the config "
                        "(repeatable), e.g. --set data.val_path=FOLDER to score other data")
    parser.add_argument("--split", choices=["validation", "train"], default="validation")
    parser.add_argument("--output", type=Path, help="folder for the evaluation files")
    parser.add_argument("--samples", type=int, default=0, metavar="N",
                        help="also write samples.png: the first N frames as input | ground "
                        "truth | prediction (SR: LR | bicubic | SR | HR)")
    args = parser.parse_args(argv)
    if args.run_dir is None and (args.model is None or args.config is None):
        parser.error("give --run-dir, or --model with --config")
    return args


def open_model(args):
    """(config, runtime, what was loaded) for the command-line arguments."""
    from tfseg import runtimes
    from tfseg.config import load_config
    from tfseg.export import metadata_for
    from tfseg.runs import load_run

    config_path = args.config or args.run_dir / "config.yaml"
    if args.model is None and args.runtime in (None, "keras"):
        _, model = load_run(args.run_dir)
        config = load_config(config_path, args.overrides)
        return config, runtimes.from_keras(model, metadata_for(config, "NHWC")), (
            f"{args.run_dir / 'checkpoints'} (latest)")
    if args.config is None and not config_path.is_file():
        raise TfsegError(f"{args.run_dir}: not a tfseg run (no config.yaml)")
    config = load_config(config_path, args.overrides)
    path = args.model or args.run_dir / RUN_RUNTIMES[args.runtime]
    return config, runtimes.load(path, args.runtime), str(path)


def predict(runtime, images, notes):
    """Logits of `runtime` for NHWC `images`, at the images' size (see the module notes on
    resizing); `notes` (a set) collects the resize note once."""
    import tensorflow as tf

    size = tuple(images.shape[1:3])
    if runtime.input_size is None or runtime.input_size == size:
        return runtime(images)
    notes.add(f"frames are {size[0]}x{size[1]} but the model takes "
              f"{runtime.input_size[0]}x{runtime.input_size[1]}: frames resized to the "
              f"model's size and logits back to the frame size")
    logits = runtime(tf.image.resize(images, runtime.input_size).numpy())
    return tf.image.resize(logits, size).numpy()


def evaluate(runtime, config, batches, samples=0):
    """Scores `runtime` on `batches` of (images, masks) under `config`'s classes.

    Returns:
        dict: the scores, "per_class" rows, "confusion_matrix", "frames" and "notes";
        "panels" too when `samples` > 0: uint8 (H, 3W, 3) of the first `samples` frames.
    """
    from tfseg.metrics import (
        InstanceIoU,
        confusion_matrix,
        scores_from_confusion,
        seed_per_image_foreground_iou,
    )
    from tfseg.summaries import class_colours, segmentation_panels

    class_names = config.data.class_names
    num_classes, ignore = config.model.num_classes, config.data.ignore_label
    instances = InstanceIoU(class_names, ignore_label=ignore)
    matrix, seed_figures, frames, notes = np.zeros((num_classes,) * 2, np.int64), [], 0, set()
    panels, colours = [], class_colours(config.data, num_classes)
    for images, masks in batches:
        logits = predict(runtime, images.numpy(), notes)
        if logits.shape[-1] != num_classes:
            raise TfsegError(f"the model outputs {logits.shape[-1]} classes but the config "
                             f"has {num_classes} ({', '.join(class_names)})")
        predictions = logits.argmax(-1)
        matrix += confusion_matrix(masks, predictions, num_classes, ignore).numpy()
        instances.update(masks.numpy(), predictions)
        if num_classes == 2:
            seed_figures.extend(seed_per_image_foreground_iou(masks.numpy(), predictions))
        frames += len(images)
        take = samples - len(panels)
        if take > 0:
            panels.extend(segmentation_panels(images.numpy()[:take], masks.numpy()[:take],
                                              predictions[:take], ignore_label=ignore,
                                              colours=colours))
    report = {"frames": frames, **scores_from_confusion(matrix, class_names),
              **instances.result()}
    if seed_figures:
        # The seed's "mean IoU": |prediction & truth| / |truth| per image, averaged over
        # images with foreground (a recall; false positives do not lower it).
        report["seed_per_image_foreground_iou"] = float(np.nanmean(seed_figures))
    report["per_class"] = per_class_rows(matrix, report)
    report["confusion_matrix"] = matrix.tolist()
    report["notes"] = sorted(notes)
    if panels:
        report["panels"] = np.concatenate(panels, axis=0)
    return report


def evaluate_super_resolution(runtime, config, pairs, samples=0):
    """Scores an SR `runtime` on `pairs` of whole (LR, HR) images (batch 1).

    Returns:
        dict: mean "psnr_y", "ssim_y" and their bicubic counterparts, "per_image" rows,
        "images" and "notes"; "panels" too when `samples` > 0 (LR | bicubic | SR | HR rows,
        padded to the widest).
    """
    import tensorflow as tf

    from tfseg.data.super_resolution import to_8bit
    from tfseg.metrics import bicubic_baseline, y_scores
    from tfseg.summaries import super_resolution_panels
    from tfseg.tiling import predict_tiled

    scale, rows, panels, notes = config.model.scale, [], [], set()
    for low_resolution, high_resolution in pairs:
        low, high = low_resolution.numpy(), high_resolution.numpy()
        if runtime.input_size is None:
            outputs = runtime(low)
        else:
            notes.add(f"the model takes {runtime.input_size[0]}x{runtime.input_size[1]} "
                      f"LR tiles: whole images run tile by tile (quarter-tile overlap)")
            outputs = predict_tiled(runtime, low[0], runtime.input_size)[None]
        restored = to_8bit(tf.constant(outputs, tf.float32)).numpy()
        scores = {**y_scores(restored, high, shave=scale),
                  **{f"bicubic_{key}": value
                     for key, value in bicubic_baseline(low, high, scale).items()}}
        rows.append({"image": len(rows) + 1, "height": high.shape[1], "width": high.shape[2],
                     **{key: float(value[0]) for key, value in scores.items()}})
        if len(panels) < samples:
            panels.append(super_resolution_panels(low, restored, high, scale)[0])
    if not rows:
        raise TfsegError("the validation split holds no images to score")
    report = {"images": len(rows),
              **{key: float(np.mean([row[key] for row in rows]))
                 for key in ("psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y")},
              "per_image": rows, "notes": sorted(notes)}
    if panels:
        width = max(panel.shape[1] for panel in panels)
        report["panels"] = np.concatenate(
            [np.pad(panel, ((0, 0), (0, width - panel.shape[1]), (0, 0))) for panel in panels])
    return report


def format_super_resolution_table(report):
    """The per-image table and the means, as printed."""
    lines = [f"{'image':>5}  {'HR size':>9} {'PSNR (Y)':>9} {'SSIM (Y)':>9} "
             f"{'bicubic PSNR':>13} {'bicubic SSIM':>13}"]
    for row in report["per_image"]:
        lines.append(f"{row['image']:>5}  {row['height']:>4}x{row['width']:<4} "
                     f"{row['psnr_y']:>9.3f} {row['ssim_y']:>9.4f} "
                     f"{row['bicubic_psnr_y']:>13.3f} {row['bicubic_ssim_y']:>13.4f}")
    lines.append(f"  mean {'':>9} {report['psnr_y']:>9.3f} {report['ssim_y']:>9.4f} "
                 f"{report['bicubic_psnr_y']:>13.3f} {report['bicubic_ssim_y']:>13.4f}")
    return "\n".join(lines)


def per_class_rows(matrix, report):
    """One dict per class: IoU, iIoU, recall, precision and pixel counts."""
    rows = []
    for class_id, name in enumerate(report["per_class_iou"]):
        truth, predicted = matrix[class_id].sum(), matrix[:, class_id].sum()
        hits = matrix[class_id, class_id]
        rows.append({"id": class_id, "class": name, "iou": report["per_class_iou"][name],
                     "iiou": report["per_class_iiou"].get(name, float("nan")),
                     "recall": hits / truth if truth else float("nan"),
                     "precision": hits / predicted if predicted else float("nan"),
                     "pixels": int(truth), "predicted_pixels": int(predicted)})
    return [{key: float(v) if isinstance(v, np.floating) else v for key, v in row.items()}
            for row in rows]


def format_table(report):
    """The per-class table and the summary scores, as printed."""
    header = (f"{'id':>3}  {'class':<20} {'IoU':>7} {'iIoU':>7} {'recall':>7} "
              f"{'precision':>9} {'pixels':>10}")
    lines = [header]
    for row in report["per_class"]:
        lines.append(f"{row['id']:>3}  {row['class']:<20} {row['iou']:>7.4f} "
                     f"{row['iiou']:>7.4f} {row['recall']:>7.4f} {row['precision']:>9.4f} "
                     f"{row['pixels']:>10}")
    lines.append(", ".join(f"{key} {report[key]:.4f}" for key in SUMMARY_KEYS
                           if key in report))
    return "\n".join(lines)


def write_csv(rows, path):
    """`rows` (dicts with the same keys: per class, or per SR image) as CSV, written
    atomically."""
    from tfseg.files import write_text_atomic

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def confusion_image(matrix, class_names, cell=64, margin=140):
    """uint8 BGR picture of the row-normalised confusion matrix (rows = ground truth), each
    cell holding its percentage."""
    import cv2

    matrix = np.asarray(matrix, np.float64)
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    size = len(class_names)
    image = np.full((margin + size * cell, margin + size * cell, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for row in range(size):
        for column in range(size):
            top, left = margin + row * cell, margin + column * cell
            shade = int(255 * (1 - rates[row, column]))
            image[top:top + cell, left:left + cell] = (255, shade, shade)
            cv2.putText(image, f"{100 * rates[row, column]:.1f}", (left + 6, top + cell // 2 + 5),
                        font, 0.45, (0, 0, 0) if shade > 110 else (255, 255, 255), 1,
                        cv2.LINE_AA)
        cv2.putText(image, class_names[row][:16], (4, margin + row * cell + cell // 2 + 5),
                    font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(image, class_names[row][:cell // 9], (margin + row * cell + 4, margin - 8),
                    font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, "truth \\ predicted (%)", (4, 20), font, 0.45, (0, 0, 0), 1,
                cv2.LINE_AA)
    return image


def evaluation_batches(config, split):
    """The validation batches, or one epoch (`train.steps_per_epoch` batches) of training
    batches."""
    from tfseg.data.pipeline import make_datasets

    datasets = make_datasets(config)
    if split == "train":
        return datasets.train.take(config.train.steps_per_epoch)
    return datasets.validation


def main(argv=None):
    args = parse_args(argv)
    from tfseg.export import write_json

    config, runtime, source = open_model(args)
    super_resolution = config.model.task == "super_resolution"
    with runtime:
        if super_resolution:
            if args.split != "validation":
                raise TfsegError("--split train: super-resolution models are scored on "
                                 "whole validation images only")
            report = evaluate_super_resolution(runtime, config,
                                               evaluation_batches(config, args.split),
                                               args.samples)
        else:
            report = evaluate(runtime, config, evaluation_batches(config, args.split),
                              args.samples)
    output = args.output or args.run_dir or args.model.parent
    output.mkdir(parents=True, exist_ok=True)
    panels = report.pop("panels", None)
    if panels is not None:
        write_png(output / "samples.png", panels, rgb=True)
    report = {"model": source, "runtime": runtime.name, "runtime_version": runtime.version,
              "split": args.split, **report}
    write_json(report, output / "evaluation.json")
    for note in report["notes"]:
        print(f"note: {note}")
    if super_resolution:
        write_csv(report["per_image"], output / "evaluation.csv")
        print(f"{report['images']} {args.split} images, {runtime.name} ({source}; "
              f"{runtime.version})")
        print(format_super_resolution_table(report))
        written = ["evaluation.csv"]
    else:
        write_csv(report["per_class"], output / "evaluation.csv")
        write_png(output / "confusion_matrix.png",
                  confusion_image(report["confusion_matrix"], config.data.class_names))
        print(f"{report['frames']} {args.split} frames, {runtime.name} ({source}; "
              f"{runtime.version})")
        print(format_table(report))
        written = ["evaluation.csv", "confusion_matrix.png"]
    written += ["samples.png"] if panels is not None else []
    print(f"written to {output / 'evaluation.json'}, {', '.join(written)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
