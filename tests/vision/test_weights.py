"""Weights: MVP-format checkpoints, the resolution order, error paths and the download command."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from s2robot.vision import weights as W
from s2robot.vision.vit import VisionTransformer, build_vit, get_config
from s2robot.workflows import weights as weights_cli


def write_mvp_checkpoint(path: Path, model: VisionTransformer, extra: dict | None = None) -> Path:
    """Save ``model`` as MVP/MAE checkpoints are laid out: encoder and decoder keys under 'model'."""
    sd = dict(model.state_dict())
    d = model.embed_dim
    sd |= {
        "mask_token": torch.zeros(1, 1, d),
        "decoder_embed.weight": torch.randn(16, d),
        "decoder_pos_embed": torch.zeros(1, 1 + model.cfg.num_patches, 16),
        "decoder_blocks.0.norm1.weight": torch.ones(16),
        "decoder_pred.weight": torch.randn(3 * 64, 16),
    }
    sd |= extra or {}
    torch.save({"model": sd, "epoch": 799}, path)
    return path


def random_micro(seed: int) -> VisionTransformer:
    model = build_vit("vit-micro")
    model.reset_parameters(torch.Generator().manual_seed(seed))
    return model


def test_roundtrip_ignores_decoder_keys(tmp_path: Path) -> None:
    """An MVP-format file loads exactly; decoder and mask keys are ignored and reported."""
    src = random_micro(1)
    path = write_mvp_checkpoint(tmp_path / "m.pth", src)
    resolved = W.resolve_weights("vit-micro", str(path))
    assert resolved.source == "file" and resolved.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    dst = build_vit("vit-micro")
    with pytest.warns(UserWarning, match="ignored 5 MAE decoder/mask keys"):
        report = W.load_resolved(dst, resolved)
    assert "mask_token" in report.ignored and "decoder_pred.weight" in report.ignored
    assert not report.resized_pos_embed
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Explicit path, then the cache dir, then the official mvp package, then a clear error."""
    with pytest.raises(FileNotFoundError, match=r"vit-micro\.pth"):
        W.resolve_weights("vit-micro")
    cached = write_mvp_checkpoint(W.cache_dir() / "vit-micro.pth", random_micro(2))
    assert W.resolve_weights("vit-micro").path == cached
    explicit = write_mvp_checkpoint(tmp_path / "other.pth", random_micro(3))
    assert W.resolve_weights("vit-micro", str(explicit)).path == explicit
    with pytest.raises(FileNotFoundError, match="does not exist"):
        W.resolve_weights("vit-micro", str(tmp_path / "nope.pth"))


def test_missing_official_weights_error_says_how_to_fix() -> None:
    with pytest.raises(FileNotFoundError) as err:
        W.resolve_weights("vitb-mae-egosoup")
    msg = str(err.value)
    assert "python -m s2robot.workflows.weights download vitb-mae-egosoup" in msg
    assert str(W.cache_dir() / "vitb-mae-egosoup.pth") in msg and "weights=random" in msg
    with pytest.raises(FileNotFoundError, match=r"scripts/pretrain_mae\.py .* export_name=vitb-mae-cubepick"):
        W.resolve_weights("vitb-mae-cubepick")  # in-domain weights not shipped: how to make them


def test_official_mvp_package_is_used_and_pypi_namesake_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    src = random_micro(4)
    real = types.ModuleType("mvp")
    real.available_models = lambda: ["vits-mae-hoi"]
    real.load = lambda name: src
    monkeypatch.setitem(sys.modules, "mvp", real)
    monkeypatch.setitem(W.MVP_URLS, "vits-mae-hoi", W.MVP_URLS["vits-mae-hoi"])
    resolved = W.resolve_weights("vits-mae-hoi")
    assert resolved.source == "mvp-package" and resolved.state_dict is not None
    assert resolved.digest == W.state_dict_sha256(src.state_dict())
    maya = types.ModuleType("mvp")  # PyPI's unrelated `mvp`: no model zoo
    monkeypatch.setitem(sys.modules, "mvp", maya)
    with pytest.raises(FileNotFoundError):
        W.resolve_weights("vits-mae-hoi")


def test_missing_key_and_shape_mismatch_are_named(tmp_path: Path) -> None:
    sd = dict(random_micro(5).state_dict())
    del sd["blocks.1.mlp.fc2.bias"]
    with pytest.raises(ValueError, match=r"lacks encoder keys \['blocks.1.mlp.fc2.bias'\]"):
        W.load_encoder_weights(build_vit("vit-micro"), sd)
    sd = dict(random_micro(5).state_dict())
    sd["blocks.0.attn.qkv.weight"] = torch.zeros(10, 32)
    with pytest.raises(ValueError, match=r"blocks.0.attn.qkv.weight: \(10, 32\) vs \(96, 32\)"):
        W.load_encoder_weights(build_vit("vit-micro"), sd)


def test_other_image_size_resamples_position_table(tmp_path: Path) -> None:
    """A 32-px checkpoint loaded into a 48-px model: pos_embed interpolated, with a warning."""
    path = write_mvp_checkpoint(tmp_path / "m.pth", random_micro(6))
    model = VisionTransformer(get_config("vit-micro", img_size=48))
    with pytest.warns(UserWarning) as caught:
        report = W.load_resolved(model, W.resolve_weights("vit-micro", str(path)))
    messages = [str(w.message) for w in caught]
    assert any("resampled bicubically to a 6x6 grid" in m for m in messages)
    assert any("ignored 5 MAE decoder/mask keys" in m for m in messages)
    assert report.resized_pos_embed and model.pos_embed.shape == (1, 37, 32)


def test_corrupt_and_foreign_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"<html>not a checkpoint</html>")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        W.read_checkpoint(bad)
    other = tmp_path / "other.pth"
    torch.save({"model": {"fc.weight": torch.zeros(2)}}, other)
    with pytest.raises(ValueError, match="not an MVP-format ViT checkpoint"):
        W.read_checkpoint(other)


def test_random_weights_are_seeded() -> None:
    r0 = W.resolve_weights("vit-micro", "random", seed=0)
    assert r0.is_random and "RANDOM" in r0.label()
    a, b, c = build_vit("vit-micro"), build_vit("vit-micro"), build_vit("vit-micro")
    W.load_resolved(a, r0, seed=0)
    W.load_resolved(b, r0, seed=0)
    W.load_resolved(c, W.resolve_weights("vit-micro", "random", seed=1), seed=1)
    assert torch.equal(a.pos_embed, b.pos_embed) and not torch.equal(a.pos_embed, c.pos_embed)


class _FakeResponse(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}

    def __enter__(self) -> _FakeResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_download_checks_md5_and_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = write_mvp_checkpoint(tmp_path / "src.pth", random_micro(7)).read_bytes()
    monkeypatch.setattr(W.urllib.request, "urlopen", lambda url, timeout: _FakeResponse(payload))
    with pytest.raises(ValueError, match="md5 of the download"):
        W.download("vits-mae-hoi", tmp_path / "dl", md5="0" * 32)
    assert not list((tmp_path / "dl").iterdir())  # no partial file left behind
    path = W.download("vits-mae-hoi", tmp_path / "dl", md5=hashlib.md5(payload).hexdigest())
    assert path.read_bytes() == payload

    def offline(url: str, timeout: float) -> None:
        raise OSError("no route to host")

    monkeypatch.setattr(W.urllib.request, "urlopen", offline)
    with pytest.raises(ConnectionError, match="copy the file"):
        W.download("vitb-mae-egosoup", tmp_path / "dl2")


def test_cli_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert weights_cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "vitb-mae-egosoup" in out and "missing" in out


def test_repo_shipped_weights_come_after_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """weights/NAME.pth in the repository is found when the cache dir has no NAME.pth; the cache wins."""
    monkeypatch.setattr(W, "REPO_WEIGHTS_DIR", tmp_path / "weights")
    (tmp_path / "weights").mkdir()
    shipped = write_mvp_checkpoint(tmp_path / "weights" / "vit-micro.pth", random_micro(8))
    assert W.resolve_weights("vit-micro").path == shipped
    cached = write_mvp_checkpoint(W.cache_dir() / "vit-micro.pth", random_micro(9))
    assert W.resolve_weights("vit-micro").path == cached
    with pytest.raises(FileNotFoundError, match=r"weights/vitti\.pth"):
        W.resolve_weights("vitti")


def test_float16_file_loads_into_a_float32_model(tmp_path: Path) -> None:
    src = random_micro(10)
    path = tmp_path / "half.pth"
    torch.save({"model": {k: v.half() for k, v in src.state_dict().items()}}, path)
    dst = build_vit("vit-micro")
    W.load_resolved(dst, W.resolve_weights("vit-micro", str(path)))
    assert all(p.dtype == torch.float32 for p in dst.parameters())
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v.half().float()), k


@pytest.mark.parametrize("name", sorted(p.stem for p in W.REPO_WEIGHTS_DIR.glob("*.pth")))
def test_shipped_weights_match_provenance_and_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every weights/NAME.pth is what its NAME.json says (sha256, bytes), resolves by name, stays under 50 MB
    and loads into its registry architecture with no unexpected keys and no position-table resampling."""
    import json

    monkeypatch.setenv("S2ROBOT_WEIGHTS_DIR", "/nonexistent")
    meta = json.loads((W.REPO_WEIGHTS_DIR / f"{name}.json").read_text())
    resolved = W.resolve_weights(name)
    assert resolved.path == W.REPO_WEIGHTS_DIR / f"{name}.pth"
    assert resolved.digest == meta["sha256"] == W.file_sha256(resolved.path)
    assert resolved.path.stat().st_size == meta["bytes"] <= 50e6
    model = build_vit(name)
    report = W.load_resolved(model, resolved)
    assert report is not None and not report.unexpected and not report.resized_pos_embed
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert meta["images_seen"] == meta["steps"] * meta["batch_size"]


class Payload:
    def __reduce__(self) -> tuple:
        return (os.system, ("touch PWNED",))


def test_weights_file_that_carries_code_is_refused_and_never_run(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid .pth with an added ``__reduce__`` payload is refused and its payload never runs (no fallback to
    weights_only=False), whether passed as ``encoder.weights=`` or found by name."""
    path = write_mvp_checkpoint(tmp_path / "vit-micro.pth", random_micro(0))
    ckpt = torch.load(path, weights_only=True)
    ckpt["args"] = Payload()
    torch.save(ckpt, path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"weights_only=True"):
        W.read_checkpoint(path)
    for weights in (str(path), "auto"):  # an explicit path, and the file found by name in $S2ROBOT_WEIGHTS_DIR
        monkeypatch.setenv("S2ROBOT_WEIGHTS_DIR", str(tmp_path))
        resolved = W.resolve_weights("vit-micro", weights)
        assert resolved.path == path
        with pytest.raises(ValueError, match=r"weights_only=True"):
            W.load_resolved(random_micro(1), resolved)
    assert not (tmp_path / "PWNED").exists()


def test_every_torch_load_is_weights_only() -> None:
    """No code path unpickles anything but tensors and plain containers (one place would be enough to run code)."""
    root = Path(__file__).resolve().parents[2]
    calls = [(p, line) for p in sorted((root / "s2robot").rglob("*.py")) for line in p.read_text().splitlines()
             if "torch.load(" in line and not line.lstrip().startswith(("#", "``", "Every"))]
    assert calls and all("weights_only=True" in line for _, line in calls), calls


def test_in_domain_encoders_share_one_pretraining_budget() -> None:
    """The shipped ViT-Ti and ViT-S (the in-domain Table 6's two sizes) saw the same frames, the same number of
    images and the same MAE recipe: only the model size differs."""
    import json

    ti, s = (json.loads((W.REPO_WEIGHTS_DIR / f"{n}.json").read_text())
             for n in ("vitti-mae-cubepick", "vits-mae-cubepick"))
    assert ti["images_seen"] == s["images_seen"] == 76_800
    assert ti["data"]["generator_key"] == s["data"]["generator_key"] and ti["data"]["frames"] == s["data"]["frames"]
    assert (ti["mask_ratio"], ti["data"]["augmentation"]) == (s["mask_ratio"], s["data"]["augmentation"])
    s2 = json.loads((W.REPO_WEIGHTS_DIR / "vitti-s2mae-cubepick.json").read_text())  # MAE with S²: only the tiles
    assert s2["images_seen"] == ti["images_seen"] and s2["data"]["generator_key"] == ti["data"]["generator_key"]
    assert s2["data"]["augmentation"] == {**ti["data"]["augmentation"], "s2_img_sizes": [224, 448]}
    assert s2["sha256"] == W.file_sha256(W.REPO_WEIGHTS_DIR / "vitti-s2mae-cubepick.pth")
    small = json.loads((W.REPO_WEIGHTS_DIR / "vitti-112-s2mae-cubepick.json").read_text())  # ViT-Ti at 112²
    assert small["variant"] == "vitti-112" and small["images_seen"] == ti["images_seen"]
    assert small["data"]["generator_key"] == ti["data"]["generator_key"]
    assert small["data"]["augmentation"] == {**ti["data"]["augmentation"], "s2_img_sizes": [112, 224]}
    assert small["sha256"] == W.file_sha256(W.REPO_WEIGHTS_DIR / "vitti-112-s2mae-cubepick.pth")
