"""Synthetic interferogram sequences written as folders in the on-disk format of real ones,
the format `tfseg.data.interferograms` reads: one folder per sequence holding its frames
(`frame_0000.bmp`, or `.png` for 16-bit frames: BMP has no 16-bit grey format), `rois.json`
(the labelling tool's ROI list) and a YOLO text file beside each frame.

`tools/make_interferograms.py` is its command line; `python -m tfseg.bench --pipelines`
writes its 3072x3072 frames with it, and the robustness scorecard (`tfseg.deploy.robustness`)
the independent renderer's set (`tfseg.data.holography`).
"""

from pathlib import Path

import cv2
import numpy as np

from tfseg.data.interferograms import sequence_seed
from tfseg.data.labels import write_roi_json, write_yolo
from tfseg.data.synthetic import generate_sequence
from tfseg.utils.errors import TfsegError
from tfseg.utils.files import replacing_folder


def write_sequences(out, spec, *, sequences, seed=0, render=generate_sequence):
    """Writes `sequences` synthetic sequences to the new folder `out`.

    Sequence i is the one the synthetic source renders as training sequence i for `seed`
    (`tfseg.data.interferograms.sequence_seed`), so the set is the same on every run. The
    folder is built under a temporary name and renamed when complete
    (`tfseg.utils.files.replacing_folder`): a failed or killed run leaves no `out`.

    Args:
        out: path. The folder to write; it must not exist.
        spec: `tfseg.config.SyntheticSpec`. Frame size, frames per sequence, fringes, bit
            depth...
        sequences: int. Number of sequence folders, `sequence_000`, `sequence_001`...
        seed: int. Defaults to 0.
        render: callable (spec, seed) -> (frames (T, H, W), boxes per frame): the renderer,
            `tfseg.data.synthetic.generate_sequence` (the default) or another such as
            `tfseg.data.holography.render_sequence` (with its own spec).

    Raises:
        TfsegError: `out` exists, or cannot be written (a file in the way, a full disk).
        ValueError: `sequences` is below 1.
    """
    out = Path(out)
    if out.exists():
        raise TfsegError(f"{out} already exists; choose a new folder")
    if sequences < 1:
        raise ValueError(f"sequences must be >= 1; received {sequences!r}")
    try:
        with replacing_folder(out) as partial:
            for sequence in range(sequences):
                frames, boxes = render(spec, sequence_seed(seed, "train", sequence))
                # Each sequence at its own depth (a bit-depth pair draws one per sequence).
                suffix = ".bmp" if frames.dtype == np.uint8 else ".png"
                _write_sequence(partial / f"sequence_{sequence:03d}", frames, boxes, suffix)
    except OSError as error:
        raise TfsegError(f"{out}: cannot write the data set there "
                         f"({error.strerror or error})") from None


def _write_sequence(folder, frames, boxes, suffix):
    """One sequence folder: its frames, a YOLO file beside each and rois.json."""
    folder.mkdir()
    entries = []
    for index, (frame, frame_boxes) in enumerate(zip(frames, boxes)):
        name = f"frame_{index:04d}{suffix}"
        if not cv2.imwrite(str(folder / name), frame):
            raise OSError(f"OpenCV could not write {name}")
        write_yolo(folder / f"frame_{index:04d}.txt", frame_boxes, *frame.shape)
        entries.append((name, frame_boxes))
    write_roi_json(folder / "rois.json", entries)
