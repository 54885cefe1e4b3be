"""TensorFlow Datasets builders for local data: CamVid (SegNet layout), the SR image folders
and interferogram sequences.

Nothing is downloaded: each builder reads its `manual_dir` (the folders of data/README.md) and
writes TFRecord shards under `data_dir`. Build once, offline:

    from tfseg.data import tfds_builders
    builder = tfds_builders.prepare("camvid_segnet", manual_dir="../shared/data/camvid",
                                    data_dir="~/tensorflow_datasets")

which runs, for the builder class of that name,

    builder = tfds_builders.CamvidSegnet(data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir, try_download_gcs=False))

Then train on it with `data.source: tfds` (`tfseg.data.tfds_source`: `data.tfds.name:
camvid_segnet`, `ignore_ids: [11]`; `sr_images` for super-resolution; `interferograms` with
`image_key: frame`, `mask_key: boxes`), or load it like any TFDS data set (importing this
module registers the names):

    import tensorflow_datasets as tfds
    examples = tfds.load("camvid_segnet", split="train", data_dir=data_dir, download=False)
    images = tfds.load("sr_images", split="validation", data_dir=data_dir, download=False)
    frames = tfds.load("interferograms", split="train", data_dir=data_dir, download=False)

or use `builder.as_dataset(split=...)`. The stored masks keep CamVid's raw ids (11 = void);
`data.tfds.ignore_ids: [11]` maps void to the ignore label, as `tfseg.data.camvid.read_segnet`
does.

Adding a builder: a `GeneratorBasedBuilder` subclass with
`VERSION`, `MANUAL_DOWNLOAD_INSTRUCTIONS` (the expected folder layout), `_info` (features,
`supervised_keys`), `_split_generators` that lists and checks each split's files with the
module's reader (raising `TfsegError` naming a bad file) and `_generate_examples` yielding
(key, feature dict) per file, keyed by its path relative to `manual_dir`; then an entry in
`BUILDERS`.
"""

import importlib.util
from pathlib import Path
from typing import ClassVar

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tfseg.data import camvid, interferograms, super_resolution
from tfseg.data.sequences import find_sequences, read_frame
from tfseg.utils.errors import TfsegError


class CamvidSegnet(tfds.core.GeneratorBasedBuilder):
    """CamVid road scenes in the SegNet split: 367 train and 101 validation 480x360 images."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "SegNet split; masks hold label ids 0..10 and 11 = void."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "manual_dir holds the SegNet layout: train/ and val/ with RGB images, trainannot/ and "
        "valannot/ with 8-bit single-channel label PNGs of the same names.")
    SPLIT_FOLDERS: ClassVar[dict[str, str]] = {"train": "train", "validation": "val"}

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description="CamVid (Brostow et al. 2009), SegNet tutorial split, 11 classes + void.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "segmentation_mask": tfds.features.LabeledImage(
                    labels=[*camvid.CAMVID_CLASSES, "Void"], shape=(None, None, 1)),
                "file_name": tfds.features.Text(),
            }),
            supervised_keys=("image", "segmentation_mask"),
            homepage="http://mi.eng.cam.ac.uk/research/projects/VideoRec/CamVid/",
        )

    def _split_generators(self, dl_manager):
        root = Path(dl_manager.manual_dir)
        return {split: self._generate_examples(root, camvid.segnet_pairs(root, folder))
                for split, folder in self.SPLIT_FOLDERS.items()}

    def _generate_examples(self, root, pairs):
        for image, label in pairs:
            name = image.relative_to(root).as_posix()
            yield name, {"image": _image_value(image), "segmentation_mask": label,
                         "file_name": name}


class SrImages(tfds.core.GeneratorBasedBuilder):
    """HR images for super-resolution: train = T91 + BSD200, validation = Set5."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "T91 and BSD200 for training, Set5 for validation."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "manual_dir holds t91/ (BMP), bsd200/ and set5/ (PNG) folders of RGB images.")
    SPLIT_FOLDERS: ClassVar[dict[str, tuple]] = {
        "train": ("t91", "bsd200"), "validation": ("set5",)}

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description="HR images for SR training (T91, BSD200) and evaluation (Set5).",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "file_name": tfds.features.Text(),
            }),
        )

    def _split_generators(self, dl_manager):
        root = Path(dl_manager.manual_dir)
        splits = {}
        for split, folders in self.SPLIT_FOLDERS.items():
            paths = super_resolution.list_hr_images([root / folder for folder in folders])
            super_resolution.image_sizes(paths)   # names an unreadable image before writing
            splits[split] = self._generate_examples(root, paths)
        return splits

    def _generate_examples(self, root, paths):
        for path in paths:
            name = path.relative_to(root).as_posix()
            yield name, {"image": _image_value(path), "file_name": name}


class Interferograms(tfds.core.GeneratorBasedBuilder):
    """8-bit interferogram sequences with their sample boxes (one split, "train": split the
    frames as the training recipe does)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Grey frames, pixel boxes (x, y, w, h), sequence and file names."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "manual_dir holds one folder per sequence (or is one): 8-bit BMP, PNG or TIFF frames "
        "with their boxes in the folder's rois.json or in YOLO .txt files beside the frames.")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description="Interferometric microscope frame sequences with sample boxes.",
            features=tfds.features.FeaturesDict({
                "frame": tfds.features.Image(shape=(None, None, 1)),
                "boxes": tfds.features.Tensor(shape=(None, 4), dtype=tf.int32),
                "sequence": tfds.features.Text(),
                "file_name": tfds.features.Text(),
            }),
        )

    def _split_generators(self, dl_manager):
        root = Path(dl_manager.manual_dir)
        frames = [frame for folder in find_sequences(root)
                  for frame in interferograms.read_sequence(folder)]
        return {"train": self._generate_examples(root, frames)}

    def _generate_examples(self, root, frames):
        for frame in frames:
            image = read_frame(frame.path)
            if image.dtype != "uint8":
                raise TfsegError(f"{frame.path}: {image.dtype} frame; this builder stores 8-bit "
                                 f"frames (read 16-bit ones with data.source: interferograms)")
            boxes = interferograms.pixel_boxes(frame, image.shape)
            name = frame.path.relative_to(root).as_posix()
            yield name, {"frame": image[..., None],
                         "boxes": np.array(boxes, np.int32).reshape(-1, 4),
                         "sequence": frame.path.parent.relative_to(root).as_posix(),
                         "file_name": name}


def _image_value(path):
    """What an Image feature stores for an image file: a PNG path as it is (TFDS keeps its
    bytes), any other format decoded to RGB (TFDS encodes it as PNG)."""
    if path.suffix.lower() == ".png":
        return path
    return camvid.decode_rgb(str(path)).numpy()


BUILDERS = {"camvid_segnet": CamvidSegnet, "sr_images": SrImages,
            "interferograms": Interferograms}


def prepare(name, *, manual_dir, data_dir):
    """Builds data set `name` of `BUILDERS` offline from `manual_dir` into `data_dir` (paths
    may start with "~").

    An existing build of the same version is reused.

    Returns:
        The prepared `tfds.core.DatasetBuilder` (`builder.as_dataset(split=...)`).

    Raises:
        TfsegError: a missing `manual_dir`, a bad file in it (named), or a missing
            `importlib_resources` package.
    """
    if name not in BUILDERS:
        raise ValueError(f"unknown TFDS builder {name!r}; valid: {sorted(BUILDERS)}")
    if importlib.util.find_spec("importlib_resources") is None:
        # TFDS 4.9.10 imports it when building any data set but does not require it for
        # Python >= 3.9 (tensorflow/datasets#11212).
        raise TfsegError("building a TFDS data set needs the importlib_resources package, "
                         "which tensorflow-datasets 4.9.10 uses without installing it: "
                         "pip install importlib_resources")
    builder_class = BUILDERS[name]
    manual_dir = Path(manual_dir).expanduser()   # TFDS takes "~" literally
    if not manual_dir.is_dir():
        raise TfsegError(f"{manual_dir}: no such folder; "
                         f"{builder_class.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    builder = builder_class(data_dir=str(Path(data_dir).expanduser()))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual_dir), try_download_gcs=False))
    return builder
