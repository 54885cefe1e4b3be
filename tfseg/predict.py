"""`python -m tfseg.predict`: segment or upscale images, folders of images and videos with an
exported tfseg model, each frame preprocessed as the export's metadata says; or with a preset
(`--model preset:NAME`, run in Keras, its metadata that of its export).

    python -m tfseg.predict --model runs/<run>/export/model.onnx --input frames/ clip.avi \\
        --output predictions/ [--boxes] [--runtime opencv] [--tile 128x128] [--overlap 32]

A sequence is a folder of images (in name order), a video, or the image files named on the
command line (together, in the order given); a folder of sequence folders gives one sequence
per subfolder (as `data.path` is read in training) and their outputs go to subfolders of the
same names. With `background_every` = k the background is the mean of every k-th frame of
the sequence, as in training. Frames are named by their file stem; video frames
`<video-stem>_<frame:06d>`. Written per frame:
- segmentation: `<name>_mask.png`, uint8 class ids at the input frame's own size, aligned
  with it: the network's logits are resized back (bilinear, as `tfseg.evaluate` resizes
  them) to the frame, or to the region of it the preprocessing crops, before the argmax;
  pixels outside that crop, which the network never sees, are 255. `<name>_overlay.png`: the
  class colours blended half and half on the input frame (8-bit frames as they are, 16-bit
  ones min-max stretched to 0..255), at its size;
- super-resolution: `<name>_x<scale>.png`, uint8, per-channel histogram-matched to the input
  frame with `--match-histogram`.
With `--boxes` (segmentation models with a class named background), the samples found are
written as boxes in the two label formats (reference/DATA.md), in input-frame pixels: the
8-connected components of every class but background (as `tfseg.evaluate` counts samples,
`tfseg.tasks.samples`), each as its bounding box; components smaller than
`--min-sample-area` of the frame (default: the model's `data.min_sample_area`, 1/2000) are
specks and left out. Each output folder gets `rois.json`, the labelling tool's list of
[frame file, [[x, y, w, h], ...]] pairs (video frames by their output name), and one YOLO
`<name>.txt` per frame (`0 x_center y_center width height`, normalised; an empty file: no
sample); `tools/label_rois.py --proposals` opens them for correction. An output folder
that holds input frames is refused (labels there would be replaced).

Test-time views (`tfseg.tasks.test_time`): a segmentation model whose recipe sets
`data.augment.test_time` (its export's metadata "test_time") also runs each frame flipped (and
transposed), maps each view's class probabilities back and averages them; `--test-time`
overrides it (`none`: one pass, the network's own logits).

The model runs tile by tile (`tfseg.deploy.tiling`) when `--tile` is given or when a static model's
size differs from the preprocessed frame's.

A recurrent model (its metadata says `"recurrent": true`, e.g. icnet_temporal) carries a state
from frame to frame: the frames of each sequence run in order, the state starting from zeros
at each sequence (each folder, each subfolder of a folder of sequences, each video) and never
passing from one to the next. The image files named directly on the command line are ONE
sequence, in the order given (name them in temporal order; give sequences as folders to keep
them apart). Such a model runs whole frames at its input size (no tiles).

Frames are preprocessed by `tfseg.data.preprocess`, the code that prepared the training
frames, following the description in the export's metadata. Bit depth: an interferogram
model gets every frame in 8-bit grey levels, as in training (a 16-bit frame / 257 at its full
resolution; CLAHE still works on 0..65535), so a model trained on 8-bit frames segments
16-bit ones and the other way round (exports from before the metadata recorded "units" get
16-bit frames' own values, as they did then); models of the sources TensorFlow decodes
(CamVid, super-resolution, TFDS) were trained on 8-bit pixels, and get 16-bit frames' high
byte, as TensorFlow's decoders read them.

The model, the inputs and name clashes are checked before anything is written. Each file is
written under a hidden temporary name and renamed when complete; an unreadable frame stops the
run with its file named, and the outputs of the frames before it stay complete.
"""

import argparse
import sys
from pathlib import Path

from tfseg.cli import check_in_range, check_model_exists, parse_size, run_cli
from tfseg.deploy.inference import predict_files
from tfseg.deploy.opencv_dnn import RUNTIMES as OPENCV_RUNTIMES
from tfseg.utils.files import check_writable_folder


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m tfseg.predict", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path,
                        help="exported model: a .onnx file or a SavedModel directory; or "
                        "preset:NAME, a preset run in Keras (python -m tfseg.presets lists "
                        "them)")
    parser.add_argument("--input", required=True, nargs="+",
                        help="images, folders of images and videos")
    parser.add_argument("--output", required=True, type=Path, help="output folder")
    parser.add_argument("--runtime", choices=("onnxruntime", *OPENCV_RUNTIMES, "savedmodel"),
                        help="default: onnxruntime for .onnx, savedmodel for a directory")
    parser.add_argument("--tile", type=parse_size, help="run in HxW tiles (default: the "
                        "static model size when the frame differs from it)")
    parser.add_argument("--overlap", type=int, help="pixels shared by neighbouring tiles "
                        "(default: a quarter of the tile)")
    parser.add_argument("--boxes", action="store_true",
                        help="segmentation: also write the samples found as boxes, "
                        "rois.json per output folder and a YOLO .txt per frame")
    parser.add_argument("--min-sample-area", type=float, metavar="FRACTION",
                        help="--boxes: the smallest sample as a fraction of the frame "
                        "(default: the model's data.min_sample_area)")
    parser.add_argument("--test-time", choices=("none", "flips", "flips_and_transpose"),
                        help="segmentation: views averaged per frame (default: the model's "
                        "data.augment.test_time)")
    parser.add_argument("--match-histogram", action="store_true",
                        help="super-resolution: match each channel's histogram to the input")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    check_model_exists(args.model, "exported model (.onnx file or SavedModel folder)")
    if args.min_sample_area is not None:
        check_in_range("--min-sample-area", args.min_sample_area, 0, 1)
    check_writable_folder(args.output, "predictions")
    predict_files(args.model, args.input, args.output, runtime=args.runtime, tile=args.tile,
                  overlap=args.overlap, match_histogram=args.match_histogram,
                  boxes=args.boxes, min_sample_area=args.min_sample_area,
                  test_time=args.test_time)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
