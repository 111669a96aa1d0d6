"""Where and in what precision things run: ``auto`` devices and dtypes, resolved with a printed reason.

``auto`` dtype = bfloat16 on CUDA, and on a CPU only when it runs bf16 natively (AVX512-BF16 or AMX); float32
otherwise. On an AVX2-only CPU torch's bf16 matmul runs at 0.8 GFLOP/s against 112 GFLOP/s in float32
(measured, 1024² on 2 cores), so bf16 there would turn minutes into hours.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
AUTO = "auto"
DTYPE_CHOICES = (AUTO, *DTYPES)
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs with bf16 matmul units
# oneDNN (torch's CPU bf16 matmul) capped below its bf16 kernels by ONEDNN_MAX_CPU_ISA runs bf16 as slowly as an
# AVX2-only CPU does (measured on the AVX512-BF16 EPYC: 420 → 2.5 GFLOP/s at 1024², 2 cores)
ONEDNN_ISA_VARS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
ONEDNN_ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI")


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when torch sees a GPU, else CPU; any other name as given (CUDA checked to exist)."""
    if device == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU; use device=auto")
    return torch.device(device)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no flags to read, so no native bf16 is assumed
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


@functools.cache
def cpu_bf16_support() -> tuple[bool, str]:
    """(whether this CPU runs bf16 natively, the reason in words), from its flags; read once per process."""
    found = [f for f in NATIVE_BF16_FLAGS if f in _cpu_flags()]
    capped = [f"{v}={os.environ[v]}" for v in ONEDNN_ISA_VARS
              if os.environ.get(v, "").upper() in ONEDNN_ISAS_WITHOUT_BF16]
    if found and capped:
        return False, f"CPU with {found[0].upper()}, but {capped[0]} keeps oneDNN off its bf16 kernels"
    if found:
        return True, f"CPU with native bf16: {found[0].upper()}"
    return False, f"CPU without native bf16: {torch.backends.cpu.get_cpu_capability()}"


def auto_dtype(device: torch.device) -> tuple[torch.dtype, str]:
    """The dtype ``auto`` means on ``device``, and why."""
    if device.type == "cuda":
        return torch.bfloat16, "CUDA"
    native, reason = cpu_bf16_support()
    return (torch.bfloat16 if native else torch.float32), reason


@functools.cache
def _report(line: str) -> None:
    print(line)  # once per process and distinct choice


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def resolve_dtype(name: str, device: torch.device | str) -> torch.dtype:
    """``float32`` / ``bfloat16`` / ``float16`` as named; ``auto`` as ``auto_dtype`` chooses (printed once)."""
    if name not in DTYPE_CHOICES:
        raise ValueError(f"dtype must be one of {list(DTYPE_CHOICES)}; got {name!r}")
    if name != AUTO:
        return DTYPES[name]
    dtype, reason = auto_dtype(torch.device(device))
    _report(f"dtype auto -> {dtype_name(dtype)} ({reason})")
    return dtype


def autocast_dtype(amp: str, device: torch.device, cpu_auto: bool = True) -> torch.dtype | None:
    """The autocast dtype of a training loop for ``amp`` (``auto``, a dtype name or ``none``); None = off.

    cpu_auto: whether ``auto`` may choose bf16 on a CPU (the BC policy always trains in float32 on CPUs).
    """
    if amp == "none":
        return None
    if amp == AUTO and device.type == "cpu" and not cpu_auto:
        _report("amp auto -> float32 (CPU: the policy trains in float32 on CPUs)")
        return None
    dtype = resolve_dtype(amp, device)
    return None if dtype == torch.float32 else dtype
