"""CamVid road scenes -> (image, mask) examples, class weights and the LinkNet normalisation.

Two on-disk layouts are read (data/README.md):

- SegNet layout: `<root>/<split>/*.png` RGB images and `<root>/<split>annot/*.png` 8-bit
  single-channel label ids of the same file name (0..10 classes, 11 = void), e.g. split "train"
  or "val". `read_segnet(root, split)`.
- The original colour-coded release (and its common re-packagings): label images are RGB colour
  codes, named `<image stem><label_suffix>.png` (`0001TP_006690_L.png`), and a colour table
  (`read_colour_table`) maps each colour to a class. `read_colour_coded(image_dir, label_dir,
  table)`.

Every example is (image float32 (H, W, 3) RGB 0..255, mask uint8 (H, W)), decoded in the tf
graph in parallel and in file-name order. Void pixels get `ignore_label` (255 by default), which
the loss (`ignore_class`) and the metrics skip. Images are decoded by TensorFlow, so they are RGB;
`cv2.imread` of the same file gives BGR.

The whole split is checked once, before the data set is returned: a missing or extra
annotation, an empty folder, a file of another type, an unreadable image, a label of another size
than its image, a label that is not an 8-bit PNG of the expected channels, (SegNet layout) a
label id neither void (11) nor below the number of classes, or an image of another size than
the one asked for raises `TfsegError` naming the file. The check decodes every file once, in
parallel (a few seconds for the 367 CamVid training pairs on 2 cores).

The module also holds the image-folder helpers the other readers share (`list_files`,
`decode_rgb`, `scan_files`).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfseg.utils.errors import TfsegError

CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
                  "Car", "Pedestrian", "Bicyclist")
CAMVID_VOID_ID = 11
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
LABEL_SUFFIXES = (".png",)   # lossless, and its header tells the bit depth
VOID_NAMES = ("void", "unlabelled", "unlabeled")

# Per-channel (mean, std) pairs on the 0..255 RGB scale: normalised = (pixel - mean) / std.
NORMALIZATIONS = {
    # The LinkNet blog recipe: Caffe's ImageNet mean subtracted, then divided by 255.
    "imagenet_mean": ((123.68, 116.779, 103.939), (255.0, 255.0, 255.0)),
    # torchvision's ImageNet statistics (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225), x 255.
    "imagenet_mean_std": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    # Pixels scaled to 0..1.
    "unit_range": ((0.0, 0.0, 0.0), (255.0, 255.0, 255.0)),
}


# === Image folders (shared by the CamVid, super-resolution and TFDS readers) ===

def list_files(folder, suffixes, *, what="image"):
    """Files of `folder` sorted by name; every file must have one of `suffixes`.

    Hidden files (`.DS_Store`) and subfolders are ignored. Raises TfsegError for a missing
    folder, a folder without files, or a file of another type.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise TfsegError(f"{folder}: no such folder (expected {what} files "
                         f"{'/'.join(suffixes)})")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise TfsegError(f"{folder}: empty folder (expected {what} files {'/'.join(suffixes)})")
    for path in files:
        if path.suffix.lower() not in suffixes:
            raise TfsegError(f"{path}: unknown file type {path.suffix or '(none)'!r} in a "
                             f"folder of {what} files (expected {'/'.join(suffixes)})")
    return files


def decode_rgb(path):
    """tf: the image file at `path` (BMP, PNG, JPEG or GIF) as uint8 (H, W, 3) RGB."""
    return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)


def scan_files(paths, summarise):
    """Runs `summarise` on every file (or tuple of files) of `paths`, decoding in parallel.

    Args:
        paths: list of Path, or of tuples of Paths (one row per example).
        summarise: tf function of the path string tensor(s) returning a tuple of tensors.

    Returns:
        One tuple of numpy values per row, in order.

    Raises:
        TfsegError naming the file TensorFlow cannot read, with its message.
    """
    rows = [tuple(map(str, row)) if isinstance(row, tuple) else (str(row),) for row in paths]
    columns = tuple(list(column) for column in zip(*rows))
    scans = tf.data.Dataset.from_tensor_slices(columns).enumerate().map(
        lambda index, row: (index, summarise(*row)), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True).ignore_errors()
    results = dict(scans.as_numpy_iterator())
    if len(results) < len(rows):
        failed = next(row for index, row in enumerate(rows) if index not in results)
        for path in failed:    # eagerly, one file at a time, to name it
            try:
                tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
            except tf.errors.OpError as error:   # keep "Invalid PNG..." of "{{node}} ... [Op:]"
                reason = error.message.split("}}")[-1].split("[Op:")[0].strip()
                raise TfsegError(f"{path}: unreadable image ({reason})") from None
        raise TfsegError(f"{', '.join(failed)}: unreadable")
    return [results[index] for index in range(len(rows))]


def png_format(path):
    """(bit depth, channels) of a PNG file, from its header; TfsegError for another format.

    Needed because tf.io.decode_png(dtype=uint8) silently rescales 16-bit label ids to 0.
    """
    try:
        with open(path, "rb") as file:
            header = file.read(26)
    except OSError as error:
        raise TfsegError(f"{path}: unreadable ({error.strerror})") from None
    if len(header) < 26 or header[:8] != b"\x89PNG\r\n\x1a\n":
        raise TfsegError(f"{path}: not a PNG file")
    return header[24], {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(header[25], 0)


# === Pairing and checking ===

def pair_files(image_dir, label_dir, *, label_suffix=""):
    """(image, label) paths matched by name: label `<image stem><label_suffix>.png`.

    Raises TfsegError for an image without its label, a label without its image, two images of
    one name, an empty or missing folder or a file of another type.
    """
    images = list_files(image_dir, IMAGE_SUFFIXES)
    labels = {p.stem: p for p in list_files(label_dir, LABEL_SUFFIXES, what="label")}
    by_stem = {}
    for image in images:
        if image.stem in by_stem:
            raise TfsegError(f"{image}: two images named {image.stem!r} "
                             f"({by_stem[image.stem].name} and {image.name})")
        by_stem[image.stem] = image
    pairs = []
    for stem, image in by_stem.items():
        label = labels.pop(stem + label_suffix, None)
        if label is None:
            raise TfsegError(f"{image}: no annotation "
                             f"{Path(label_dir) / (stem + label_suffix + '.png')}")
        pairs.append((image, label))
    if labels:
        extra = min(labels.values())
        raise TfsegError(f"{extra}: annotation without an image in {image_dir} (expected an "
                         f"image named {extra.stem.removesuffix(label_suffix) or extra.stem}"
                         f" with suffix {'/'.join(IMAGE_SUFFIXES)})")
    return pairs


def check_pairs(pairs, *, label_channels, num_classes=None, void_id=None, size=None):
    """Decodes every pair once; TfsegError naming the first bad file.

    Args:
        pairs: list of (image path, label path).
        label_channels: tuple of int. Channel counts a label PNG may have (1 for ids, 3 or 4
            for colour codes).
        num_classes: int or None. Label ids must be below it (or `void_id`); None skips
            the check.
        void_id: int or None. The id of void pixels, allowed beside the classes.
        size: (height, width) or None. The size every image must have (the run's
            data.height x data.width); None accepts any.
    """
    for _, label in pairs:
        depth, channels = png_format(label)
        if depth != 8 or channels not in label_channels:
            raise TfsegError(f"{label}: {depth}-bit PNG with {channels} channel(s); expected an "
                             f"8-bit label with {' or '.join(map(str, label_channels))} "
                             f"channel(s)")

    def summarise(image_path, label_path):
        label = tf.io.decode_png(tf.io.read_file(label_path), channels=0)
        classes = label if void_id is None else tf.where(label == void_id, tf.zeros_like(label),
                                                          label)
        return (tf.shape(decode_rgb(image_path))[:2], tf.shape(label)[:2],
                tf.reduce_max(classes))

    for (image, label), (image_size, label_size, top) in zip(pairs, scan_files(pairs, summarise)):
        if tuple(image_size) != tuple(label_size):
            raise TfsegError(f"{label}: label is {label_size[0]}x{label_size[1]} (HxW) but its "
                             f"image {image.name} is {image_size[0]}x{image_size[1]}")
        if size is not None and tuple(image_size) != tuple(size):
            raise TfsegError(f"{image}: image is {image_size[0]}x{image_size[1]} (HxW); "
                             f"expected {size[0]}x{size[1]} (data.height x data.width; "
                           f"data.resize_frames: true resizes)")
        if num_classes is not None and top >= num_classes:
            raise TfsegError(f"{label}: label id {top} outside the classes 0..{num_classes - 1} "
                             f"(model.num_classes {num_classes}) and not void ({void_id})")


def check_ignore_label(ignore_label, num_classes):
    """ValueError unless `ignore_label` is a uint8 value that is not a class id."""
    if (isinstance(ignore_label, bool) or not isinstance(ignore_label, (int, np.integer))
            or not num_classes <= ignore_label <= 255):
        raise ValueError(f"ignore_label must be an integer in [{num_classes}, 255] (not a class "
                         f"id, and fitting a uint8 mask); received ignore_label={ignore_label!r}")


def void_to_ignore(mask, void_id, ignore_label):
    """tf: `mask` with every `void_id` pixel set to `ignore_label` (same dtype)."""
    return tf.where(mask == tf.cast(void_id, mask.dtype), tf.cast(ignore_label, mask.dtype), mask)


# === SegNet layout ===

def segnet_pairs(root, split, size=None, num_classes=len(CAMVID_CLASSES)):
    """Checked (image, label) paths of `<root>/<split>` and `<root>/<split>annot`; `size`
    (height, width), when given, is the size every image must have; label ids are below
    `num_classes` or void."""
    root = Path(root)
    pairs = pair_files(root / split, root / f"{split}annot")
    check_pairs(pairs, label_channels=(1,), num_classes=num_classes, void_id=CAMVID_VOID_ID,
                size=size)
    return pairs


def read_segnet(root, split, *, num_classes=len(CAMVID_CLASSES), ignore_label=255, size=None):
    """CamVid in the SegNet layout as a tf.data set of single examples.

    Args:
        root: path. Folder holding `<split>/` and `<split>annot/`.
        split: str. Folder name of the split: "train", "val" or "test".
        num_classes: int. Label ids must be below it, or void. Defaults to CamVid's 11.
        ignore_label: int. Mask value of void (id 11) pixels. Defaults to 255.
        size: (height, width) or None. The size every image must have; None (the default)
            accepts any.

    Returns:
        tf.data.Dataset of (image float32 (H, W, 3) RGB 0..255, mask uint8 (H, W)) with ids
        0..num_classes - 1 and `ignore_label`, in file-name order.

    Raises:
        TfsegError naming the file, for the problems listed in the module docstring.
    """
    check_ignore_label(ignore_label, num_classes)
    pairs = segnet_pairs(root, split, size, num_classes)

    def decode(image_path, label_path):
        mask = tf.io.decode_png(tf.io.read_file(label_path), channels=1)[..., 0]
        return (tf.cast(decode_rgb(image_path), tf.float32),
                void_to_ignore(mask, CAMVID_VOID_ID, ignore_label))

    return _dataset_of(pairs, decode)


def _dataset_of(pairs, decode):
    paths = tuple(list(map(str, column)) for column in zip(*pairs))
    return tf.data.Dataset.from_tensor_slices(paths).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


# === Colour-coded layout ===

@dataclass(frozen=True, eq=False)
class ColourTable:
    """Colour code -> class id of colour-coded label images.

    Class ids are given in table order to the entries not named void (`VOID_NAMES`, any case);
    void entries, and any colour missing from the table, get `void_id` = len(class_names).

    Args:
        class_names: tuple of str. One per class id.
        colours: uint8 array (K, 3). RGB colour of each entry.
        ids: uint8 array (K,). Class id (or `void_id`) of each entry.
    """

    class_names: tuple
    colours: np.ndarray
    ids: np.ndarray

    @property
    def void_id(self):
        """The id of void and unknown colours: the number of classes."""
        return len(self.class_names)

    @classmethod
    def from_entries(cls, entries):
        """A table from [(name, (r, g, b)), ...] in class order; void names get `void_id`.

        Raises ValueError for a colour or a name listed twice, or a count of classes (non-void
        entries) outside 1..255.
        """
        for index, (name, colour) in enumerate(entries):
            for other, other_colour in entries[:index]:
                if tuple(colour) == tuple(other_colour) or name.lower() == other.lower():
                    raise ValueError(f"entries {other!r} {tuple(other_colour)} and {name!r} "
                                     f"{tuple(colour)} repeat a name or a colour")
        names = [name for name, _ in entries if name.lower() not in VOID_NAMES]
        if not 1 <= len(names) <= 255:
            raise ValueError(f"a colour table holds 1 to 255 classes besides void; received "
                             f"{len(names)}")
        ids = [len(names) if name.lower() in VOID_NAMES else names.index(name)
               for name, _ in entries]
        return cls(tuple(names), np.asarray([colour for _, colour in entries], np.uint8),
                   np.asarray(ids, np.uint8))


CAMVID_COLOURS = ColourTable.from_entries([
    ("Sky", (128, 128, 128)), ("Building", (128, 0, 0)), ("Pole", (192, 192, 128)),
    ("Road", (128, 64, 128)), ("Pavement", (60, 40, 222)), ("Tree", (128, 128, 0)),
    ("SignSymbol", (192, 128, 128)), ("Fence", (64, 64, 128)), ("Car", (64, 0, 128)),
    ("Pedestrian", (64, 64, 0)), ("Bicyclist", (0, 128, 192)), ("Unlabelled", (0, 0, 0))])


def read_colour_table(path):
    """Reads a colour table file into a `ColourTable`.

    Accepted, one entry per line, in class order:
    - `r g b name`, whitespace separated (the CamVid release's `label_colors.txt`);
    - `r,g,b,name` or `name,r,g,b` CSV (the common CamVid `class_dict.csv` is `name,r,g,b`).
    A first line without three integers (`name,r,g,b`) is a header and skipped; blank lines
    and lines starting with `#` are skipped. Entries named Void/Unlabelled map to void.

    Raises:
        TfsegError naming the file (and line): unreadable file, a malformed line, a value
        outside 0..255, a colour or name listed twice, or no entries.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise TfsegError(f"{path}: unreadable colour table ({error})") from None
    entries, header_allowed = [], True
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = [f.strip() for f in text.split(",")] if "," in text else text.split(None, 3)
        entry = _colour_entry(fields)
        if entry is None and not header_allowed:
            raise TfsegError(f"{path}:{number}: expected 'r g b name', 'r,g,b,name' or "
                             f"'name,r,g,b' with r, g, b in 0..255; got {text!r}")
        header_allowed = False
        if entry is not None:
            entries.append(entry)
    if not entries:
        raise TfsegError(f"{path}: no colour entries (expected lines 'r g b name')")
    try:
        return ColourTable.from_entries(entries)
    except ValueError as error:
        raise TfsegError(f"{path}: {error}") from None


def _colour_entry(fields):
    """(name, (r, g, b)) from the fields of one line, or None when they are not an entry."""
    if len(fields) != 4:
        return None
    for colour, name in ((fields[:3], fields[3]), (fields[1:], fields[0])):
        if all(f.isdigit() and int(f) <= 255 for f in colour) and name:
            return name, tuple(int(f) for f in colour)
    return None


def colours_to_ids(label, table):
    """tf: RGB colour codes (H, W, 3) uint8 -> class ids (H, W) uint8.

    Vectorised in the graph: each colour is packed into one int32 (r << 16 | g << 8 | b) and
    looked up with a binary search in the table's sorted packed colours. Colours not in the
    table get `table.void_id`.
    """
    packed_table = _pack(table.colours.astype(np.int32))
    order = np.argsort(packed_table)
    keys = tf.constant(packed_table[order], tf.int32)
    values = tf.constant(table.ids[order], tf.uint8)
    colours = tf.cast(label[..., :3], tf.int32)
    packed = _pack(colours)
    flat = tf.reshape(packed, [1, -1])
    position = tf.minimum(tf.searchsorted(keys[None], flat), len(order) - 1)[0]
    found = tf.gather(keys, position) == flat[0]
    ids = tf.where(found, tf.gather(values, position), tf.constant(table.void_id, tf.uint8))
    return tf.reshape(ids, tf.shape(packed))


def _pack(colours):
    """r << 16 | g << 8 | b of int32 (..., 3) colours, numpy or tf alike."""
    return colours[..., 0] * 65536 + colours[..., 1] * 256 + colours[..., 2]


def colour_coded_pairs(image_dir, label_dir, *, label_suffix="_L"):
    """Checked (image, label) paths of a colour-coded layout (labels `<stem>_L.png`)."""
    pairs = pair_files(image_dir, label_dir, label_suffix=label_suffix)
    check_pairs(pairs, label_channels=(3, 4))
    return pairs


def read_colour_coded(image_dir, label_dir, table, *, label_suffix="_L", ignore_label=255):
    """CamVid with colour-coded labels as a tf.data set of single examples.

    Args:
        image_dir: path. Folder of RGB images.
        label_dir: path. Folder of RGB(A) colour-coded PNG labels `<image stem><label_suffix>`.
        table: `ColourTable` (from `read_colour_table`, or `CAMVID_COLOURS`).
        label_suffix: str. Label name = image stem + this. Defaults to "_L" (CamVid release).
        ignore_label: int. Mask value of void and unknown colours. Defaults to 255.

    Returns:
        tf.data.Dataset of (image float32 (H, W, 3) RGB 0..255, mask uint8 (H, W)) with ids
        0..len(table.class_names) - 1 and `ignore_label`, in file-name order.
    """
    if not isinstance(table, ColourTable):
        raise TypeError(f"table must be a ColourTable (see read_colour_table); "
                         f"received {type(table).__name__}")
    check_ignore_label(ignore_label, len(table.class_names))
    pairs = colour_coded_pairs(image_dir, label_dir, label_suffix=label_suffix)

    def decode(image_path, label_path):
        label = tf.io.decode_png(tf.io.read_file(label_path), channels=3)
        return (tf.cast(decode_rgb(image_path), tf.float32),
                void_to_ignore(colours_to_ids(label, table), table.void_id, ignore_label))

    return _dataset_of(pairs, decode)


# === Normalisation ===

def normalization(name):
    """The per-channel (mean, std) of a named normalisation (`NORMALIZATIONS`), on 0..255 RGB.

    Every normalisation here is (pixel - mean) / std, so it runs inside the model:
    `tfseg.models.build(..., mean=mean, std=std)` adds a Rescaling layer with scale = 1 / std
    and offset = -mean / std, which computes pixel * scale + offset = (pixel - mean) / std.
    "imagenet_mean" (the LinkNet blog's ImageNet mean subtraction then /255) is the pair
    (mean=(123.68, 116.779, 103.939), std=(255, 255, 255)).
    """
    if name not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {name!r}; valid: {sorted(NORMALIZATIONS)}")
    mean, std = NORMALIZATIONS[name]
    return list(mean), list(std)


def normalize(images, mean, std):
    """tf: (images - mean) / std per channel, for a tf.data map; the model-side equivalent is
    the Rescaling layer of `tfseg.models.build(mean=..., std=...)`."""
    images = tf.convert_to_tensor(images, tf.float32)
    return (images - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
