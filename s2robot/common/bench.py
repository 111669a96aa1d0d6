"""Timing helpers for the benchmarks in ``benchmarks/bench_*.py`` (never for tests).

On a GPU: warm up, synchronize around every timed call, take the median of many runs. Variants that are
compared are timed interleaved (A, B, A, B, ...) so drift in clocks or load hits both alike.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from s2robot.common.device import DTYPES


@dataclass(frozen=True)
class Timing:
    """Seconds per call over ``n`` timed runs."""

    median: float
    p99: float
    best: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Timing:
        ordered = sorted(samples)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        return cls(statistics.median(ordered), p99, ordered[0], len(ordered))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: Sequence[Callable[[], object]], device: torch.device, reps: int, warmup: int = 1
) -> list[Timing]:
    """Time each of ``fns`` ``reps`` times, interleaved, after ``warmup`` untimed calls of each."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    _sync(device)
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, out in zip(fns, samples, strict=True):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            out.append(time.perf_counter() - t0)
    return [Timing.of(s) for s in samples]


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int | None = None, reps: int = 5) -> float:
    """Measured dense matmul rate [FLOP/s] for ``n×n @ n×n`` in ``dtype`` on ``device``: the best of
    ``reps`` runs, since this is a ceiling (a burst of other load only ever lowers it)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    (timing,) = time_interleaved([lambda: a @ b], device, reps=reps, warmup=2)
    return 2 * n**3 / timing.best


def cuda_kernels(fn: Callable[[], object], device: torch.device) -> list[str]:
    """Names of the CUDA kernels one call of ``fn`` launches (empty off CUDA): which attention kernel SDPA
    picked, whether matmuls hit the tensor cores."""
    if device.type != "cuda":
        return []
    fn()  # warm: first calls select and compile kernels
    torch.cuda.synchronize(device)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize(device)
    return sorted({e.key for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA})


def attention_kernel(kernels: Sequence[str]) -> str:
    """Which SDPA backend ran, from kernel names: ``flash``, ``efficient``, ``cudnn`` or ``math``."""
    names = " ".join(kernels).lower()
    for key, label in (("flash", "flash"), ("fmha", "efficient"), ("efficient", "efficient"), ("cudnn", "cudnn")):
        if key in names:
            return label
    return "math" if kernels else "n/a"


def device_name(device: torch.device) -> str:
    """Human name of the device, for result tables."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)"


def matmul_rates(device: torch.device, dtypes: Sequence[str]) -> dict[str, float]:
    """``matmul_rate`` of each dtype name [FLOP/s]."""
    return {dt: matmul_rate(device, DTYPES[dt]) for dt in dtypes}


def elapsed(fn: Callable[[], object]) -> float:
    """Wall time of one call of ``fn`` [s] (CPU-side work; time GPU work with ``time_interleaved``)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def write_json(path: str | None, obj: Any, indent: int = 2) -> None:
    """Write benchmark rows to ``path`` (nothing when it is None)."""
    if path:
        with open(path, "w") as f:
            json.dump(obj, f, indent=indent)
