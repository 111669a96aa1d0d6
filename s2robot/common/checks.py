"""Checks that configs of every layer share: seeds and image sides, each bound with the reason it has."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from numbers import Integral

# Largest image side [px] a config accepts: camera frames, rendered frames and S² scales. A 4096² RGB frame is
# 48 MiB (a 100-step episode of one camera: 4.7 GiB), and a 4096-px S² scale of a 224-px ViT is ~330 ViT passes per
# frame: far beyond the cameras here (RealSense colour: 640×480 by default, 1920×1080 at most), the simulated
# scene's offscreen buffer (1280×960, so its env takes at most 960 px, checked when it is made) and what a 10 Hz
# policy can encode. A larger value is a typo, refused before anything runs.
MAX_IMAGE_SIDE = 4096


def check_seed(value: int, name: str = "seed") -> int:
    """``value`` when it is an integer (numpy's too) ≥ 0; otherwise a ValueError naming ``name``. numpy's
    ``SeedSequence`` (and so every episode's ``env.reset(seed=...)``) refuses negative seeds: a negative one would
    fail only mid-run."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise ValueError(f"{name} must be an integer ≥ 0 (numpy's SeedSequence refuses negative seeds), got {value!r}")
    return value


def check_image_side(value: int, name: str = "image_size", low: int = 8) -> int:
    """``value`` when it is an integer side [px] in ``[low, MAX_IMAGE_SIDE]``; otherwise a ValueError naming ``name``,
    the value and the range."""
    if isinstance(value, bool) or not isinstance(value, Integral) or not low <= value <= MAX_IMAGE_SIDE:
        raise ValueError(f"{name} must be an integer in [{low}, {MAX_IMAGE_SIDE}] px (larger is a typo: see "
                         f"s2robot.common.checks.MAX_IMAGE_SIDE), got {value!r}")
    return value


def check_keys(given: Iterable[str], valid: Iterable[str], name: str) -> None:
    """Nothing when every key of ``given`` is in ``valid``; otherwise a ValueError naming ``name``, the unknown keys
    (each with its likely intended spelling) and the valid ones."""
    valid = list(valid)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        guesses = {k: m[0] for k in unknown if (m := difflib.get_close_matches(k, valid, n=1))}
        hint = f" (did you mean {', '.join(f'{v!r} for {k!r}' for k, v in guesses.items())}?)" if guesses else ""
        raise ValueError(f"{name} has unknown key(s) {unknown}{hint}. Valid keys: {sorted(valid)}")
