"""Scoring of a trained run or an exported model, in any runtime, on a run's data: the
library of `python -m tfseg.evaluate` (its docstring says what is scored and how)."""

import csv
import io

import cv2
import numpy as np
import tensorflow as tf

from tfseg.config import load_config
from tfseg.data.pipeline import make_datasets
from tfseg.deploy import runtimes
from tfseg.deploy.metadata import check_preprocessing, metadata_for
from tfseg.deploy.tiling import predict_tiled
from tfseg.runs.presets import find_preset, is_preset
from tfseg.runs.restore import load_run
from tfseg.tasks.factory import make_task
from tfseg.tasks.samples import format_sample_scores
from tfseg.tasks.test_time import VIEWS
from tfseg.tasks.validation import validate
from tfseg.utils.errors import TfsegError
from tfseg.utils.files import write_json, write_text_atomic
from tfseg.utils.images import write_png

SUMMARY_KEYS = ("loss", "mean_iou", "mean_iiou", "pixel_accuracy", "mean_class_accuracy",
                "frequency_weighted_iou", "foreground_iou", "seed_per_image_foreground_iou")


def open_model(*, run_dir=None, model_path=None, config_path=None, runtime_name=None,
               overrides=()):
    """(config, runtime, what was loaded) for `python -m tfseg.evaluate`'s arguments: the
    latest checkpoint of `run_dir` (runtime keras) or its export in `runtime_name`, or the
    file `model_path` (or preset, `preset:NAME`, in keras); the data of `config_path`
    (default: the run's or the preset's config.yaml) with `overrides`."""
    if model_path is not None and is_preset(model_path):
        config = load_config(config_path or find_preset(model_path).config_path, overrides)
        return config, runtimes.load(str(model_path), runtime_name), str(model_path)
    path = config_path or run_dir / "config.yaml"
    if model_path is None and runtime_name in (None, "keras"):
        _, model = load_run(run_dir)
        config = load_config(path, overrides)
        return config, runtimes.from_keras(model, metadata_for(config, "NHWC")), (
            f"{run_dir / 'checkpoints'} (latest)")
    if config_path is None and not path.is_file():
        raise TfsegError(f"{run_dir}: not a tfseg run (no config.yaml)")
    config = load_config(path, overrides)
    path = model_path or run_dir / runtimes.RUN_RUNTIMES[runtime_name]
    return config, runtimes.load(path, runtime_name), str(path)


def predict(runtime, images, size, notes):
    """Logits of `runtime` for NHWC `images`, resized (bilinear) to the labels' `size` (H, W)
    where the model takes another (see `tfseg.evaluate`); `notes` (a set) collects a note
    saying so, once."""
    logits = runtime(images)
    if tuple(logits.shape[1:3]) == tuple(size):
        return logits
    notes.add(f"the model takes {images.shape[1]}x{images.shape[2]} frames: frames "
              f"preprocessed at that size (as tfseg.predict does) and logits resized to the "
              f"{size[0]}x{size[1]} labels")
    return tf.image.resize(logits, size).numpy()


def predict_whole_images(runtime, images, notes):
    """SR outputs of `runtime` for whole NHWC LR `images`: tile by tile (`predict_tiled`)
    when the runtime takes a fixed size; `notes` (a set) collects a note saying so."""
    if runtime.input_size is None:
        return runtime(images)
    notes.add(f"the model takes {runtime.input_size[0]}x{runtime.input_size[1]} "
              f"LR tiles: whole images run tile by tile (quarter-tile overlap)")
    return np.stack([predict_tiled(runtime, image, runtime.input_size) for image in images])


def score(runtime, config, batches, samples=0):
    """Scores `runtime` on `batches` (of (images, masks), or (LR, HR) whole images) by the
    validation of training runs (`tfseg.tasks.validation.validate`). A recurrent model
    (`runtime.recurrent`) gets batches of whole sequences, which `validate` hands over one
    sequence per call: the frames of each in order, the state carried from frame to frame and
    reset to zeros at each call.

    Returns:
        dict: every validation score, "notes", and for segmentation "per_class" rows; "panels"
        too when `samples` > 0 (uint8 (N, H, W, 3): input | ground truth | prediction, or
        LR | bicubic | SR | HR).
    """
    notes, segmentation = set(), config.model.task == "segmentation"
    labels = (config.data.height, config.data.width)

    def run(images):
        if runtime.recurrent:
            runtime.reset()   # each call is one whole sequence
        if segmentation:
            return predict(runtime, images, labels, notes)
        return predict_whole_images(runtime, images, notes)

    views = config.data.augment.test_time
    if segmentation and views != "none":
        notes.add(f"each frame scored on its {len(VIEWS[views])} test-time views "
                  f"(data.augment.test_time {views!r}), their class probabilities averaged")
    if runtime.recurrent:
        notes.add("a recurrent model: each sequence scored whole, its frames in order, the "
                  "state carried from frame to frame and reset to zeros at each sequence")
    report = validate(make_task(config), run, batches, samples=samples)
    if segmentation:
        report["per_class"] = per_class_rows(np.asarray(report["confusion_matrix"]), report)
    report["notes"] = sorted(notes)
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
    """The per-class table, the summary scores and the sample scores, as printed."""
    header = (f"{'id':>3}  {'class':<20} {'IoU':>7} {'iIoU':>7} {'recall':>7} "
              f"{'precision':>9} {'pixels':>10}")
    lines = [header]
    for row in report["per_class"]:
        lines.append(f"{row['id']:>3}  {row['class']:<20} {row['iou']:>7.4f} "
                     f"{row['iiou']:>7.4f} {row['recall']:>7.4f} {row['precision']:>9.4f} "
                     f"{row['pixels']:>10}")
    lines.append(", ".join(f"{key} {report[key]:.4f}" for key in SUMMARY_KEYS
                           if key in report))
    if "sample_f1" in report:
        lines.append(format_sample_scores(report, report["min_sample_area"]))
    return "\n".join(lines)


def write_csv(rows, path):
    """`rows` (dicts with the same keys: per class, or per SR image) as CSV, written
    atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def confusion_image(matrix, class_names, cell=64, margin=140):
    """uint8 BGR picture of the row-normalised confusion matrix (rows = ground truth), each
    cell holding its percentage."""
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


def evaluation_batches(config, split, runtime):
    """The validation batches, or one epoch (`train.steps_per_epoch` batches) of training
    batches, for `runtime`: segmentation frames preprocessed at its input size where it takes
    another than the config's (`make_datasets`), masks at the config's."""
    datasets = make_datasets(config, runtime.input_size)
    if split == "train":
        return datasets.train.take(config.train.steps_per_epoch)
    return datasets.validation


def evaluate_to_folder(*, run_dir=None, model_path=None, config_path=None, runtime_name=None,
                       overrides=(), split="validation", output=None, samples=0):
    """Scores a run or an exported model (see `open_model`) on the `split` of its data, prints
    the table and writes `evaluation.json`, `evaluation.csv`, `confusion_matrix.png` (and
    `samples.png` with `samples` > 0) into `output` (default: the run, else the model's
    folder)."""
    config, runtime, source = open_model(run_dir=run_dir, model_path=model_path,
                                         config_path=config_path, runtime_name=runtime_name,
                                         overrides=overrides)
    super_resolution = config.model.task == "super_resolution"
    with runtime:
        check_preprocessing(runtime.metadata, config, source)
        if super_resolution and split != "validation":
            raise TfsegError("--split train: super-resolution models are scored on whole "
                             "validation images only")
        report = score(runtime, config, evaluation_batches(config, split, runtime), samples)
    output = output or run_dir or model_path.parent
    output.mkdir(parents=True, exist_ok=True)
    panels = report.pop("panels", None)
    if panels is not None:
        write_png(output / "samples.png", np.concatenate(panels), rgb=True)
    report = {"model": source, "runtime": runtime.name, "runtime_version": runtime.version,
              "split": split, **report}
    if "sample_f1" in report:
        report["min_sample_area"] = config.data.min_sample_area
    if not super_resolution:
        report["test_time"] = config.data.augment.test_time
    write_json(report, output / "evaluation.json")
    for note in report["notes"]:
        print(f"note: {note}")
    if super_resolution:
        write_csv(report["per_image"], output / "evaluation.csv")
        print(f"{report['images']} {split} images, {runtime.name} ({source}; "
              f"{runtime.version})")
        print(format_super_resolution_table(report))
        written = ["evaluation.csv"]
    else:
        write_csv(report["per_class"], output / "evaluation.csv")
        write_png(output / "confusion_matrix.png",
                  confusion_image(report["confusion_matrix"], config.data.class_names))
        print(f"{report['frames']} {split} frames, {runtime.name} ({source}; "
              f"{runtime.version})")
        print(format_table(report))
        written = ["evaluation.csv", "confusion_matrix.png"]
    written += ["samples.png"] if panels is not None else []
    print(f"written to {output / 'evaluation.json'}, {', '.join(written)}")
    return report
