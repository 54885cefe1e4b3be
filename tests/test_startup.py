"""TensorFlow's start-up notices are filtered from the first import only, and nothing else is."""

import sys

import pytest

from tfseg.utils.startup import filter_first_import, kept_lines

# What `import tensorflow` and the GPU probe print on a CPU-only machine (TensorFlow 2.21).
START_UP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796627837.202906   25597 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
I0000 00:00:1796627837.206711   25597 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1796627837.270299   25597 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
E0000 00:00:1796627840.669032   25597 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
"""
OTHER = "W0000 00:00:1796627840.7 1 some_kernel.cc:12] a warning a user should read\n"


def test_only_the_start_up_notices_are_dropped():
    assert kept_lines(START_UP + OTHER) == [OTHER]


def test_a_cuinit_failure_with_a_driver_present_is_kept():
    failure = START_UP.splitlines(keepends=True)[-1]
    assert kept_lines(failure) == [failure]


def write_noisy_module(folder, name, body=""):
    (folder / f"{name}.py").write_text(
        "import os\n"
        f"os.write(2, {(START_UP + OTHER).encode()!r})\n" + body)


def test_the_first_import_prints_only_what_is_kept(tmp_path, monkeypatch, capfd):
    monkeypatch.syspath_prepend(str(tmp_path))
    write_noisy_module(tmp_path, "tfseg_noisy_a")
    probed = []
    filter_first_import("tfseg_noisy_a", then=probed.append)
    import tfseg_noisy_a   # noqa: F401  (the import under test)
    assert capfd.readouterr().err == OTHER
    assert probed == [sys.modules["tfseg_noisy_a"]]
    assert not any(type(finder).__name__ == "_FirstImportFilter" for finder in sys.meta_path)


def test_the_captured_lines_are_written_back_when_the_import_fails(tmp_path, monkeypatch,
                                                                    capfd):
    monkeypatch.syspath_prepend(str(tmp_path))
    write_noisy_module(tmp_path, "tfseg_noisy_b", body="raise ImportError('broken')\n")
    filter_first_import("tfseg_noisy_b")
    with pytest.raises(ImportError, match="broken"):
        import tfseg_noisy_b   # noqa: F401
    assert capfd.readouterr().err == OTHER
