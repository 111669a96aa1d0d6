"""Distributed start-up and RNG state: the GPU-path bugs found on the first H100 run, tested on CPU."""

from __future__ import annotations

import random

import pytest
import torch

from s2robot.common.distributed import init_distributed, rng_state, set_rng_state


def test_init_distributed_gives_cuda_an_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """device=auto on a GPU machine resolves to an indexed CUDA device (torch.cuda.set_device rejects a bare
    "cuda": with it, single-GPU training fails at start-up)."""
    seen = []

    def set_device(dev: torch.device) -> None:
        if isinstance(dev, torch.device) and dev.index is None:
            raise ValueError("Expected a torch.device with a specified index or an integer, but got:cuda")
        seen.append(dev)

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    info, dev = init_distributed("auto")
    assert dev == torch.device("cuda", 0) and seen == [dev] and info.world == 1


def test_rng_state_restores_from_a_gpu_loaded_checkpoint() -> None:
    """torch.load(map_location=cuda) moves the saved RNG ByteTensors to the GPU; resuming must bring them back
    (left on the GPU, a GPU run's resume fails with 'RNG state must be a torch.ByteTensor')."""

    class OnDevice:  # stands in for a CUDA tensor: only .cpu() gives the ByteTensor back
        def __init__(self, t: torch.Tensor) -> None:
            self.t = t

        def cpu(self) -> torch.Tensor:
            return self.t

    state = rng_state()
    expect = torch.rand(3)
    random.random()
    set_rng_state({**state, "torch": OnDevice(state["torch"])})
    assert torch.equal(torch.rand(3), expect)
