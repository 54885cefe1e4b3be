"""Precision follows the hardware: /proc/cpuinfo read as the kernel writes it, and the choice
of `train.mixed_precision: auto` on CPUs and GPUs this machine is not (tests/cpuinfo)."""

import pytest
from conftest import CPUINFO

from tfseg.utils import hardware
from tfseg.utils.hardware import Cpu, Gpu, Precision, choose_precision


def pose_as(monkeypatch, name, gpu_list=()):
    """This process's `cpu_info` reads tests/cpuinfo/`name`.txt; `gpus` returns `gpu_list`."""
    monkeypatch.setenv("TFSEG_CPUINFO", str(CPUINFO / f"{name}.txt"))
    monkeypatch.setattr(hardware, "gpus", lambda: list(gpu_list))


@pytest.mark.parametrize("name, model, features", [
    ("zen3", "AMD EPYC 7B13", ["avx2", "fma"]),
    ("zen5", "AMD EPYC 9755 128-Core Processor",
     ["avx2", "fma", "avx512f", "avx512_bf16"]),
    ("sapphire_rapids", "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
     ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"]),
])
def test_cpu_info_reads_model_features_and_usable_cores(monkeypatch, name, model, features):
    pose_as(monkeypatch, name)
    cpu = hardware.cpu_info()
    assert (cpu.model, cpu.features) == (model, features)
    assert cpu.cores >= 1
    assert cpu.describe() == f"{model}, {cpu.cores} cores ({' '.join(features)})"


def test_an_unreadable_cpuinfo_is_an_unknown_cpu_without_bfloat16(monkeypatch, tmp_path):
    monkeypatch.setenv("TFSEG_CPUINFO", str(tmp_path / "missing"))
    cpu = hardware.cpu_info()
    assert (cpu.model, cpu.features) == ("unknown CPU", [])
    assert choose_precision(cpu).policy == "float32"


ZEN3 = Cpu("AMD EPYC 7B13", frozenset({"avx2", "fma"}), 2)


@pytest.mark.parametrize("flags, policy, reason", [
    ({"avx2", "fma"}, "float32",
     "auto: this CPU, X, has no native bfloat16: no avx512_bf16/amx_bf16 flag"),
    ({"avx2", "avx512f"}, "float32",
     "auto: this CPU, X, has no native bfloat16: no avx512_bf16/amx_bf16 flag"),
    ({"avx2", "avx512f", "avx512_bf16"}, "mixed_bfloat16",
     "auto: this CPU, X, has native bfloat16 (avx512_bf16)"),
    ({"avx2", "amx_tile", "amx_bf16"}, "mixed_bfloat16",
     "auto: this CPU, X, has native bfloat16 (amx_bf16)"),
])
def test_cpus_compute_in_bfloat16_only_where_it_is_native(flags, policy, reason):
    assert choose_precision(Cpu("X", frozenset(flags), 2)) == Precision(policy, reason)


@pytest.mark.parametrize("capabilities, float16, policy, reason", [
    ([(7, 5)], True, "mixed_float16",
     "auto: GPU G (compute capability 7.5) has no native bfloat16; float16 with loss scaling"),
    ([(8, 0)], True, "mixed_bfloat16",
     "auto: GPU G (compute capability 8.0) has native bfloat16"),
    ([(8, 6), (7, 0)], True, "mixed_float16",   # the least capable GPU decides
     "auto: GPU G (compute capability 7.0) has no native bfloat16; float16 with loss scaling"),
    ([(7, 5)], False, "float32",
     "auto: GPU G (compute capability 7.5) has no native bfloat16, and mixed_float16 needs "
     "train.strategy default"),
])
def test_gpus_decide_over_the_cpu(capabilities, float16, policy, reason):
    gpu_list = [Gpu("G", capability) for capability in capabilities]
    assert choose_precision(ZEN3, gpu_list, float16=float16) == Precision(policy, reason)


def test_auto_resolves_from_this_machine_and_explicit_settings_say_what_auto_would_pick(
        monkeypatch):
    pose_as(monkeypatch, "zen3")
    assert str(hardware.resolve_precision("auto")) == (
        "float32 (auto: this CPU, AMD EPYC 7B13, has no native bfloat16: no "
        "avx512_bf16/amx_bf16 flag)")
    assert hardware.resolve_precision("none") == Precision("float32", "train.mixed_precision")
    assert str(hardware.resolve_precision("mixed_bfloat16")) == (
        "mixed_bfloat16 (train.mixed_precision; auto would pick float32: this CPU, "
        "AMD EPYC 7B13, has no native bfloat16: no avx512_bf16/amx_bf16 flag)")
    pose_as(monkeypatch, "zen5")
    assert hardware.resolve_precision("auto").policy == "mixed_bfloat16"
    pose_as(monkeypatch, "zen3", [Gpu("T4", (7, 5))])
    assert hardware.resolve_precision("auto").policy == "mixed_float16"
    assert hardware.resolve_precision("auto", float16=False).policy == "float32"


@pytest.mark.parametrize("policy, setting", [("float32", "none"),
                                             ("mixed_bfloat16", "mixed_bfloat16"),
                                             ("mixed_float16", "mixed_float16")])
def test_a_precision_maps_back_to_its_config_setting(policy, setting):
    assert Precision(policy, "why").setting == setting
