"""Normalizer: statistics, exact round-trips, constant channels, state-dict rebuild, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s2robot.data.normalize import Normalizer


def data(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"proprio": rng.normal(3.0, 2.0, (500, 8)).astype(np.float32),
            "action": rng.uniform(-0.1, 0.1, (500, 8)).astype(np.float32)}


def test_gaussian_standardizes_and_round_trips() -> None:
    d = data()
    norm = Normalizer.fit(d)
    x = torch.from_numpy(d["proprio"])
    z = norm.normalize("proprio", x)
    torch.testing.assert_close(z.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0, correction=0), torch.ones(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(norm.unnormalize("proprio", z), x, atol=1e-5, rtol=1e-6)


def test_limits_maps_range_to_unit_interval() -> None:
    d = data()
    norm = Normalizer.fit(d, mode={"proprio": "gaussian", "action": "limits"})
    z = norm.normalize("action", torch.from_numpy(d["action"]))
    torch.testing.assert_close(z.min(0).values, -torch.ones(8))
    torch.testing.assert_close(z.max(0).values, torch.ones(8))


def test_constant_channel_maps_to_zero_and_inverts() -> None:
    x = np.ones((10, 3), np.float32) * np.array([1.0, 2.0, 5.0], np.float32)
    x[:, 0] = np.arange(10)
    norm = Normalizer.fit({"proprio": x})
    z = norm.normalize("proprio", torch.from_numpy(x))
    assert torch.isfinite(z).all() and (z[:, 1:] == 0).all()
    torch.testing.assert_close(norm.unnormalize("proprio", z), torch.from_numpy(x))


def test_state_dict_rebuild_is_identical() -> None:
    norm = Normalizer.fit(data())
    module = torch.nn.Module()
    module.normalizer = norm
    rebuilt = Normalizer.from_state_dict(module.state_dict(), prefix="normalizer.")
    assert sorted(rebuilt.keys) == sorted(norm.keys)
    x = torch.randn(4, 8)
    for key in norm.keys:
        torch.testing.assert_close(rebuilt.normalize(key, x), norm.normalize(key, x), rtol=0, atol=0)


def test_errors_name_the_problem() -> None:
    bad = data()
    bad["action"][3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Normalizer.fit(bad)
    with pytest.raises(ValueError, match="mode"):
        Normalizer.fit(data(), mode="minmax")
    norm = Normalizer.fit(data())
    with pytest.raises(KeyError, match="feat_front"):
        norm.normalize("feat_front", torch.zeros(2, 8))
    with pytest.raises(ValueError, match="channels"):
        norm.normalize("proprio", torch.zeros(2, 7))
