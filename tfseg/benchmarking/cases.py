"""What `python -m tfseg.bench` measures: the models at the seeds' input sizes (`Case`), the
runtime and precision of each row (`Variant`), and the input pipelines."""

import dataclasses
import re
import typing

from tfseg.deploy.runtimes import RUNTIMES

# Keras compute precisions; "auto" is the one `train.mixed_precision: auto` picks here.
DTYPES = ("auto", "float32", "bfloat16", "float16")
# What each runtime loads: the in-memory Keras model, the SavedModel or the ONNX file.
ARTIFACTS = {"keras": None, "savedmodel": "savedmodel",
             **{name: "onnx" for name in RUNTIMES[2:]}}   # onnxruntime and OpenCV DNN


class Variant(typing.NamedTuple):
    """How a row runs its case: the runtime, and for Keras the precision and XLA."""

    runtime: str
    dtype: str = "float32"
    jit_compile: bool = False

    @property
    def label(self):
        return f"{self.runtime} {self.dtype}" + (" XLA" if self.jit_compile else "")


@dataclasses.dataclass(frozen=True)
class Case:
    """One model at one input size.

    Args:
        model: str. Name in `tfseg.models.MODEL_BUILDERS`.
        height: int. Input height.
        width: int. Input width.
        channels: int. Input channels.
        options: dict. Keyword arguments of `tfseg.models.build` beyond the input shape.
        target_ms: float. The issue's median latency target at batch 1. Defaults to None.
        baseline: str. A model whose row with the same options, input and runtime this
            case's latency is judged against (its target: `baseline_ratio` x that row's
            median, `runner.judge_against_baselines`). Defaults to None.
        baseline_ratio: float. The most this case's median may be, over the baseline's.
            Defaults to None.
    """

    model: str
    height: int
    width: int
    channels: int
    options: dict
    target_ms: float | None = None
    baseline: str | None = None
    baseline_ratio: float | None = None

    @property
    def label(self):
        options = ", ".join(f"{key}={value}" for key, value in self.options.items())
        return f"{self.model} ({options})"

    @property
    def shape(self):
        return f"{self.height}x{self.width}x{self.channels}"


# The seeds' input sizes (MODELS.md) and the issue's latency targets.
CASES = (
    Case("fcn32_vgg16", 768, 128, 1, {"num_classes": 2}),
    Case("fcn_resnet18", 768, 128, 1, {"num_classes": 2}, target_ms=900),
    Case("icnet", 1024, 1024, 1, {"num_classes": 2, "width": 1.0}, target_ms=400),
    Case("icnet", 1024, 1024, 1, {"num_classes": 2, "width": 0.5}, target_ms=120),
    # Issue 21: one streamed frame (the state fed from the previous one) of the recurrent
    # ICNet in no more than 1.2x the per-frame ICNet's latency, same width, size and runtime.
    *(Case("icnet_temporal", 1024, 1024, 1, {"num_classes": 2, "width": width},
           baseline="icnet", baseline_ratio=1.2) for width in (1.0, 0.5)),
    Case("linknet", 704, 960, 3, {"num_classes": 12}, target_ms=180),
    Case("sr_johnson", 72, 72, 3, {"scale": 4}),
)
MODEL_NAMES = tuple(dict.fromkeys(case.model for case in CASES))
PIPELINES = ("interferograms", "camvid", "sr")


def cases_of(args):
    """The selected cases, at `--size` when given."""
    return [dataclasses.replace(case, height=args.size[0], width=args.size[1])
            if args.size else case for case in CASES if case.model in args.models]


def rows_of(args, auto="float32"):
    """The variants measured for each case: Keras at each precision (`auto` stands for
    "auto") and XLA setting; the exported runtimes once, float32 graphs without XLA, when
    float32 or auto is asked for."""
    dtypes = dict.fromkeys(auto if dtype == "auto" else dtype for dtype in args.dtypes)
    exported = "off" in args.jit_compile and not {"float32", "auto"}.isdisjoint(args.dtypes)
    rows = []
    for runtime in args.runtimes:
        if runtime == "keras":
            rows += [Variant(runtime, dtype, jit == "on") for dtype in dtypes
                     for jit in args.jit_compile]
        elif exported:
            rows.append(Variant(runtime))
    return rows


def row_key(case, variant, batch):
    """The row's identity across runs (what `--compare` matches)."""
    return f"{case.label} {case.shape} {variant.label} batch {batch}"


def baseline_key(case, variant, batch):
    """The key of the row `case`'s row is judged against (`Case.baseline`), or None."""
    return case.baseline and row_key(dataclasses.replace(case, model=case.baseline),
                                     variant, batch)


def slug(case):
    return re.sub(r"[^A-Za-z0-9.]+", "_", f"{case.label}_{case.shape}").strip("_")
