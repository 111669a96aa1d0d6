"""dtype ``auto``: bf16 on CUDA and on CPUs with native bf16, float32 elsewhere, with the reason printed."""

from __future__ import annotations

import pytest
import torch

from s2robot.common import device as D
from s2robot.vision.encoder import EncoderConfig, FrozenS2Encoder


@pytest.fixture(autouse=True)
def _fresh_reports() -> None:
    D._report.cache_clear()  # every test sees its own "dtype auto -> ..." line


def test_cpu_with_native_bf16_chooses_bfloat16(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(D, "cpu_bf16_support", lambda: (True, "CPU with native bf16: AMX_BF16"))
    assert D.resolve_dtype("auto", "cpu") == torch.bfloat16
    assert "dtype auto -> bfloat16 (CPU with native bf16: AMX_BF16)" in capsys.readouterr().out


def test_cpu_without_native_bf16_chooses_float32(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(D, "cpu_bf16_support", lambda: (False, "CPU without native bf16: AVX2"))
    assert D.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert "dtype auto -> float32 (CPU without native bf16: AVX2)" in capsys.readouterr().out
    enc = FrozenS2Encoder(EncoderConfig(variant="vit-micro", weights="random", img_sizes=[32], device="cpu"))
    assert enc.dtype == torch.float32 and next(enc.vit.parameters()).dtype == torch.float32
    assert D.autocast_dtype("auto", torch.device("cpu")) is None  # MAE: no autocast without native bf16


def test_cuda_chooses_bfloat16_and_explicit_names_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(D, "cpu_bf16_support", lambda: (False, "CPU without native bf16: AVX2"))
    assert D.auto_dtype(torch.device("cuda")) == (torch.bfloat16, "CUDA")
    assert D.resolve_dtype("float16", "cpu") == torch.float16 and D.resolve_dtype("float32", "cpu") == torch.float32
    assert D.autocast_dtype("none", torch.device("cuda")) is None
    assert D.autocast_dtype("auto", torch.device("cpu"), cpu_auto=False) is None  # BC training on a CPU
    with pytest.raises(ValueError, match="dtype must be one of"):
        D.resolve_dtype("bf16", "cpu")


def test_cpu_flags_probe_reads_proc_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    D.cpu_bf16_support.cache_clear()
    monkeypatch.setattr(D, "_cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert D.cpu_bf16_support() == (True, "CPU with native bf16: AVX512_BF16")
    D.cpu_bf16_support.cache_clear()
    monkeypatch.setattr(D, "_cpu_flags", lambda: {"avx2"})
    native, reason = D.cpu_bf16_support()
    assert not native and reason.startswith("CPU without native bf16: ")
    D.cpu_bf16_support.cache_clear()


def test_onednn_isa_cap_below_bf16_means_no_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(D, "_cpu_flags", lambda: {"avx2", "avx512_bf16"})
    for var, value, native in [("ONEDNN_MAX_CPU_ISA", "avx2", False), ("DNNL_MAX_CPU_ISA", "AVX512_CORE", False),
                               ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16", True), ("ONEDNN_MAX_CPU_ISA", "ALL", True)]:
        D.cpu_bf16_support.cache_clear()
        for v in D.ONEDNN_ISA_VARS:
            monkeypatch.delenv(v, raising=False)
        monkeypatch.setenv(var, value)
        got, reason = D.cpu_bf16_support()
        assert got is native, (var, value, reason)
        if not native:
            assert f"{var}={value}" in reason
    D.cpu_bf16_support.cache_clear()
