"""MAE pretraining loop: augmentation, loss falls, exact resume, reconstructions, export through the resolver."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import imageio.v3 as imageio
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from s2robot.common.lock import lock_path, writer_lock
from s2robot.common.optim import lr_factor
from s2robot.vision import weights as W
from s2robot.vision.augment import _bicubic_tile, random_resized_crop, s2_tiles
from s2robot.vision.encoder import EncoderConfig, FrozenS2Encoder
from s2robot.vision.mae import MAEConfig, MaskedAutoencoder
from s2robot.vision.s2 import split_chessboard
from s2robot.vision.vit import build_vit
from s2robot.workflows.export import export_encoder
from s2robot.workflows.pretrain import PretrainConfig, pretrain_mae, reconstruction_grid


def synthetic_frames(n: int = 16, size: int = 32, seed: int = 0) -> np.ndarray:
    """Smooth images: a coloured square on a gradient, at random places (learnable structure)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        img = np.stack([xx, yy, 0.5 * (xx + yy)], axis=-1) * 120 + 40
        x0, y0 = rng.integers(0, size - 10, 2)
        img[y0 : y0 + 10, x0 : x0 + 10] = rng.uniform(150, 255, 3)
        out[i] = img.astype(np.uint8)
    return out


def tiny_cfg(tmp_path: Path, **kw: object) -> PretrainConfig:
    base = {"model": MAEConfig("vit-micro"), "name": "t", "runs_dir": str(tmp_path / "runs"), "steps": 6,
            "batch_size": 4, "warmup_steps": 2, "amp": "none", "device": "cpu", "log_every": 2,
            "ckpt_every": 100, "recon_every": 100, "export_dir": str(tmp_path / "weights")}
    return PretrainConfig(**(base | kw))


def test_crop_identity_and_schedule() -> None:
    x = torch.randn(2, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(random_resized_crop(x, (1.0, 1.0), (1.0, 1.0), False, g), x, atol=1e-5)
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1) and lr_factor(9, 10, 100, 0.1) == 1.0
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)


def test_flip_mirrors_whole_batches_when_on() -> None:
    x = torch.randn(64, 3, 8, 8)
    out = random_resized_crop(x, (1.0, 1.0), (1.0, 1.0), True, torch.Generator().manual_seed(0))
    flipped = [torch.allclose(o, i.flip(-1), atol=1e-5) for o, i in zip(out, x, strict=True)]
    same = [torch.allclose(o, i, atol=1e-5) for o, i in zip(out, x, strict=True)]
    assert all(f or s for f, s in zip(flipped, same, strict=True)) and 10 < sum(flipped) < 54


def test_loss_falls_on_a_tiny_synthetic_set(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path, steps=80, batch_size=8, lr=2e-3, warmup_steps=5, crop_scale=(0.8, 1.0))
    result = pretrain_mae(cfg, synthetic_frames(), progress=False)
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-10:])
    assert last < 0.6 * first, (first, last)
    png = tmp_path / "runs" / "t" / "recon" / "step_000080.png"
    assert png.is_file()
    grid = reconstruction_grid(MaskedAutoencoder(cfg.model), torch.from_numpy(synthetic_frames(2)))
    assert grid.shape == (2 * 32, 4 * 32, 3) and grid.dtype == np.uint8


def test_resume_is_exact(tmp_path: Path) -> None:
    """Interrupted at step 3 and re-run: the same losses and weights as an uninterrupted run."""
    frames = synthetic_frames()
    whole = pretrain_mae(tiny_cfg(tmp_path / "a"), frames, progress=False)
    first = pretrain_mae(tiny_cfg(tmp_path / "b"), frames, progress=False, stop_at=3)
    rest = pretrain_mae(tiny_cfg(tmp_path / "b"), frames, progress=False)
    assert len(first.losses) == 3 and len(rest.losses) == 3
    assert first.losses + rest.losses == whole.losses and rest.history == whole.history
    a = torch.load(tmp_path / "a/runs/t/last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b/runs/t/last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="another model"):
        pretrain_mae(tiny_cfg(tmp_path / "b", model=MAEConfig("vit-micro", decoder_dim=8)), frames, progress=False)


def test_export_loads_through_the_resolver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Export (fp16, MVP format) → weights/<name>.pth → EncoderConfig(weights=auto) gives the same encoder."""
    monkeypatch.setattr(W, "REPO_WEIGHTS_DIR", tmp_path / "weights")
    cfg = tiny_cfg(tmp_path, steps=2, export_name="vit-micro")
    result = pretrain_mae(cfg, synthetic_frames(), progress=False, command="python scripts/pretrain_mae.py")
    assert result.export_path == tmp_path / "weights" / "vit-micro.pth"
    info = json.loads(result.export_path.with_suffix(".json").read_text())
    assert info["sha256"] == W.file_sha256(result.export_path) and info["steps"] == 2
    assert info["variant"] == "vit-micro" and info["dtype"] == "float16" and info["command"].startswith("python")
    saved = torch.load(result.export_path, weights_only=True)
    assert set(saved) == {"model"} and "patch_embed.proj.weight" in saved["model"]
    assert not any(k.startswith(("decoder", "mask_token")) for k in saved["model"])

    enc = FrozenS2Encoder(EncoderConfig(variant="vit-micro", weights="auto", img_sizes=[32], dtype="float32"))
    assert enc.weights.path == result.export_path and not enc.weights.is_random
    mae = MaskedAutoencoder(cfg.model)
    mae.load_state_dict(torch.load(tmp_path / "runs/t/last.pt", weights_only=True)["model"])
    ref = build_vit("vit-micro")
    ref.load_state_dict({k: v.half().float() for k, v in mae.encoder_state_dict().items()})
    frames = torch.from_numpy(synthetic_frames(3))
    assert torch.allclose(enc(frames), enc.readout(ref(enc.preprocess(frames))), atol=1e-6)
    assert all(p.dtype == torch.float32 for p in enc.vit.parameters())


def test_export_replaces_nothing_unless_asked(tmp_path: Path) -> None:
    """An export to an existing weights file is refused before any training; export_overwrite=true replaces it
    (through a temporary file beside it: none is left behind)."""
    frames = synthetic_frames()
    first = pretrain_mae(tiny_cfg(tmp_path, steps=2, export_name="vit-micro"), frames, progress=False)
    before = first.export_path.read_bytes()
    again = tiny_cfg(tmp_path, name="t2", steps=2, seed=1, export_name="vit-micro")
    with pytest.raises(FileExistsError, match=r"vit-micro\.pth and .*vit-micro\.json already exist.*"
                                              r"export_overwrite=true"):
        pretrain_mae(again, frames, progress=False)
    assert not again.run_dir.exists() and first.export_path.read_bytes() == before
    second = pretrain_mae(replace(again, export_overwrite=True), frames, progress=False)
    assert second.export_path == first.export_path and second.export_path.read_bytes() != before
    info = json.loads(second.export_path.with_suffix(".json").read_text())
    assert info["sha256"] == W.file_sha256(second.export_path) and info["seed"] == 1
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == ["vit-micro.json", "vit-micro.pth"]


def test_shipped_weights_are_never_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every weights/NAME.json (recording its checkpoint's sha256) registers a shipped checkpoint, which no export
    replaces: not with export_overwrite=true, not through a symlinked export_dir, not by calling export_encoder."""
    registry = W.shipped_weights()
    assert set(registry) == {p.stem for p in W.REPO_WEIGHTS_DIR.glob("*.pth")} and all(registry.values())
    shipped = tmp_path / "repo_weights"  # a copy of one shipped checkpoint: a regression must not touch the real one
    shipped.mkdir()
    for suffix in (".pth", ".json"):
        shutil.copy(W.REPO_WEIGHTS_DIR / f"vitti-mae-cubepick{suffix}", shipped)
    monkeypatch.setattr(W, "REPO_WEIGHTS_DIR", shipped)
    link = tmp_path / "link"
    link.symlink_to(shipped, target_is_directory=True)
    digest = W.file_sha256(shipped / "vitti-mae-cubepick.pth")
    cfg = tiny_cfg(tmp_path, model=MAEConfig("vitti"), export_name="vitti-mae-cubepick", export_dir=str(link),
                   export_overwrite=True)
    ships = r"vitti-mae-cubepick\.pth is the checkpoint 'vitti-mae-cubepick' that ships with the repository.*even with"
    with pytest.raises(FileExistsError, match=ships):
        pretrain_mae(cfg, synthetic_frames(), progress=False)
    assert not cfg.run_dir.exists()  # refused before training
    state = build_vit("vit-micro").state_dict()
    with pytest.raises(FileExistsError, match=ships):
        export_encoder(state, link / "vitti-mae-cubepick.pth", True, {}, overwrite=True)
    assert W.file_sha256(shipped / "vitti-mae-cubepick.pth") == digest
    assert sorted(p.name for p in shipped.iterdir()) == ["vitti-mae-cubepick.json", "vitti-mae-cubepick.pth"]


def test_a_second_pretraining_of_the_same_run_is_refused(tmp_path: Path) -> None:
    """Pretraining holds its run folder's writer lock: while another writer holds it, a pretraining of that run is
    refused before writing a checkpoint; once free, it runs and leaves no lock file behind."""
    cfg = tiny_cfg(tmp_path, steps=2)
    with writer_lock(cfg.run_dir, "run"):  # a second descriptor of the lock: another writer, as flock sees it
        with pytest.raises(RuntimeError, match=rf"run {re.escape(str(cfg.run_dir))} is being written by another "
                                               rf"process \(pid {os.getpid()}"):
            pretrain_mae(cfg, synthetic_frames(), progress=False)
    assert not (cfg.run_dir / "last.pt").exists()
    assert pretrain_mae(cfg, synthetic_frames(), progress=False).step == 2
    assert not lock_path(cfg.run_dir).exists()


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="another architecture"):
        PretrainConfig(model=MAEConfig("vit-micro"), export_name="vitti-mae-cubepick")
    with pytest.raises(ValueError, match="frames must be uint8"):
        pretrain_mae(replace(tiny_cfg(tmp_path), steps=1), np.zeros((2, 16, 16, 3)))
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_s2_tiles_are_the_tiles_s2_feeds_the_encoder() -> None:
    """Every output is the whole image or one quarter of its bicubic 2× (split_chessboard's tiles), each of the 5
    about equally often; one scale of the model's size is the identity."""
    x = torch.rand(400, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(s2_tiles(x, [16], g), x)
    out = s2_tiles(x, [16, 32], g)
    quarters = split_chessboard(F.interpolate(x, size=32, mode="bicubic"), 2).view(4, 400, 3, 16, 16)
    candidates = torch.cat([x[None], quarters])  # (5, B, C, S, S): the whole image, then the tiles row by row
    match = [(candidates[:, i] - out[i]).abs().flatten(1).amax(1) < 1e-6 for i in range(len(x))]
    assert all(int(m.sum()) == 1 for m in match)
    counts = torch.stack(match).float().sum(0)  # how often each of the 5 was picked
    assert counts.min() > 50 and counts.max() < 110, counts


def test_s2_tiles_of_frames_larger_than_the_model() -> None:
    """A 16-px model with S² at 16²+32² of 32-px frames (ViT-Ti at 112² on the 224² camera): every output is the
    frame halved as S² halves it, or one of its native quarters cut as is, each of the 5 about equally often."""
    x = torch.rand(400, 3, 32, 32)
    out = s2_tiles(x, [16, 32], torch.Generator().manual_seed(0), tile_size=16)
    assert out.shape == (400, 3, 16, 16)
    halved = F.interpolate(x, size=16, mode="bicubic")  # as s2_forward resizes a scale
    candidates = torch.cat([halved[None], split_chessboard(x, 2).view(4, 400, 3, 16, 16)])  # (5, B, C, 16, 16)
    match = [(candidates[:, i] - out[i]).abs().flatten(1).amax(1) == 0 for i in range(len(x))]
    assert all(int(m.sum()) == 1 for m in match)
    counts = torch.stack(match).float().sum(0)
    assert counts.min() > 50 and counts.max() < 110, counts


def test_pretraining_a_model_smaller_than_its_frames(tmp_path: Path) -> None:
    """vit-micro (32 px) pretrained with S² at 32²+64² on 64-px frames; frames at no scale of it are refused."""
    frames = synthetic_frames(size=64)
    cfg = tiny_cfg(tmp_path, steps=2, recon_every=2, s2_img_sizes=[32, 64])
    with pytest.raises(ValueError, match=r"S in \[32, 64\]"):
        pretrain_mae(cfg, synthetic_frames(size=48), progress=False)
    with pytest.raises(ValueError, match=r"S in \[32\]"):  # without S² only the model's size
        pretrain_mae(replace(cfg, s2_img_sizes=[]), frames, progress=False)
    res = pretrain_mae(cfg, frames, progress=False)
    assert res.step == 2 and all(np.isfinite(res.losses))
    grid = imageio.imread(res.run_dir / "recon" / "step_000002.png")
    assert grid.shape == (4 * 32, 4 * 32, 3)  # the frames shown halved to the model's size


@pytest.mark.parametrize("n", [2, 3, 4])
def test_each_tile_is_resized_alone_as_the_whole_image_would_be(n: int) -> None:
    """Resizing only the rows and columns a tile reads gives the tile of the whole image's bicubic n× (edges
    included): exactly where 1/n is exact in floating point, to rounding otherwise (20 / 3: tiles that do not start
    on whole input pixels)."""
    x = torch.rand(3, 3, 20, 20)
    whole = split_chessboard(F.interpolate(x, size=20 * n, mode="bicubic"), n).view(n * n, 3, 3, 20, 20)
    for t in range(n * n):
        tol = 0.0 if n in (2, 4) else 1e-5
        torch.testing.assert_close(_bicubic_tile(x, n, *divmod(t, n)), whole[t], atol=tol, rtol=0)


def test_pretraining_with_s2_records_it_and_refuses_a_plain_resume(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(W, "REPO_WEIGHTS_DIR", tmp_path / "weights")
    frames = synthetic_frames()
    with pytest.raises(ValueError, match="multiples of vit-micro's 32 px"):
        tiny_cfg(tmp_path, s2_img_sizes=[32, 48])
    plain = pretrain_mae(tiny_cfg(tmp_path / "a", steps=2), frames, progress=False)
    s2 = pretrain_mae(tiny_cfg(tmp_path, steps=2, export_name="vit-micro", s2_img_sizes=[32, 64]), frames,
                      progress=False)
    assert s2.losses != plain.losses  # other images, the same seed
    info = json.loads(s2.export_path.with_suffix(".json").read_text())
    assert info["method"] == "MAE with S² tiles of [32, 64] px"
    assert info["data"]["augmentation"]["s2_img_sizes"] == [32, 64]
    with pytest.raises(ValueError, match=r"s2_img_sizes=\[32, 64\], now \[\]"):
        pretrain_mae(tiny_cfg(tmp_path, steps=3), frames, progress=False)


def test_mae_with_a_target_scores_every_patch_of_it() -> None:
    """target=...: the loss is the MSE to the target's patches, visible ones included; target=imgs on all patches is
    not the masked-only MAE loss."""
    model = MaskedAutoencoder(MAEConfig("vit-micro"), torch.Generator().manual_seed(0))
    x, y = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    noise = torch.rand(2, model.num_patches, generator=torch.Generator().manual_seed(1))
    out = model(x, noise, target=y)
    per_patch = ((out.pred.float() - model.target(y)) ** 2).mean(-1)
    assert out.loss.item() == pytest.approx(per_patch.mean().item(), rel=1e-5)
    assert model(x, noise).loss.item() != pytest.approx(model(x, noise, target=x).loss.item())


def test_pretraining_to_the_clean_scene_pairs_the_same_states(tmp_path: Path) -> None:
    """target=clean: the inputs are clean and varied renderings, each paired with the clean one of the same state
    (cropped and tiled alike); the loss falls and the export records what it reconstructed."""
    from s2robot.sim.frames import FrameDataConfig, GeneratorConfig, paired_frames

    gen = GeneratorConfig(n_frames=24, image_size=32, max_steps=12, workers=1, variation="standard_visual",
                          out=str(tmp_path / "g.zarr"))
    data = FrameDataConfig(generator=gen)
    varied, clean = paired_frames(data, progress=False)
    assert varied.shape == clean.shape and not np.array_equal(varied, clean)
    assert (tmp_path / "g-clean.zarr").is_dir()
    cfg = tiny_cfg(tmp_path, data=data, target="clean", steps=20, export_name="vit-micro", lr=2e-3)
    result = pretrain_mae(cfg, frames=(varied, clean), progress=False)
    assert np.mean(result.history[-5:]) < np.mean(result.history[:5])
    info = json.loads((tmp_path / "weights" / "vit-micro.json").read_text())
    assert info["target"] == "clean" and "standard_visual" in info["method"]
    with pytest.raises(ValueError, match="was pretrained with target=clean"):
        pretrain_mae(replace(cfg, target="input", data=FrameDataConfig(), export_name=None), frames=clean,
                     progress=False)
    with pytest.raises(ValueError, match="target=clean reconstructs the scene as built"):
        tiny_cfg(tmp_path, target="clean")
    with pytest.raises(ValueError, match="changed the episodes themselves"):
        paired_frames(FrameDataConfig(generator=replace(gen, variation="cube_size:high", out=str(tmp_path / "p.zarr"))),
                      progress=False)
