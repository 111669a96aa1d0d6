"""Transformer behavior cloning over 16-step chunks: past features, proprio and actions in, next actions out.

Tokens (ACT / MVP-RPT style): for each of the To past steps, one token per camera (a linear projection of
that camera's S² feature), one for proprioception and one for the previous action; each gets a learned
timestep embedding and a learned token-type embedding. Ta learned action-query tokens follow. A pre-norm
transformer encoder runs over all ``To·(C+2) + Ta`` tokens, with padded steps (before the episode start)
masked out of attention, and a linear head reads the query tokens as ``(B, Ta, A)`` normalized actions.

Inputs and outputs are in raw units: the policy's ``Normalizer`` (fit on the training split, saved in
its state dict) normalizes inside ``forward`` and un-normalizes in ``predict_chunk`` / ``act``.

Rollout: ``reset(batch_size)`` then ``act(obs)`` once per control step with that step's features and
proprio; the policy keeps the To-step history (including the actions it returned) itself and executes
either ``receding`` (run ``execute_steps`` actions of a chunk, then re-plan) or ACT's ``ensemble``
(re-plan every step, average all chunks' predictions for the current step with weights
``exp(-ensemble_decay · i)``, i = 0 for the oldest).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from s2robot.data.keys import FEAT_PREFIX
from s2robot.data.normalize import Normalizer
from s2robot.policy.configuration import PolicyConfig


class ChunkTransformerPolicy(nn.Module):
    """Predicts the next Ta actions from the last To steps of features, proprio and previous actions."""

    def __init__(self, cfg: PolicyConfig, feature_dims: Mapping[str, int], proprio_dim: int = 8,
                 action_dim: int = 8, normalizer: Normalizer | None = None) -> None:
        """feature_dims: {"feat_<camera>": F}; normalizer: stats for proprio, action (+ features)."""
        super().__init__()
        if not feature_dims:
            raise ValueError("the policy needs at least one camera feature (feature_dims is empty)")
        bad = [k for k in feature_dims if not k.startswith(FEAT_PREFIX)]
        if bad:
            raise ValueError(f"feature keys must start with {FEAT_PREFIX!r}, got {bad}")
        self.cfg = cfg
        self.feature_keys = tuple(sorted(feature_dims))
        self.feature_dims = {k: int(feature_dims[k]) for k in self.feature_keys}
        self.proprio_dim, self.action_dim = int(proprio_dim), int(action_dim)
        self.normalizer = normalizer if normalizer is not None else Normalizer()
        d = cfg.d_model
        self.n_obs_tokens = len(self.feature_keys) + 1 + cfg.prev_action_tokens  # cameras, proprio, previous action
        self.feature_proj = nn.ModuleDict({k: nn.Linear(f, d) for k, f in self.feature_dims.items()})
        self.proprio_proj = nn.Linear(self.proprio_dim, d)
        self.action_proj = nn.Linear(self.action_dim, d) if cfg.prev_action_tokens else None
        self.time_embed = nn.Parameter(torch.zeros(cfg.t_obs, d))  # (To, D)
        self.type_embed = nn.Parameter(torch.zeros(self.n_obs_tokens + 1, d))  # (K+1, D), last: queries
        self.queries = nn.Parameter(torch.zeros(cfg.t_act, d))  # (Ta, D)
        layer = nn.TransformerEncoderLayer(d, cfg.n_heads, cfg.ff_mult * d, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, cfg.n_layers, norm=nn.LayerNorm(d),
                                                 enable_nested_tensor=False)
        self.head = nn.Linear(d, self.action_dim)
        for p in (self.time_embed, self.type_embed, self.queries):
            nn.init.normal_(p, std=0.02)
        self.reset()

    @property
    def action_space(self) -> str:
        """``delta`` or ``absolute``: the env ``action_mode`` this policy's actions are for."""
        return self.cfg.action_space

    # ------------------------------------------------------------------------------- training
    def _normalized(self, key: str, x: torch.Tensor) -> torch.Tensor:
        if key.startswith(FEAT_PREFIX) and not self.cfg.normalize_features:
            return x
        return self.normalizer.normalize(key, x)

    def _check_batch(self, batch: Mapping[str, torch.Tensor]) -> tuple[int, int]:
        missing = [k for k in (*self.feature_keys, "proprio", "prev_action") if k not in batch]
        if missing:
            raise KeyError(f"batch lacks {missing}; the policy reads {[*self.feature_keys, 'proprio', 'prev_action']}")
        b, t = batch["proprio"].shape[:2]
        if t != self.cfg.t_obs:
            raise ValueError(f"observation window has {t} steps, the policy was built for t_obs={self.cfg.t_obs}")
        dims = {**self.feature_dims, "proprio": self.proprio_dim, "prev_action": self.action_dim}
        for key, dim in dims.items():
            shape = tuple(batch[key].shape)
            if shape != (b, t, dim):
                raise ValueError(f"{key}: expected shape {(b, t, dim)} (B, To, D), got {shape}; a feature dim "
                                 "mismatch means the cache or encoder differs from the one the policy was built for")
        return b, t

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Raw batch {feat_*: (B, To, F), proprio: (B, To, P), prev_action: (B, To, A), obs_is_pad,
        prev_action_is_pad: (B, To) bool (optional)} → normalized action chunk (B, Ta, A)."""
        b, t = self._check_batch(batch)
        feats = {k: self._normalized(k, batch[k]) for k in self.feature_keys}
        if self.training and self.cfg.feature_noise > 0:  # augmentation of the frozen features
            feats = {k: f + self.cfg.feature_noise * torch.randn_like(f) for k, f in feats.items()}
        tokens = [self.feature_proj[k](feats[k]) for k in self.feature_keys]
        tokens.append(self.proprio_proj(self.normalizer.normalize("proprio", batch["proprio"])))
        if self.cfg.prev_action_tokens:
            tokens.append(self.action_proj(self.normalizer.normalize("action", batch["prev_action"])))
        x = torch.stack(tokens, dim=2)  # (B, To, K, D)
        x = x + self.time_embed[:, None, :] + self.type_embed[None, :-1, :]
        x = x.flatten(1, 2)  # (B, To·K, D), step-major
        q = (self.queries + self.type_embed[-1]).expand(b, -1, -1)  # (B, Ta, D)
        obs_pad = batch.get("obs_is_pad")
        obs_pad = torch.zeros(b, t, dtype=torch.bool, device=x.device) if obs_pad is None else obs_pad.bool()
        act_pad = batch.get("prev_action_is_pad")
        act_pad = obs_pad if act_pad is None else act_pad.bool()
        n_obs = len(self.feature_keys) + 1
        mask = obs_pad[:, :, None].expand(b, t, n_obs)
        if self.cfg.prev_action_tokens:
            mask = torch.cat([mask, act_pad[:, :, None]], dim=2)
        mask = torch.cat([mask.flatten(1), torch.zeros(b, self.cfg.t_act, dtype=torch.bool, device=x.device)], 1)
        h = self.transformer(torch.cat([x, q], dim=1), src_key_padding_mask=mask)  # (B, To·K + Ta, D)
        return self.head(h[:, -self.cfg.t_act:])  # (B, Ta, A)

    def compute_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """L1/MSE over the non-padded steps of normalized actions: per-sample means, averaged over B.

        Per-sample normalization makes the loss of a batch the mean of its shards' losses, so DDP's
        gradient averaging equals single-process training on the same global batch.
        """
        target = self.normalizer.normalize("action", batch["action"])  # (B, Ta, A)
        return self.loss_from_prediction(self(batch).float(), target, batch["action_is_pad"])

    def loss_from_prediction(self, pred: torch.Tensor, target: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
        """pred, target (B, Ta, A) normalized; is_pad (B, Ta) bool → scalar loss (see ``compute_loss``)."""
        err = (pred - target).abs() if self.cfg.loss == "l1" else (pred - target).square()
        valid = ~is_pad.bool()  # (B, Ta)
        per_step = err.mean(-1) * valid  # (B, Ta)
        return (per_step.sum(1) / valid.sum(1).clamp(min=1)).mean()

    @torch.no_grad()
    def predict_chunk(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Raw batch (see ``forward``) → action chunk (B, Ta, A) in raw units."""
        return self.normalizer.unnormalize("action", self(batch).float())

    # -------------------------------------------------------------------------------- rollout
    def reset(self, batch_size: int = 1) -> None:
        """Forget the history: the next ``act`` starts a new episode in each of ``batch_size`` envs."""
        self._batch_size = batch_size
        self._t = 0
        self._history: dict[str, torch.Tensor] = {}
        self._last_action: torch.Tensor | None = None
        self._queue: list[torch.Tensor] = []  # receding: (B, A) actions still to execute
        self._chunks: list[tuple[int, torch.Tensor]] = []  # ensemble: (start step, (B, Ta, A))

    def _as_tensor(self, key: str, value: torch.Tensor | np.ndarray, dim: int) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
        x = x.to(self.time_embed.device, torch.float32)
        if x.ndim == 1:
            x = x[None]
        if x.shape != (self._batch_size, dim):
            raise ValueError(f"act(): {key} must have shape ({self._batch_size}, {dim}) (B, D) after reset("
                             f"batch_size={self._batch_size}), got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError(f"act(): {key} holds NaN or inf")
        return x

    def _push(self, obs: Mapping[str, torch.Tensor | np.ndarray]) -> dict[str, torch.Tensor]:
        """Append one step to the history; returns the (B, To, ...) window with its pad masks."""
        b, t_obs, t = self._batch_size, self.cfg.t_obs, self._t
        missing = [k for k in (*self.feature_keys, "proprio") if k not in obs]
        if missing:
            raise KeyError(f"act(): obs lacks {missing}; it needs {[*self.feature_keys, 'proprio']}")
        dims = {**self.feature_dims, "proprio": self.proprio_dim}
        new = {k: self._as_tensor(k, obs[k], d) for k, d in dims.items()}
        prev = torch.zeros(b, self.action_dim, device=self.time_embed.device) if self._last_action is None \
            else self._last_action
        new["prev_action"] = prev
        for key, x in new.items():
            if t == 0:  # pad the window with the first step, as the training windows do
                self._history[key] = x[:, None].expand(b, t_obs, x.shape[-1]).clone()
            else:
                self._history[key] = torch.cat([self._history[key][:, 1:], x[:, None]], dim=1)
        device = self.time_embed.device
        pos = torch.arange(t_obs, device=device)
        obs_is_pad = (pos < t_obs - 1 - t).expand(b, t_obs)  # steps before the episode start
        prev_is_pad = (pos <= t_obs - 1 - t).expand(b, t_obs)  # ... and the first step (no previous action)
        prev = torch.where(prev_is_pad[..., None], 0.0, self._history["prev_action"])
        return {**self._history, "prev_action": prev, "obs_is_pad": obs_is_pad, "prev_action_is_pad": prev_is_pad}

    @torch.no_grad()
    def act(self, obs: Mapping[str, torch.Tensor | np.ndarray]) -> torch.Tensor:
        """One control step: obs {feat_*: (B, F), proprio: (B, P)} (raw) → action to execute (B, A), raw."""
        window = self._push(obs)
        t = self._t
        if self.cfg.execution == "receding":
            if not self._queue:
                chunk = self.predict_chunk(window)  # (B, Ta, A)
                self._queue = list(chunk[:, : self.cfg.execute_steps].unbind(1))
            action = self._queue.pop(0)
        else:
            self._chunks.append((t, self.predict_chunk(window)))
            self._chunks = [(s, c) for s, c in self._chunks if t - s < self.cfg.t_act]
            preds = torch.stack([c[:, t - s] for s, c in self._chunks])  # (n, B, A), oldest first
            w = torch.exp(-self.cfg.ensemble_decay * torch.arange(len(preds), device=preds.device))
            action = (w[:, None, None] * preds).sum(0) / w.sum()
        self._last_action = action
        self._t += 1
        return action
