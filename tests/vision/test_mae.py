"""MAE model: masking and order restoration, what the encoder sees, the masked-patch loss, helpers."""

from __future__ import annotations

import pytest
import torch

from s2robot.vision.mae import (
    MAEConfig,
    MaskedAutoencoder,
    patchify,
    random_masking,
    restore_order,
    sincos_pos_embed,
    unpatchify,
)


def micro_mae(seed: int = 0) -> MaskedAutoencoder:
    return MaskedAutoencoder(MAEConfig("vit-micro"), torch.Generator().manual_seed(seed))


def test_masking_keeps_the_share_per_image_and_restore_undoes_the_shuffle() -> None:
    """Each image keeps exactly int(N·0.25) tokens (those with the lowest noise); restore puts them back."""
    b, n, d = 5, 16, 3
    tokens = torch.randn(b, n, d)
    noise = torch.rand(b, n)
    kept, mask, ids_restore = random_masking(tokens, 0.75, noise)
    assert kept.shape == (b, 4, d) and mask.shape == (b, n)
    assert torch.equal(mask.sum(dim=1), torch.full((b,), 12.0))
    lowest = noise.argsort(dim=1)[:, :4]
    assert torch.equal(mask.gather(1, lowest), torch.zeros(b, 4))  # the kept ones are the lowest-noise ones
    token = torch.full((1, 1, d), 7.0)
    restored = restore_order(kept, ids_restore, token)
    visible = mask == 0
    assert torch.equal(restored[visible], tokens[visible])
    assert torch.equal(restored[~visible], token.expand(b, n, d)[~visible])


def test_model_hides_patches_from_the_encoder_and_predicts_all() -> None:
    mae = micro_mae()
    x = torch.randn(3, 3, 32, 32)
    noise = torch.rand(3, mae.num_patches)
    latent, mask, _ = mae.forward_encoder(x, noise)
    assert latent.shape == (3, 1 + 4, 32) and torch.equal(mask.sum(1), torch.full((3,), 12.0))
    out = mae(x, noise)
    assert out.pred.shape == (3, 16, 8 * 8 * 3) and out.loss.ndim == 0
    # The loss only sees masked patches: changing the prediction on visible patches does not change it.
    pred = out.pred.detach().clone()
    pred[out.mask == 0] += 5.0
    assert torch.allclose(mae.loss(x, pred, out.mask), out.loss.detach())
    masked, full, pasted = mae.reconstruct(x, out)
    visible = unpatchify((1 - out.mask)[..., None].expand_as(out.pred), 8) > 0  # (B, 3, S, S)
    assert torch.allclose(pasted[visible], x[visible], atol=1e-5) and not masked[~visible].any()
    assert torch.allclose(pasted[~visible], full[~visible]) and full.shape == x.shape


def test_pure_helpers() -> None:
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(unpatchify(patchify(x, 8), 8), x)
    table = sincos_pos_embed(32, 4)
    assert table.shape == (1, 17, 32) and not table[0, 0].any()
    assert len({tuple(r.tolist()) for r in table[0, 1:]}) == 16  # every position distinct


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="mask_ratio"):
        MAEConfig("vit-micro", mask_ratio=1.0)
    with pytest.raises(ValueError, match="unknown ViT variant"):
        MAEConfig("vit-huge")
