"""Distributed (torchrun) process info and the RNG state that a resumed run restores."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from s2robot.common.device import resolve_device

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group when launched by torchrun (NCCL on CUDA, gloo on CPU).

    Under torchrun the group is joined and DDP used even for one process (``--nproc_per_node=1``), so the
    collective path can be smoke-tested on a single GPU.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torchrun = "LOCAL_RANK" in os.environ
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        # set_device needs an index (torch raises on a bare "cuda"): the rank's GPU, else the current one
        dev = torch.device("cuda", local_rank if torchrun else torch.cuda.current_device())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not torchrun:
        return DistInfo(), dev
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank), dev


@contextmanager
def distributed(device: str) -> Iterator[tuple[DistInfo, torch.device]]:
    """``init_distributed`` for the ``with`` block; the process group it joined is left at the end (a script that
    runs once under torchrun)."""
    joined = not dist.is_initialized()
    info, dev = init_distributed(device)
    try:
        yield info, dev
    finally:
        if joined and dist.is_initialized():
            dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        dist.barrier()


def on_main(info: DistInfo, fn: Callable[[], T]) -> T:
    """``fn()`` run by rank 0 alone, its (picklable) result given to every rank: a collective, every rank calls it.

    An error on rank 0 is raised there and, as a ``RuntimeError`` quoting it, on every other rank, so none waits
    for a result that never comes. One process: just ``fn()``.
    """
    if info.world == 1:
        return fn()
    box: list[Any] = [None]
    if info.is_main:
        try:
            box[0] = ("ok", fn())
        except Exception as e:
            dist.broadcast_object_list([("error", f"{type(e).__name__}: {e}")], src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise RuntimeError(f"rank 0 failed, so rank {info.rank} stops too: {value}")
    return value


def raise_if_any_failed(info: DistInfo, error: str | None) -> None:
    """Every rank's ``error`` (None where it succeeded) gathered, a collective; when any rank failed, a
    ``RuntimeError`` listing every failure is raised on every rank."""
    errors: list[str | None] = [error]
    if info.world > 1:
        errors = [None] * info.world
        dist.all_gather_object(errors, error)
    failed = [e for e in errors if e]
    if failed:
        raise RuntimeError("\n".join(failed))


def rng_state() -> dict[str, Any]:
    """Python and torch RNG states (numpy: only seeded Generators are used, they need no state)."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(tuple(state["python"]) if isinstance(state["python"], list) else state["python"])
    # RNG states are CPU ByteTensors; a checkpoint loaded with map_location=cuda moved them to the GPU.
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def gather_rng_state(info: DistInfo) -> Any:
    """This rank's RNG state, or every rank's (a collective: every rank must call it) under DDP."""
    state: Any = rng_state()
    if info.world > 1:
        gathered: list[Any] = [None] * info.world
        dist.all_gather_object(gathered, state)
        state = gathered
    return state
