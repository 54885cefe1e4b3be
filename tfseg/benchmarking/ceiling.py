"""This CPU's float32 ceiling from its own figures: cores x clock x FP32 lanes x 2 FMA units
x 2 flops per fused multiply-add, with where the clock came from.

A measured kernel (a 3x3 convolution) is no ceiling: onnxruntime ran past it by 1.6x
(issue 22). The practical ceiling next to this one is a measured large matmul
(`tfseg.benchmarking.machine`).
"""

import os
import re
import subprocess
from pathlib import Path

from tfseg.utils.hardware import cpu_info, cpuinfo_fields, cpuinfo_path

# FP32 lanes of the widest vector unit a flag announces.
LANES = (("avx512f", 16), ("avx2", 8), ("sse2", 4))
FMA_UNITS = 2          # two FMA pipes per core, as on every AVX2 / AVX-512 server core since
FLOPS_PER_FMA = 2      # Haswell and Zen 2 (a few AVX-512 parts have one: the bound stays one)
MAX_FREQ = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")


def cpu_ceiling():
    """This CPU's theoretical float32 GFLOP/s and how it was computed.

    Returns:
        dict: "cpu", "flags" (the precision-relevant ones), "cores", "clock_ghz",
        "clock_source" (where the clock was read), "lanes", "gflop_per_s", "formula".
    """
    cpu = cpu_info()
    clock_ghz, source = max_clock()
    lanes = next((count for flag, count in LANES if flag in cpu.flags), 1)
    gflop_per_s = cpu.cores * clock_ghz * lanes * FMA_UNITS * FLOPS_PER_FMA
    return {"cpu": cpu.model, "flags": cpu.features, "cores": cpu.cores,
            "clock_ghz": clock_ghz, "clock_source": source, "lanes": lanes,
            "gflop_per_s": gflop_per_s,
            "formula": f"{cpu.cores} cores x {clock_ghz:.2f} GHz x {lanes} FP32 lanes x "
                       f"{FMA_UNITS} FMA x {FLOPS_PER_FMA}"}


def max_clock():
    """(GHz, source) of the CPU's highest clock: cpufreq's maximum, lscpu's "CPU max MHz",
    the "@ N GHz" of the model name, or /proc/cpuinfo's current "cpu MHz", the first found.
    With TFSEG_CPUINFO set (a test posing as another CPU) only that file is read."""
    posing = os.environ.get("TFSEG_CPUINFO")
    if not posing:
        try:
            return int(MAX_FREQ.read_text()) / 1e6, str(MAX_FREQ)
        except (OSError, ValueError):
            pass
        match = re.search(r"^CPU max MHz:\s*([\d.]+)", _lscpu(), re.MULTILINE)
        if match and float(match[1]) > 0:
            return float(match[1]) / 1e3, "lscpu's CPU max MHz"
    path = cpuinfo_path()
    fields = cpuinfo_fields(path)
    named = re.search(r"@\s*([\d.]+)\s*GHz", fields.get("model name", ""))
    if named:
        return float(named[1]), f"the model name in {path}"
    try:
        return float(fields["cpu MHz"]) / 1e3, f"cpu MHz in {path}, the current clock"
    except (KeyError, ValueError):
        return 0.0, f"unknown: no clock in {path} or lscpu"


def _lscpu():
    try:
        return subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                              env={**os.environ, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
