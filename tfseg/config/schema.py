"""The run configuration's schema: one frozen dataclass per section, with defaults, ranges
and the checks that tie keys together (a failed check raises ValueError; `tfseg.config.loading`
turns it into a `ConfigError` naming the source)."""

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from tfseg.config.synthetic import SyntheticSpec


def bounded(default, low=None, high=None):
    """A dataclass field whose value (or each element of a list) must lie in [low, high];
    `check_ranges` enforces it when the section is created."""
    metadata = {"range": (low, high)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def check_ranges(section):
    """Raises ValueError naming the first field of `section` outside its `bounded` range, or
    holding a number that is not finite."""
    for item in dataclasses.fields(section):
        value = getattr(section, item.name)
        for number in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(number, float) and not math.isfinite(number):
                raise ValueError(f"{item.name}={value!r} must hold finite numbers")
        low, high = item.metadata.get("range", (None, None))
        for number in value if isinstance(value, list) else [value]:
            if (low is not None and number < low) or (high is not None and number > high):
                allowed = (f">= {low}" if high is None else f"<= {high}" if low is None
                           else f"in [{low}, {high}]")
                raise ValueError(f"{item.name}={value!r} must be {allowed}")


# The task of each network `tfseg.models` builds: the one place that says which is which
# (the config's checks, the model registry, training and validation all read it).
MODEL_TASKS = {"linknet": "segmentation", "fcn_resnet18": "segmentation",
               "fcn32_vgg16": "segmentation", "icnet": "segmentation",
               "icnet_temporal": "segmentation", "sr_johnson": "super_resolution"}
# Networks that carry a state from frame to frame: they train on clips of consecutive frames
# (`data.clips`) and run on sequences in order.
RECURRENT_MODELS = ("icnet_temporal",)


@dataclass(frozen=True)
class ModelConfig:
    """Which network to build. `options` are passed to its builder (see `tfseg.models`)."""

    name: Literal[tuple(MODEL_TASKS)] = "linknet"
    num_classes: int = bounded(2, 2, 255)   # segmentation models
    scale: int = bounded(4, 2, 8)           # super-resolution models: the upscaling factor
    input_channels: int = bounded(1, 1, 4)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        check_ranges(self)

    @property
    def task(self):
        """"super_resolution" or "segmentation" (`MODEL_TASKS`)."""
        return MODEL_TASKS[self.name]


@dataclass(frozen=True)
class SuperResolutionDataConfig:
    """`data.source: super_resolution`: HR image folders; LR inputs are computed in the graph
    (`tfseg.data.super_resolution`)."""

    train: list[str] = field(default_factory=list)        # HR folders, e.g. T91 and BSD200
    validation: list[str] = field(default_factory=list)   # whole images, e.g. Set5
    patch_size: int = bounded(288, 8)    # HR training patch side, a multiple of model.scale
    blur_sigma: float = bounded(1.0, 0.0)   # Gaussian blur before the bicubic downscale


@dataclass(frozen=True)
class TfdsDataConfig:
    """`data.source: tfds`: a TensorFlow Datasets data set already prepared in `data_dir`,
    never downloaded (`tfseg.data.tfds_source`). The project's builders (camvid_segnet,
    sr_images, interferograms: `tfseg.data.tfds_builders`) are found by name too."""

    name: str = ""       # a TFDS name, optionally with config and version: "name/config:1.0.0"
    data_dir: str = ""   # "" = TFDS's default ($TFDS_DATA_DIR, else ~/tensorflow_datasets)
    train_split: str = "train"        # a split or a slice of one, e.g. "train[:90%]"
    val_split: str = "validation"     # e.g. "train[90%:]"
    image_key: str = "image"          # the image feature (interferograms: "frame")
    # Segmentation's mask feature: class ids at the image's size, or (N, 4) pixel boxes
    # (x, y, w, h) drawn as class 1 (interferograms: "boxes"). Super-resolution has none.
    mask_key: str = "segmentation_mask"
    ignore_ids: list[int] = bounded([], 0, 255)   # mask ids that become data.ignore_label
                                                  # (camvid_segnet: [11], its void)

    def __post_init__(self):
        check_ranges(self)
        for key in ("train_split", "val_split", "image_key", "mask_key"):
            if not getattr(self, key):
                raise ValueError(f"{key} must not be empty")


@dataclass(frozen=True)
class PreprocessConfig:
    """The interferogram seed's per-frame preprocessing (each step can be switched off)."""

    blur: int = bounded(3, 0)                   # box-blur kernel size; 0 disables
    background_every: int = bounded(10, 0)      # background = mean of every k-th frame; 0 off
    background_alpha: float = bounded(0.9, 0.0, 1.0)  # input = clip(frame - alpha * bg, 0)
    clahe_clip_limit: float = bounded(0.0, 0.0)  # CLAHE clip limit; 0 disables
    clahe_tile_grid: int = bounded(20, 1)
    # [x, y, w, h] region of each frame kept before resizing (the FCN seed's column strip
    # 200:712 is [200, 0, 512, 3072]); [] keeps the whole frame.
    crop: list[int] = bounded([], 0)
    # After the resize, channels more from the demodulated fringes (tfseg.data.fringes),
    # which model.input_channels counts: two for the fringe phase's slope along x and y,
    # carrier removed; one for the log of the fringes' amplitude (less its median).
    phase_gradient: bool = False
    fringe_amplitude: bool = False

    @property
    def fringe_channels(self):
        """How many channels `phase_gradient` and `fringe_amplitude` add."""
        return 2 * self.phase_gradient + self.fringe_amplitude

    def __post_init__(self):
        check_ranges(self)
        if self.crop and (len(self.crop) != 4 or 0 in self.crop[2:]):
            raise ValueError(f"crop={self.crop} must be [] or [x, y, w, h] with w, h > 0")


@dataclass(frozen=True)
class AugmentConfig:
    """Random transforms applied inside the training step (`tfseg.data.augment`)."""

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = (
        "horizontal_and_vertical")
    transpose: bool = False   # swap rows and columns at random (square frames only)
    # Views averaged when the model is scored and run (validation, evaluate, predict;
    # tfseg.tasks.test_time): "flips" 4, "flips_and_transpose" 8 (square frames only).
    test_time: Literal["none", "flips", "flips_and_transpose"] = "none"
    crop: list[int] = bounded([], 1)   # [height, width] random window; [] = none. The network
                                       # trains at this size and validates on whole frames
    scale: list[float] = bounded([], 0.5)   # [min, max] zoom; [] = none
    brightness: float = bounded(0.0, 0.0)   # largest offset, in pixel units
    contrast: float = bounded(0.0, 0.0, 0.999)   # factor drawn in [1 - c, 1 + c]
    value_range: list[float] = field(default_factory=lambda: [0.0, 255.0])   # raw pixels

    def __post_init__(self):
        check_ranges(self)
        for key in ("crop", "scale", "value_range"):
            value = getattr(self, key)
            if value and len(value) != 2 or (key == "value_range" and not value):
                raise ValueError(f"{key}={value} must be [] or two numbers")
        if self.scale and self.scale[0] > self.scale[1]:
            raise ValueError(f"scale={self.scale} must be [min, max]")


@dataclass(frozen=True)
class ClipConfig:
    """Clips of consecutive frames of one sequence, what a recurrent model (`RECURRENT_MODELS`)
    trains on: its state is carried through a clip and gradients flow back through it
    (truncated back-propagation through time, over `length - warmup` frames)."""

    length: int = bounded(8, 2)   # frames per clip
    warmup: int = bounded(2, 0)   # first frames of a clip that only set the state: no loss,
                                  # and no gradient through them

    def __post_init__(self):
        check_ranges(self)
        if self.warmup >= self.length:
            raise ValueError(f"warmup={self.warmup} must be shorter than the clip "
                             f"(length={self.length}): at least one frame is trained on")


@dataclass(frozen=True)
class DataConfig:
    """Where frames come from and how they reach the network."""

    # "synthetic": interferograms rendered on the fly; "interferograms": folders on disk;
    # "camvid": the SegNet layout (<path>/train, trainannot, val, valannot; void ignored).
    # "super_resolution": HR folders of the `super_resolution` section; "tfds": a TFDS data
    # set, the `tfds` section (segmentation, or super-resolution's HR images).
    source: Literal["synthetic", "interferograms", "camvid", "super_resolution", "tfds"] = (
        "synthetic")
    path: str = ""       # interferograms: a sequence folder or a folder of them; camvid: root
    val_path: str = ""   # interferograms: held-out folder(s); "" = split off val_fraction
    val_fraction: float = bounded(0.1, 0.0, 0.9)   # of the frames, drawn with split_seed
    split_seed: int = bounded(1024, 0, 2**32 - 1)  # the interferogram seed's ICNet split
    labels: Literal["auto", "rois", "yolo"] = "auto"   # auto: rois.json if present, else YOLO
    bad_frames: Literal["error", "skip"] = "error"   # skip: log, count and drop unreadable ones
    cache: str = "memory"   # preprocessed frames: "memory", "none", or a file path prefix
    height: int = bounded(256, 8)     # network input size; frames are resized to it
    width: int = bounded(256, 8)
    # camvid: resize frames of another stored size to height x width (images area-averaged,
    # masks nearest) instead of refusing them, e.g. the 960x720 release or a half-size run.
    resize_frames: bool = False
    class_names: list[str] = field(default_factory=lambda: ["background", "sample"])
    # RGB per class for panels, overlays and the export metadata; [] = a fixed palette.
    class_colours: list[tuple[int, int, int]] = field(default_factory=list)
    ignore_label: int = bounded(255, 0, 255)  # masks are uint8; must not be a class id
    # Sample-level scores and predict --boxes: a component covering less than this fraction
    # of the frame is a speck, not a sample (tfseg.tasks.samples); 0 counts every one.
    min_sample_area: float = bounded(0.0005, 0.0, 1.0)
    mean: list[float] = field(default_factory=lambda: [0.0])  # per channel, inside the model
    std: list[float] = bounded([255.0], 1e-6)            # per channel, inside the model
    val_sequences: int = bounded(4, 1)  # held-out synthetic sequences
    val_frame_stride: int = bounded(1, 1)  # keep every k-th validation frame: frames of a
                                           # sequence are alike, many short samples measure better
    val_seed: int = bounded(0, 0, 2**31 - 1)  # fixed, so runs with other train seeds compare
    # Training frames held in the shuffle buffer. Frames of one sequence are alike: a buffer
    # spanning many sequences keeps each batch diverse.
    shuffle_frames: int = bounded(1024, 1)
    synthetic: SyntheticSpec = field(default_factory=SyntheticSpec)
    super_resolution: SuperResolutionDataConfig = field(
        default_factory=SuperResolutionDataConfig)
    tfds: TfdsDataConfig = field(default_factory=TfdsDataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    clips: ClipConfig = field(default_factory=ClipConfig)   # recurrent models only

    def __post_init__(self):
        check_ranges(self)
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean and std need one value per channel; "
                             f"received mean={self.mean}, std={self.std}")
        for key, values in (("mean", self.mean), ("std", self.std)):
            if any(value > 255 for value in values):   # e.g. statistics of 16-bit frames
                raise ValueError(f"{key}={values} must be in 8-bit grey levels (at most 255): "
                                 f"every source reaches the network in 8-bit units, 16-bit "
                                 f"frames divided by 257")
        if self.source == "super_resolution":
            if not (self.super_resolution.train and self.super_resolution.validation):
                raise ValueError("source 'super_resolution' reads HR folders: set "
                                 "super_resolution.train and super_resolution.validation")
        elif self.source == "tfds":
            if not self.tfds.name:
                raise ValueError("source 'tfds' reads a TFDS data set: set tfds.name")
        elif self.source != "synthetic" and not self.path:
            raise ValueError(f"source {self.source!r} reads folders: set path")
        if not self.cache:
            raise ValueError("cache must be 'memory', 'none' or a file path prefix")
        if any(not 0 <= value <= 255 for colour in self.class_colours for value in colour):
            raise ValueError(f"class_colours are RGB triples of 0..255; received "
                             f"{[list(colour) for colour in self.class_colours]}")
        crop = self.augment.crop
        if crop and (crop[0] > self.height or crop[1] > self.width):
            raise ValueError(f"augment.crop {crop} is larger than the {self.height}x"
                             f"{self.width} (height x width) frames")
        trained = crop or [self.height, self.width]
        if self.augment.transpose and trained[0] != trained[1]:
            raise ValueError(f"augment.transpose swaps rows and columns: it needs square "
                             f"training frames; received {trained[0]}x{trained[1]} (height x "
                             f"width)")


@dataclass(frozen=True)
class AsymmetricLossConfig:
    """Options of the asymmetric loss (Ridnik et al. 2021; `tfseg.tasks.losses`)."""

    gamma_pos: float = bounded(0.0, 0.0)
    gamma_neg: float = bounded(4.0, 0.0)
    clip: float = bounded(0.05, 0.0, 0.999)   # probability margin on negatives
    label_smoothing: float = bounded(0.0, 0.0, 0.999)

    def __post_init__(self):
        check_ranges(self)


@dataclass(frozen=True)
class PerceptualLossConfig:
    """Options of the perceptual loss (Johnson et al. 2016; `tfseg.tasks.losses.PerceptualLoss`)."""

    # The keras.applications VGG16 notop .h5 file, or "random" (warns: not perceptual).
    weights: str = ""
    layers: list[str] = field(default_factory=lambda: ["block2_conv2"])   # Johnson's relu2_2
    layer_weights: list[float] = bounded([], 0.0)   # one per layer; [] = 1 each
    pixel_weight: float = bounded(0.0, 0.0)
    tv_weight: float = bounded(0.0, 0.0)

    def __post_init__(self):
        check_ranges(self)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, distribution and logging."""

    epochs: int = bounded(6, 1)
    steps_per_epoch: int = bounded(40, 1)
    batch_size: int = bounded(8, 1)   # global batch, split across replicas
    optimizer: Literal["adam", "rmsprop", "sgd"] = "adam"
    learning_rate: float = bounded(1e-3, 1e-12)
    momentum: float = bounded(0.9, 0.0, 0.999)   # sgd only
    weight_decay: float = bounded(0.0, 0.0)      # decoupled (AdamW-style) weight decay
    # Segmentation: cross_entropy or asymmetric; super-resolution: pixel (MSE) or perceptual.
    loss: Literal["cross_entropy", "asymmetric", "pixel", "perceptual"] = "cross_entropy"
    # ICNet and icnet_temporal only: cascade label guidance on the 1/4, 1/8, 1/16 logits
    # (cross-entropy), with the paper's weights (1, 0.4, 0.4) or the seed's (1, 1, 0.4);
    # "off" trains the full-size logits with train.loss.
    cascade: Literal["paper", "seed", "off"] = "paper"
    asymmetric: AsymmetricLossConfig = field(default_factory=AsymmetricLossConfig)
    perceptual: PerceptualLossConfig = field(default_factory=PerceptualLossConfig)
    class_weights: list[float] = bounded([], 0.0)   # per class; [] = unweighted
    # Or computed from the training masks at start (LinkNet: 1 / ln(1.02 + p) or log2):
    class_weighting: Literal["none", "linknet_ln", "linknet_log2"] = "none"
    dice_weight: float = bounded(0.0, 0.0)   # adds dice_weight x (1 - soft Dice) to the loss
    lr_schedule: Literal["constant", "cosine", "poly"] = "cosine"
    poly_power: float = bounded(0.9, 0.0)   # poly: lr x (1 - step / steps)^power
    warmup_steps: int = bounded(0, 0)   # linear warm-up from 0 to learning_rate (cosine only)
    # Learning-rate multipliers: {regex: factor}; a variable whose path (e.g.
    # "icnet_classifier/kernel") matches a regex first trains at factor x the learning rate.
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    # "multi_worker": MultiWorkerMirroredStrategy over the hosts of the TF_CONFIG variable.
    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    jit_compile: bool = False   # XLA-compile the train and validation steps
    # Compute in half precision (variables, losses and metrics stay float32); the exported
    # model is a float32 copy of the trained weights. "auto" picks at each start from the
    # hardware (tfseg.utils.hardware): bfloat16 where native, float16 on older GPUs, else float32.
    mixed_precision: Literal["auto", "none", "mixed_bfloat16", "mixed_float16"] = "auto"
    seed: int = bounded(0, 0, 2**31 - 1)
    # A run directory whose latest weights the model starts from (same architecture), or
    # "preset:NAME", a preset's weights (tfseg.runs.presets), with a fresh optimizer and
    # schedule: fine-tuning, or another schedule after a run. "" = random.
    init_from: str = ""
    log_images: int = bounded(4, 1)   # validation panels written to TensorBoard each epoch
    checkpoints_to_keep: int = bounded(3, 1)
    checkpoint_every: int = bounded(100, 0)   # steps between checkpoints (and every epoch end)
    # The validation score whose best value keeps its own checkpoint (checkpoints/best);
    # "auto": foreground_iou for two classes, mean_iou otherwise, psnr_y for super-resolution.
    best_metric: Literal["auto", "mean_iou", "foreground_iou", "pixel_accuracy",
                         "mean_class_accuracy", "frequency_weighted_iou", "psnr_y",
                         "ssim_y"] = "auto"
    # A NaN or Inf loss: "stop" the run (the last checkpoint stays the last good one), or
    # "skip_batch" (no update from that batch; counted in metrics.json).
    nan_policy: Literal["stop", "skip_batch"] = "stop"

    def __post_init__(self):
        check_ranges(self)
        if self.class_weights and self.class_weighting != "none":
            raise ValueError("give class_weights or class_weighting, not both")
        if self.class_weights and not sum(self.class_weights) > 0:
            raise ValueError(f"class_weights={self.class_weights} must not all be 0")
        if self.warmup_steps >= self.epochs * self.steps_per_epoch:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be shorter than the run "
                             f"(epochs x steps_per_epoch = {self.epochs * self.steps_per_epoch})")
        if self.warmup_steps and self.lr_schedule != "cosine":
            raise ValueError("warmup_steps needs lr_schedule 'cosine'")
        for pattern, factor in self.lr_multipliers.items():
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"lr_multipliers: {pattern!r} is not a regex ({error})") from None
            if not isinstance(factor, (int, float)) or isinstance(factor, bool) or factor < 0:
                raise ValueError(f"lr_multipliers: {pattern!r} needs a number >= 0, "
                                 f"got {factor!r}")
        if self.mixed_precision == "mixed_float16" and self.strategy != "default":
            # Keras 3.15's loss-scale optimizer checks only the first replica's gradients
            # for overflow when gradients are not summed first, as in this trainer.
            raise ValueError("mixed_float16 is supported with strategy 'default' only; "
                             "use mixed_bfloat16 on several devices")


@dataclass(frozen=True)
class ExportConfig:
    """What the run exports at the end, and how strictly the exports must agree with Keras."""

    saved_model: bool = True
    onnx: bool = True
    opset: int = bounded(17, 13, 18)   # tf2onnx 1.17 converts up to opset 18
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    # The OpenCV engines a given OpenCV version lacks are reported as unavailable there
    # (tfseg.deploy.opencv_dnn), not as failures.
    parity_runtimes: list[Literal["onnxruntime", "opencv", "opencv_classic", "opencv_ort"]] = (
        field(default_factory=lambda: ["onnxruntime", "opencv", "opencv_classic",
                                       "opencv_ort"]))
    parity_samples: int = bounded(8, 1)
    max_abs_diff: float = bounded(1e-3, 0.0)
    min_argmax_agreement: float = bounded(0.999, 0.0, 1.0)   # a fraction, not a percentage

    def __post_init__(self):
        check_ranges(self)
        opencv = [name for name in self.parity_runtimes if name.startswith("opencv")]
        if self.layout == "NHWC" and opencv:
            raise ValueError(f"OpenCV DNN is fed NCHW blobs: with layout NHWC, leave "
                             f"{', '.join(opencv)} out of parity_runtimes")


@dataclass(frozen=True)
class Config:
    """A whole run: `model`, `data`, `train` and `export` sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def __post_init__(self):
        if self.model.task == "super_resolution":
            self._check_super_resolution()
        else:
            self._check_segmentation()
        if len(self.data.mean) != self.model.input_channels:
            raise ValueError(f"data.mean/std have {len(self.data.mean)} values but "
                             f"model.input_channels is {self.model.input_channels}")
        # A TFDS data set's channels are checked when it is opened (tfseg.data.tfds_source).
        channels = 3 if self.data.source in ("camvid", "super_resolution") else 1
        if self.data.preprocess.fringe_channels:
            self._check_fringe_channels()
            channels += self.data.preprocess.fringe_channels
        if self.data.source != "tfds" and self.model.input_channels != channels:
            raise ValueError(f"data.source {self.data.source!r} has {channels} channel(s) but "
                             f"model.input_channels is {self.model.input_channels}")

    def _check_fringe_channels(self):
        step = ("data.preprocess.phase_gradient" if self.data.preprocess.phase_gradient
                else "data.preprocess.fringe_amplitude")
        if self.data.source not in ("synthetic", "interferograms"):
            raise ValueError(f"{step} demodulates interferograms (data.source 'synthetic' "
                             f"or 'interferograms'), not {self.data.source!r} frames")
        if self.data.augment.brightness or self.data.augment.contrast:
            raise ValueError(f"data.augment.brightness and contrast would change the "
                             f"demodulated fringes' channels too: set them to 0 with {step}")

    def _check_super_resolution(self):
        if self.data.source not in ("super_resolution", "tfds"):
            raise ValueError(f"model {self.model.name!r} needs data.source "
                             f"'super_resolution' or 'tfds', not {self.data.source!r}")
        if self.train.loss not in ("pixel", "perceptual"):
            raise ValueError(f"train.loss {self.train.loss!r} is a segmentation loss; "
                             f"super-resolution trains with 'pixel' or 'perceptual'")
        if self.train.loss == "perceptual" and not self.train.perceptual.weights:
            raise ValueError("train.perceptual.weights: give the local keras.applications "
                             "VGG16 notop .h5 file, or 'random' (not perceptual features)")
        if self.data.augment.test_time != "none":
            raise ValueError("data.augment.test_time averages class probabilities: it is for "
                             "segmentation; use 'none'")
        if self.train.best_metric not in ("auto", "psnr_y", "ssim_y"):
            raise ValueError(f"train.best_metric {self.train.best_metric!r} scores "
                             f"segmentation; super-resolution keeps the best by 'psnr_y' or "
                             f"'ssim_y'")
        if self.data.super_resolution.patch_size % self.model.scale:
            raise ValueError(f"data.super_resolution.patch_size "
                             f"{self.data.super_resolution.patch_size} must be a multiple of "
                             f"model.scale {self.model.scale}")

    def _check_segmentation(self):
        if self.data.source == "super_resolution":
            raise ValueError(f"data.source 'super_resolution' needs model.name 'sr_johnson', "
                             f"not {self.model.name!r}")
        if self.train.loss in ("pixel", "perceptual"):
            raise ValueError(f"train.loss {self.train.loss!r} is a super-resolution loss; "
                             f"segmentation trains with 'cross_entropy' or 'asymmetric'")
        if self.train.best_metric in ("psnr_y", "ssim_y") or (
                self.train.best_metric == "foreground_iou" and self.model.num_classes != 2):
            raise ValueError(f"train.best_metric {self.train.best_metric!r} is not a score of "
                             f"{self.model.num_classes}-class segmentation")
        if len(self.data.class_names) != self.model.num_classes:
            raise ValueError(f"data.class_names has {len(self.data.class_names)} names but "
                             f"model.num_classes is {self.model.num_classes}")
        if self.data.class_colours and (
                len(self.data.class_colours) != self.model.num_classes):
            raise ValueError(f"data.class_colours has {len(self.data.class_colours)} colours "
                             f"but model.num_classes is {self.model.num_classes}")
        if (self.model.name in RECURRENT_MODELS
                and self.data.source not in ("synthetic", "interferograms")):
            raise ValueError(f"model {self.model.name!r} is recurrent: it trains on "
                             f"sequences (data.source 'synthetic' or 'interferograms'), not "
                             f"{self.data.source!r}")
        if (self.model.name in ("icnet", "icnet_temporal") and self.train.cascade != "off"
                and self.train.loss != "cross_entropy"):
            raise ValueError("train.cascade (ICNet's label guidance) uses cross-entropy; set "
                             "train.cascade: off to train ICNet with the asymmetric loss")
        if self.train.class_weights and (
                len(self.train.class_weights) != self.model.num_classes):
            raise ValueError(f"train.class_weights has {len(self.train.class_weights)} values "
                             f"but model.num_classes is {self.model.num_classes}")
        views = self.data.augment.test_time
        if views != "none" and self.model.name in RECURRENT_MODELS:
            raise ValueError(f"data.augment.test_time {views!r}: model {self.model.name!r} "
                             f"is recurrent, and a state follows one view of a sequence; "
                             f"use 'none'")
        if views == "flips_and_transpose" and self.data.height != self.data.width:
            raise ValueError(f"data.augment.test_time 'flips_and_transpose' needs square "
                             f"frames; received {self.data.height}x{self.data.width} (height "
                             f"x width): use 'flips'")
        if self.data.ignore_label < self.model.num_classes:
            raise ValueError(f"data.ignore_label {self.data.ignore_label} is a class id "
                             f"(model.num_classes is {self.model.num_classes}); use 255")
