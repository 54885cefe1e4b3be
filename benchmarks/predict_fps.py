"""End-to-end frames/s of `python -m tfseg.predict` on 3072x3072 8-bit BMP sequences for every
family and precision (issue 22 part 5), and where the time goes: reading, preprocessing, the
model, the pictures and their PNG files.

    python benchmarks/predict_fps.py [--work-dir DIR] [--frames 6] [--warmup 2]
        [--families icnet linknet ...] [--precisions float32 int8 float16]
        [--runtimes onnxruntime opencv] [--size FAMILY=HxW] [--json FILE]

Each family is built from its recipe in configs/ (`RECIPES`) with seeded random weights
(batch norm statistics randomised, `tfseg.models.randomize_batch_norm`) and exported to ONNX
at its export size (`EXPORT_SIZES`, or --size) with the recipe's preprocessing in its metadata,
as `python -m tfseg.export --size HxW` writes it; int8 is calibrated on the sequence's own
preprocessed frames (speed only: random weights score nothing); the recurrent icnet_temporal
has no int8 (`tfseg.deploy.precisions.check_precisions`). The frames: one synthetic sequence
of warmup + frames BMP interferograms written under --work-dir once and reused
(`tfseg.benchmarking.pipelines.bmp_sequence`).

Every export runs over the sequence twice through predict's own functions
(`tfseg.deploy.inference`): once step by step, each step timed (read, preprocess, model,
postprocess: the mask and overlay or the upscaled frame, write: the PNG files), and once end
to end as `predict_files` runs it (`predict_sequence`, then `write_pictures`), timed from
frame to frame. Figures are medians per frame after the warm-up frames; the background of the
sequence (once per sequence, recipes with `background_every`) is reported apart. The input
side (read + preprocess) should take less than the model.

sr_johnson upscales a 3072x3072 frame in 3249 tiles of 72x72 (12288x12288 out): minutes per
frame on a CPU; measure it apart, e.g. `--families sr_johnson --frames 1 --warmup 1`.
"""

import argparse
import itertools
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import onnxruntime

from tfseg.benchmarking.cases import MODEL_NAMES
from tfseg.benchmarking.pipelines import bmp_sequence
from tfseg.cli import parse_size
from tfseg.config.loading import load_config
from tfseg.config.recipes import recipe_path
from tfseg.data.sequences import Sequence, frame_files
from tfseg.deploy.exports import export_onnx
from tfseg.deploy.inference import (
    choose_tile,
    frame_pictures,
    load_model,
    predict_sequence,
    run_model,
    write_pictures,
)
from tfseg.deploy.metadata import PRECISIONS, metadata_at_size, metadata_for, preprocessing_of
from tfseg.deploy.precisions import check_precisions
from tfseg.deploy.quantization import write_precision
from tfseg.models import randomize_batch_norm
from tfseg.models.from_config import build_model
from tfseg.utils.errors import TfsegError
from tfseg.utils.hardware import cpu_info

RECIPES = {"fcn32_vgg16": "fcn32_vgg16_interferogram",
           "fcn_resnet18": "fcn_resnet18_interferogram", "icnet": "icnet_interferogram",
           "icnet_temporal": "icnet_temporal_interferogram", "linknet": "linknet_camvid",
           "sr_johnson": "sr_johnson_x4"}
# Export sizes other than the recipe's training size. The FCN recipes train at the full
# 3072x3072 (on 3072x512 strips), minutes per frame on a CPU: exported at 768x768 (frames
# resized to it, a quarter of the resolution; --size fcn32_vgg16=3072x3072 measures the
# recipe's own). The SR model resizes nothing: its 72x72 export upscales a 3072x3072 frame
# tile by tile (predict's batches of 8 tiles; at 768x768 those ran out of 20 GB).
EXPORT_SIZES = {"fcn32_vgg16": (768, 768), "fcn_resnet18": (768, 768)}
STAGES = ("read", "preprocess", "model", "postprocess", "write")


def export_family(family, directory, sequence, precisions, size=None, calibration_frames=2):
    """{precision: the family's ONNX export in it, or {"not_supported": reason}}."""
    config = load_config(recipe_path(RECIPES[family]))
    size = tuple(size or EXPORT_SIZES.get(family, (config.data.height, config.data.width)))
    keras.utils.set_random_seed(0)
    model = build_model(config, size)
    randomize_batch_norm(model)
    metadata = metadata_at_size(metadata_for(config, "NCHW"), size)
    float32 = export_onnx(model, directory / f"{family}.onnx", opset=config.export.opset,
                          metadata=metadata)
    exports = {}
    for precision in precisions:
        try:
            check_precisions([precision], recurrent=metadata["recurrent"])
        except TfsegError as error:
            exports[precision] = {"not_supported": str(error)}
            continue
        frames = (calibration(metadata, sequence, size, calibration_frames)
                  if precision == "int8" else None)
        exports[precision] = (float32 if precision == "float32"
                              else write_precision(float32, precision, frames))
    return exports


def calibration(metadata, sequence, size, count):
    """float32 (count, H, W, C): the first `count` frames of `sequence` preprocessed as the
    export's metadata says, their top-left `size` where the model runs in tiles."""
    preprocessing = preprocessing_of(metadata, "the export")
    background = sequence.background(preprocessing)
    frames = itertools.islice(sequence.frames(preprocessing.colour), count)
    return np.stack([preprocessing.image(frame, background)[:size[0], :size[1]]
                     for _, _, frame in frames])


def staged_seconds(model, sequence, folder, tile):
    """{stage: seconds of each frame} of predict's steps run one after the other, each timed,
    and "background": the seconds of the sequence's background."""
    metadata = model.metadata
    preprocessing = preprocessing_of(metadata, model.name)
    started = time.perf_counter()
    background = sequence.background(preprocessing)
    seconds = {stage: [] for stage in STAGES}
    seconds["background"] = time.perf_counter() - started
    model.reset()
    frames = sequence.frames(preprocessing.colour)
    for _ in sequence.images:
        clock = [time.perf_counter()]
        name, _, frame = next(frames)
        clock.append(time.perf_counter())
        image = preprocessing.image(frame, background)
        clock.append(time.perf_counter())
        output = run_model(model, image, tile)
        clock.append(time.perf_counter())
        pictures = frame_pictures(metadata, preprocessing, output, frame, image)
        clock.append(time.perf_counter())
        write_pictures(folder, name, pictures)
        clock.append(time.perf_counter())
        for stage, (start, end) in zip(STAGES, itertools.pairwise(clock)):
            seconds[stage].append(end - start)
    return seconds


def end_to_end_seconds(model, sequence, folder, tile):
    """Seconds from frame to frame of predict's loop, as `predict_files` runs it (the first
    frame's include the sequence's background)."""
    seconds, last = [], time.perf_counter()
    for name, pictures in predict_sequence(model, sequence, tile=tile):
        write_pictures(folder, name, pictures)
        now = time.perf_counter()
        seconds.append(now - last)
        last = now
    return seconds


def measure(path, runtime, sequence, folder, warmup):
    """One row's figures: the export at `path` in `runtime` over `sequence`, medians per frame
    after `warmup` frames (ms), the end-to-end frames/s and whether the input side (read +
    preprocess) takes less than the model."""
    with load_model(path, runtime) as model:
        tile = choose_tile(model, None, None)
        staged = staged_seconds(model, sequence, folder, tile)
        end_to_end = end_to_end_seconds(model, sequence, folder, tile)
        version = model.version
        shape = [*model.metadata["input_size"], model.metadata["input_channels"]]
    row = {f"{stage}_ms": 1e3 * statistics.median(staged[stage][warmup:]) for stage in STAGES}
    row.update(input="x".join(map(str, shape)), background_ms=1e3 * staged["background"],
               runtime_version=version,
               end_to_end_ms=1e3 * statistics.median(end_to_end[warmup:]),
               frames=len(end_to_end) - warmup)
    row["frames_per_s"] = 1e3 / row["end_to_end_ms"]
    row["input_ms"] = row["read_ms"] + row["preprocess_ms"]
    row["input_faster"] = row["input_ms"] < row["model_ms"]
    return row


def family_rows(family, args, sequence, directory):
    """The rows of one family, one by one: every precision in every runtime."""
    exports = export_family(family, directory, sequence, args.precisions,
                            args.size.get(family), args.calibration_frames)
    for precision, runtime in itertools.product(args.precisions, args.runtimes):
        export = exports[precision]
        row = {"family": family, "precision": precision, "runtime": runtime}
        if isinstance(export, dict):
            yield {**row, **export}
            continue
        folder = directory / f"{family}-{precision}-{runtime}"
        folder.mkdir()
        try:
            yield {**row, **measure(export, runtime, sequence, folder, args.warmup)}
        except TfsegError as error:   # a runtime that cannot load or run this precision
            yield {**row, "error": str(error).splitlines()[0]}
        shutil.rmtree(folder)   # the pictures: 40 MB a frame


TABLE_HEADER = ("| model | input | runtime | precision | frames/s end to end | read ms | "
                "preprocess ms | model ms | postprocess ms | write ms | input faster than "
                "model |\n" + "|---" * 11 + "|")


def table_row(row):
    """One markdown row of TABLE_HEADER's table (a row that could not run says why)."""
    head = (f"| {row['family']} | {row.get('input', '-')} | {row['runtime']} | "
            f"{row['precision']} |")
    reason = row.get("not_supported") or row.get("error")
    if reason:
        return f"{head} {reason} |" + " |" * 6
    figures = " | ".join(f"{row[f'{stage}_ms']:.1f}" for stage in STAGES)
    return (f"{head} {row['frames_per_s']:.2f} | {figures} | "
            f"{'yes' if row['input_faster'] else '**no**'} |")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, help="where the BMP sequence is written "
                        "and reused (default: a temporary folder)")
    parser.add_argument("--frames", type=int, default=6, help="timed frames per pass")
    parser.add_argument("--warmup", type=int, default=2, help="frames before them")
    parser.add_argument("--frame-size", type=int, default=3072, help="frames are NxN")
    parser.add_argument("--families", nargs="+", choices=MODEL_NAMES, default=MODEL_NAMES)
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=PRECISIONS)
    parser.add_argument("--runtimes", nargs="+", choices=("onnxruntime", "opencv"),
                        default=["onnxruntime"])
    parser.add_argument("--size", action="append", default=[], metavar="FAMILY=HxW",
                        help="export size of a family (default: EXPORT_SIZES, else its "
                        "recipe's)")
    parser.add_argument("--calibration-frames", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.frames < 1:
        parser.error("--warmup and --frames must be at least 1 (the first frame computes "
                     "the background)")
    sizes = {}
    for text in args.size:
        family, _, size = text.partition("=")
        if family not in MODEL_NAMES:
            parser.error(f"--size {text}: expected FAMILY=HxW, FAMILY one of "
                         f"{', '.join(MODEL_NAMES)}")
        sizes[family] = parse_size(size, minimum=8)
    args.size = sizes
    return args


def main(argv=None):
    """Prints the table row by row as they are measured (and rewrites --json after each)."""
    args = parse_args(argv)
    cpu = cpu_info().describe()
    print(f"{cpu}; onnxruntime {onnxruntime.__version__}; {args.frame_size}x"
          f"{args.frame_size} 8-bit BMP frames, median per frame of {args.frames} after "
          f"{args.warmup} warm-up frames\n{TABLE_HEADER}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tfseg-predict-fps-") as tmp:
        sequence = Sequence(images=tuple(frame_files(bmp_sequence(
            args.work_dir or tmp, args.warmup + args.frames, args.frame_size))))
        for family in args.families:
            directory = Path(tmp) / family
            directory.mkdir()
            for row in family_rows(family, args, sequence, directory):
                rows.append(row)
                print(table_row(row), flush=True)
                if args.json:
                    args.json.write_text(json.dumps({"cpu": cpu, "rows": rows}, indent=2)
                                         + "\n")
    return rows


if __name__ == "__main__":
    main()
