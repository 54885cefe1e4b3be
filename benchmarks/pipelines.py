#!/usr/bin/env python
"""Images per second of each input pipeline, next to the seed's plain loader and a training step.

For each data set: the tfseg tf.data pipeline alone, in a first epoch (parallel decode and
preprocessing) and in later ones (served from its cache of preprocessed frames), a plain
Python loop doing the same work with OpenCV one image at a time (the seeds' loaders), and the
images per second a training step of the matching model consumes on this machine. The
pipeline should beat the loop by 3x and outrun the step. (The plain loop re-reads and
re-preprocesses every image in every epoch, as the seeds' loaders did. SR patches are random
per epoch: its pipeline caches the decoded HR images, not patches.)

    python benchmarks/pipelines.py --json runs/pipelines.json

Interferograms: synthetic 3072x3072 8-bit BMP frames (written once by
tools/make_interferograms.py under --work-dir), 3x3 blur, background of every 10th frame,
CLAHE (clip 5, tiles 20), resize to 1024x1024 (the seed's ICNet path). CamVid: the SegNet
train split of ../shared/data/camvid (480x360 PNG image + label). SR: 288x288 patches with
LR by blur + bicubic x4 from T91 + BSD200 in ../shared/data/sr.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def images_per_second(iterate, count):
    """Images per second of `iterate()` (which yields `count` images), after one warm-up."""
    iterate()
    started = time.perf_counter()
    iterate()
    return count / (time.perf_counter() - started)


def rates(dataset, plain_loop, count, train_step):
    """The figures of one data set: the pipeline in a first epoch (decode and preprocess) and
    in later epochs (served from its in-memory cache, `data.cache: memory`), the plain loop,
    and the training step."""
    cached = dataset.cache()

    def iterate(data):
        def run():
            for _ in data.prefetch(4):
                pass
        return run

    return {"images": count, "pipeline": images_per_second(iterate(dataset), count),
            "pipeline_cached": images_per_second(iterate(cached), count),
            "plain_loop": images_per_second(plain_loop, count), "train_step": train_step}


def interferogram_case(work_dir, frames):
    from tfseg.config import DataConfig, PreprocessConfig
    from tfseg.data import interferograms, preprocess

    root = work_dir / "interferograms-3072"
    if not root.exists():
        subprocess.run([sys.executable, "tools/make_interferograms.py", "--out", str(root),
                        "--sequences", "1", "--frames", str(frames), "--size", "3072x3072",
                        "--fringes", "80"], cwd=REPO, check=True)
    config = DataConfig(source="interferograms", path=str(root), height=1024, width=1024,
                        cache="none", preprocess=PreprocessConfig(
                            blur=3, background_every=10, clahe_clip_limit=5.0,
                            clahe_tile_grid=20))
    records = interferograms.read_sequence(root / "sequence_000")
    background = interferograms.sequence_background(records, config.preprocess)
    dataset = interferograms.folder_frames(records, {records[0].path.parent: background}, config)

    clahe = cv2.createCLAHE(clipLimit=5.0, tileGridSize=(20, 20))

    def plain_loop():   # the seed's loader: numpy in float64, one frame at a time
        for record in records:
            frame = cv2.blur(cv2.imread(str(record.path), cv2.IMREAD_GRAYSCALE), (3, 3))
            image = np.clip(frame - 0.9 * background, 0, 255).round().astype(np.uint8)
            image = cv2.resize(clahe.apply(image), (1024, 1024), interpolation=cv2.INTER_CUBIC)
            mask = preprocess.boxes_to_mask(interferograms.pixel_boxes(record, frame.shape),
                                            *frame.shape)
            cv2.resize(mask, (1024, 1024), interpolation=cv2.INTER_NEAREST)

    return rates(dataset, plain_loop, len(records),
                 train_step_rate("icnet", (1024, 1024), 1, 2, batch_size=2, width=0.5))


def camvid_case(limit):
    from tfseg.data import camvid

    root = SHARED_DATA / "camvid"
    dataset = camvid.read_segnet(root, "train").take(limit)
    pairs = camvid.segnet_pairs(root, "train")[:limit]

    def plain_loop():
        for image, label in pairs:
            cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB).astype(np.float32)
            cv2.imread(str(label), cv2.IMREAD_UNCHANGED)

    return rates(dataset, plain_loop, limit,
                 train_step_rate("linknet", (320, 480), 3, 12, batch_size=8))


def sr_case(limit):
    from tfseg.data import super_resolution

    folders = [SHARED_DATA / "sr" / "t91", SHARED_DATA / "sr" / "bsd200"]
    skipped = []
    dataset = super_resolution.training_pairs(folders, factor=4, patch_size=288,
                                              skipped=skipped)
    paths = [p for p in super_resolution.list_hr_images(folders) if str(p) not in skipped]
    rng = np.random.default_rng(0)

    def plain_loop():
        for path in paths[:limit]:
            image = cv2.imread(str(path))
            y, x = (rng.integers(0, s - 288 + 1) for s in image.shape[:2])
            hr = image[y:y + 288, x:x + 288]
            cv2.resize(cv2.GaussianBlur(hr, (7, 7), 1.0), (72, 72),
                       interpolation=cv2.INTER_CUBIC)

    # One pass visits every usable image once: the first decodes them, later ones read the
    # decoded images from the cache and only crop and degrade.
    stream = iter(dataset.prefetch(4))

    def one_pass():
        started = time.perf_counter()
        for _ in range(len(paths)):
            next(stream)
        return len(paths) / (time.perf_counter() - started)

    first, cached = one_pass(), one_pass()
    return {"images": len(paths), "pipeline": first, "pipeline_cached": cached,
            "plain_loop": images_per_second(plain_loop, min(limit, len(paths))),
            "train_step": train_step_rate("sr_johnson", (72, 72), 3, None, batch_size=8,
                                          loss="pixel")}


def train_step_rate(name, size, channels, num_classes, *, batch_size, loss="ce", **options):
    """Images per second of one optimizer step (forward, backward, Adam) on random data."""
    import keras
    import tensorflow as tf

    from tfseg import models

    task = {"num_classes": num_classes} if num_classes else {"scale": 4}
    model = models.build(name, input_shape=size, input_channels=channels, **task, **options)
    optimizer = keras.optimizers.Adam(1e-4)
    images = tf.random.uniform((batch_size, *size, channels), 0, 255)
    targets = (tf.zeros((batch_size, *size), tf.int32) if loss == "ce"
               else tf.zeros((batch_size, size[0] * 4, size[1] * 4, channels)))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            outputs = model(images, training=True)
            value = (tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                targets, outputs, from_logits=True)) if loss == "ce"
                else tf.reduce_mean(tf.abs(outputs - targets)))
        gradients = tape.gradient(value, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return value

    step()
    times = []
    for _ in range(5):
        started = time.perf_counter()
        float(step())
        times.append(time.perf_counter() - started)
    return batch_size / float(np.median(times))


CASES = {"interferograms": lambda args: interferogram_case(args.work_dir, args.frames),
         "camvid": lambda args: camvid_case(args.limit),
         "sr": lambda args: sr_case(args.limit)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "bench-data",
                        help="where the synthetic 3072x3072 frames are written once")
    parser.add_argument("--frames", type=int, default=20, help="interferogram frames")
    parser.add_argument("--limit", type=int, default=96, help="CamVid / SR images per pass")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not SHARED_DATA.is_dir() and set(args.cases) & {"camvid", "sr"}:
        sys.exit(f"{SHARED_DATA}: missing; the camvid and sr cases read its real images")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    print("| data set | images | pipeline, first epoch img/s | pipeline, cached img/s "
          "| plain OpenCV loop img/s | speed-up (first / cached) | training step img/s "
          "| first epoch / step |")
    print("|---|---|---|---|---|---|---|---|")
    for case in args.cases:
        result = results[case] = CASES[case](args)
        loop = result["plain_loop"]
        print(f"| {case} | {result['images']} | {result['pipeline']:.1f} | "
              f"{result['pipeline_cached']:.0f} | {loop:.1f} | "
              f"{result['pipeline'] / loop:.1f}x / {result['pipeline_cached'] / loop:.0f}x | "
              f"{result['train_step']:.1f} | {result['pipeline'] / result['train_step']:.0f}x |",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
