"""Images per second of the input pipelines (interferograms, CamVid, super-resolution),
next to the seeds' plain OpenCV loops and one training step of the matching model."""

import time
from pathlib import Path

from tfseg.benchmarking.machine import time_calls
from tfseg.config import PreprocessConfig, SyntheticSpec
from tfseg.utils.errors import TfsegError

# tfseg modules that load TensorFlow are imported inside the jobs that use them, which run in
# child processes: the parent never loads TensorFlow, and each child only what its job needs.


def run_pipeline(name, data_dir, work_dir, frames, limit):
    """Images per second of one input pipeline: in a first epoch (parallel decode and
    preprocessing in tf.data maps) and in later ones (served from its cache), next to a plain
    Python loop doing the same work with OpenCV one image at a time (the seeds' loaders, which
    redo everything every epoch) and to what one training step of the matching model consumes.
    """
    data_dir, work_dir = Path(data_dir), Path(work_dir)
    if name == "interferograms":
        return interferogram_pipeline(work_dir, frames)
    if not data_dir.is_dir():
        raise TfsegError(f"{data_dir}: missing; the {name} pipeline reads its real images")
    return camvid_pipeline(data_dir, limit) if name == "camvid" else sr_pipeline(data_dir,
                                                                                limit)


def images_per_second(iterate, count):
    """Images per second of `iterate()` (which yields `count` images), after one warm-up."""
    iterate()
    started = time.perf_counter()
    iterate()
    return count / (time.perf_counter() - started)


def pipeline_rates(dataset, plain_loop, count, train_step, batch_size):
    """The figures of a data set whose tf.data pipeline yields `count` frames per pass,
    drawn in batches of `batch_size` as the training step consumes them."""
    def iterate(data):
        def run():
            for _ in data.batch(batch_size).prefetch(4):
                pass
        return run

    return {"images": count, "pipeline_img_s": images_per_second(iterate(dataset), count),
            "cached_img_s": images_per_second(iterate(dataset.cache()), count),
            "plain_loop_img_s": images_per_second(plain_loop, count),
            "train_step_img_s": train_step}


def interferogram_pipeline(work_dir, frames):
    """Synthetic 3072x3072 8-bit BMP frames (written into `work_dir` once per frame count),
    3x3 blur, background of every 10th frame, CLAHE (clip 5, tiles 20), resize to 1024x1024
    (the seed's ICNet path)."""
    import cv2
    import numpy as np

    from tfseg.data import interferograms, preprocess

    folder = bmp_sequence(work_dir, frames)
    preprocessing = preprocess.Preprocessing(steps=PreprocessConfig(
        blur=3, background_every=10, clahe_clip_limit=5.0, clahe_tile_grid=20),
        resize_to=[1024, 1024])
    records = interferograms.read_sequence(folder)
    background = interferograms.sequence_background(records, preprocessing)
    dataset = interferograms.folder_frames(records, {records[0].path.parent: background},
                                           preprocessing)
    clahe = cv2.createCLAHE(clipLimit=5.0, tileGridSize=(20, 20))

    def plain_loop():  # the seed's loader: numpy in float64, one frame at a time
        for record in records:
            frame = cv2.blur(cv2.imread(str(record.path), cv2.IMREAD_GRAYSCALE), (3, 3))
            image = np.clip(frame - 0.9 * background, 0, 255).round().astype(np.uint8)
            cv2.resize(clahe.apply(image), (1024, 1024), interpolation=cv2.INTER_CUBIC)
            mask = preprocess.boxes_to_mask(interferograms.pixel_boxes(record, frame.shape),
                                            *frame.shape)
            cv2.resize(mask, (1024, 1024), interpolation=cv2.INTER_NEAREST)

    return pipeline_rates(dataset, plain_loop, len(records),
                          train_step_rate("icnet", (1024, 1024), 1, 2, batch_size=2, width=0.5),
                          batch_size=2)


def bmp_sequence(work_dir, frames, size=3072):
    """The folder of one synthetic sequence of `frames` size x size 8-bit BMP interferograms
    (80 fringes across 3072 pixels), written under `work_dir` the first time and reused
    after."""
    from tfseg.data.synthetic_folders import write_sequences

    root = Path(work_dir) / f"interferograms-{size}-{frames}-frames"
    if not root.exists():
        write_sequences(root, SyntheticSpec(height=size, width=size, frames_per_sequence=frames,
                                            fringes=80.0 * size / 3072), sequences=1)
    return root / "sequence_000"


def camvid_pipeline(data_dir, limit):
    """The SegNet train split of CamVid (480x360 PNG image + label PNG, RGB float)."""
    import cv2
    import numpy as np

    from tfseg.data import camvid

    root = data_dir / "camvid"
    dataset = camvid.read_segnet(root, "train").take(limit)
    pairs = camvid.segnet_pairs(root, "train")[:limit]

    def plain_loop():
        for image, label in pairs:
            cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB).astype(np.float32)
            cv2.imread(str(label), cv2.IMREAD_UNCHANGED)

    return pipeline_rates(dataset, plain_loop, limit,
                          train_step_rate("linknet", (320, 480), 3, 12, batch_size=8),
                          batch_size=8)


def sr_pipeline(data_dir, limit):
    """Random 288x288 patches of T91 + BSD200 with LR by Gaussian blur + bicubic x4. Patches
    are random per epoch, so the pipeline caches the decoded HR images, not patches: a pass
    visits every usable image once, the first one decoding them."""
    import cv2
    import numpy as np

    from tfseg.data import super_resolution

    folders = [data_dir / "sr" / "t91", data_dir / "sr" / "bsd200"]
    skipped = []
    dataset = super_resolution.training_pairs(folders, factor=4, patch_size=288,
                                              skipped=skipped)
    paths = [p for p in super_resolution.list_hr_images(folders) if str(p) not in skipped]
    rng = np.random.default_rng(0)

    def plain_loop():
        for path in paths[:limit]:
            image = cv2.imread(str(path))
            y, x = (rng.integers(0, s - 288 + 1) for s in image.shape[:2])
            cv2.resize(cv2.GaussianBlur(image[y:y + 288, x:x + 288], (7, 7), 1.0), (72, 72),
                       interpolation=cv2.INTER_CUBIC)

    batch_size = 8   # the training step's below
    stream = iter(dataset.batch(batch_size).prefetch(4))

    def one_pass():
        batches = -(-len(paths) // batch_size)
        started = time.perf_counter()
        for _ in range(batches):
            next(stream)
        return batches * batch_size / (time.perf_counter() - started)

    first, cached = one_pass(), one_pass()
    return {"images": len(paths), "pipeline_img_s": first, "cached_img_s": cached,
            "plain_loop_img_s": images_per_second(plain_loop, min(limit, len(paths))),
            "train_step_img_s": train_step_rate("sr_johnson", (72, 72), 3, None,
                                                batch_size=8, loss="pixel")}


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
    timing = time_calls(lambda: float(step()), warmup=0, repeats=5)
    return batch_size / timing["median_s"]
