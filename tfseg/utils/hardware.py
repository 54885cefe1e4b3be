"""What this machine computes fast, and the training precision that follows from it.

`cpu_info` reads the CPU's model, instruction-set flags and usable cores from /proc/cpuinfo
(or the file named by the TFSEG_CPUINFO variable: tests pose as other machines with it);
`gpus` lists the GPUs TensorFlow sees with their compute capability. `choose_precision`
decides `train.mixed_precision: auto` from those facts alone, so every kind of machine can be
tested on any one: bfloat16 only where it is native (an x86 CPU with AVX512_BF16 or AMX, a
GPU of compute capability 8.0 or more), float16 with loss scaling on older GPUs, float32
otherwise. Emulated bfloat16 is slower than float32: 7.5x on an AVX2-only Zen 3.
"""

import os
from dataclasses import dataclass
from pathlib import Path

# The flags that decide which precision runs fast, in the order reports list them.
FEATURE_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
NATIVE_BF16_CAPABILITY = (8, 0)   # NVIDIA Ampere and later
# train.mixed_precision values and the Keras dtype policies they stand for.
POLICIES = {"none": "float32", "mixed_bfloat16": "mixed_bfloat16",
            "mixed_float16": "mixed_float16"}


@dataclass(frozen=True)
class Cpu:
    """A CPU: model name, /proc/cpuinfo flags and the cores this process may use."""

    model: str
    flags: frozenset
    cores: int

    @property
    def features(self):
        """The precision-relevant flags it has, e.g. ["avx2", "fma"]."""
        return [flag for flag in FEATURE_FLAGS if flag in self.flags]

    def describe(self):
        """E.g. "AMD EPYC 7B13, 2 cores (avx2 fma)"."""
        return f"{self.model}, {self.cores} cores ({' '.join(self.features) or 'no AVX2'})"


@dataclass(frozen=True)
class Gpu:
    """A GPU TensorFlow computes on: its name and CUDA compute capability (major, minor)."""

    name: str
    capability: tuple


@dataclass(frozen=True)
class Precision:
    """The Keras dtype policy a run computes in (float32, mixed_bfloat16 or mixed_float16)
    and the one-line reason it was chosen."""

    policy: str
    reason: str

    @property
    def setting(self):
        """The explicit `train.mixed_precision` value of this policy."""
        return next(name for name, policy in POLICIES.items() if policy == self.policy)

    def __str__(self):
        return f"{self.policy} ({self.reason})"


def cpu_info():
    """This machine's `Cpu` (the TFSEG_CPUINFO file's when that variable is set); "unknown
    CPU" without flags where /proc/cpuinfo cannot be read."""
    fields = cpuinfo_fields(cpuinfo_path())
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    return Cpu(fields.get("model name") or "unknown CPU",
               frozenset(fields.get("flags", "").split()), cores)


def cpuinfo_path():
    """/proc/cpuinfo, or the file the TFSEG_CPUINFO variable names (a test posing as another
    CPU)."""
    return Path(os.environ.get("TFSEG_CPUINFO") or "/proc/cpuinfo")


def cpuinfo_fields(path):
    """The first processor's `key: value` fields of a /proc/cpuinfo-format file (its entry
    holds every field); {} when the file cannot be read."""
    try:
        text = Path(path).read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def gpus():
    """The GPUs TensorFlow computes on, with their compute capability."""
    import tensorflow as tf

    found = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        found.append(Gpu(details.get("device_name", device.name),
                         tuple(details.get("compute_capability") or (0, 0))))
    return found


def choose_precision(cpu, gpu_list=(), *, float16=True):
    """The `Precision` of `train.mixed_precision: auto` on a machine with `cpu` and
    `gpu_list` (TensorFlow computes on the GPUs when there are any).

    Args:
        cpu: `Cpu`.
        gpu_list: sequence of `Gpu`; the least capable one decides.
        float16: bool. Whether mixed_float16 is usable (the trainer supports its loss
            scaling with `train.strategy: default` only); otherwise older GPUs get float32.
    """
    if gpu_list:
        gpu = min(gpu_list, key=lambda g: g.capability)
        named = f"GPU {gpu.name} (compute capability {'.'.join(map(str, gpu.capability))})"
        if gpu.capability >= NATIVE_BF16_CAPABILITY:
            return Precision("mixed_bfloat16", f"auto: {named} has native bfloat16")
        if float16:
            return Precision("mixed_float16", f"auto: {named} has no native bfloat16; "
                                              f"float16 with loss scaling")
        return Precision("float32", f"auto: {named} has no native bfloat16, and "
                                    f"mixed_float16 needs train.strategy default")
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in cpu.flags]
    if native:
        return Precision("mixed_bfloat16", f"auto: this CPU, {cpu.model}, has native "
                                           f"bfloat16 ({', '.join(native)})")
    return Precision("float32", f"auto: this CPU, {cpu.model}, has no native bfloat16: no "
                                f"{'/'.join(NATIVE_BF16_FLAGS)} flag")


def resolve_precision(setting, *, float16=True):
    """The `Precision` a run with `train.mixed_precision: setting` uses on this machine; an
    explicit setting that differs from what auto would pick says so, since emulated bfloat16
    or float16 is slower than float32."""
    auto = choose_precision(cpu_info(), gpus(), float16=float16)
    if setting == "auto":
        return auto
    policy = POLICIES[setting]
    if policy == auto.policy:
        return Precision(policy, "train.mixed_precision")
    return Precision(policy, f"train.mixed_precision; auto would pick {auto.policy}: "
                             f"{auto.reason.removeprefix('auto: ')}")
