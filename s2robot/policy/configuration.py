"""The chunk transformer's configuration and its named presets (hydra group ``policy``)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from s2robot.data.keys import ACTION_SPACES

LOSSES = ("l1", "mse")
EXECUTIONS = ("receding", "ensemble")


@dataclass
class PolicyConfig:
    """The chunk transformer and how it executes. Presets: ``POLICY_PRESETS`` (hydra group ``policy``).

    t_obs / t_act: observation history To and action chunk Ta [steps]
    action_space: ``absolute`` (joint-position targets: measured best, README "The recipe") or ``delta``
        (joint-position deltas, the env's default action and the paper's)
    prev_action_tokens: feed the previous (executed) action as a token per past step (ACT does not)
    feature_noise: std of Gaussian noise added to the visual features while training (augmentation), in normalized
        units (raw units with ``normalize_features: false``)
    d_model, n_layers, n_heads, ff_mult, dropout: the transformer (pre-norm, GELU)
    loss: ``l1`` (ACT's choice) or ``mse``, over non-padded action steps of normalized actions
    normalize_features: also standardize the visual features (proprio and actions always are)
    execution: ``receding`` (run ``execute_steps`` of each chunk, then re-plan) or ``ensemble``
        (ACT temporal ensembling: re-plan every step, weights exp(-ensemble_decay · i), oldest i = 0); never trained
        on: a rollout may run them otherwise (``PolicyExecution``)
    """

    t_obs: int = 16
    t_act: int = 16
    action_space: str = "absolute"
    prev_action_tokens: bool = True
    feature_noise: float = 0.0
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    ff_mult: int = 4
    dropout: float = 0.1
    loss: str = "l1"
    normalize_features: bool = True
    execution: str = "receding"
    execute_steps: int = 8
    ensemble_decay: float = 0.01

    def __post_init__(self) -> None:
        if self.t_obs < 1 or self.t_act < 1:
            raise ValueError(f"t_obs and t_act must be ≥ 1 [steps], got {self.t_obs}, {self.t_act}")
        for name in ("d_model", "n_heads", "n_layers", "ff_mult"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1 (the transformer's size), got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be a multiple of n_heads {self.n_heads} (each head gets "
                             "d_model / n_heads channels)")
        if self.action_space not in ACTION_SPACES:
            raise ValueError(f"action_space must be one of {list(ACTION_SPACES)}, got {self.action_space!r}")
        if not (self.feature_noise >= 0 and math.isfinite(self.feature_noise)):
            raise ValueError(f"feature_noise must be ≥ 0 (a std in normalized units), got {self.feature_noise}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.execution not in EXECUTIONS:
            raise ValueError(f"execution must be one of {EXECUTIONS}, got {self.execution!r}")
        if not 1 <= self.execute_steps <= self.t_act:
            raise ValueError(f"execute_steps must be in [1, t_act={self.t_act}], got {self.execute_steps}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not math.isfinite(self.ensemble_decay):
            raise ValueError(f"ensemble_decay must be finite (weights exp(-ensemble_decay · i), oldest prediction "
                             f"i = 0), got {self.ensemble_decay}")


@dataclass
class PolicyExecution:
    """How a trained policy's chunks run in a rollout, on the same weights: the field ``executing`` of every entry
    point that rolls a policy out (``scripts/eval.py executing.execute_steps=8``, ``eval.executing.…`` in ``make
    run``). Training never reads these ``PolicyConfig`` fields (``EXECUTION_FIELDS``), so a run resumes across a
    change of them and a checkpoint may be executed another way than it was trained with.

    execution: ``receding`` or ACT's ``ensemble`` (``PolicyConfig.execution``); None: the checkpoint's
    execute_steps: actions run of each chunk under ``receding`` (``PolicyConfig.execute_steps``); None: the
        checkpoint's
    """

    execution: str | None = None
    execute_steps: int | None = None

    def __post_init__(self) -> None:
        if self.execution is not None and self.execution not in EXECUTIONS:
            raise ValueError(f"execution must be one of {list(EXECUTIONS)} or null (the checkpoint's), got "
                             f"{self.execution!r}")
        if self.execute_steps is not None and self.execute_steps < 1:
            raise ValueError(f"execute_steps must be ≥ 1 or null (the checkpoint's), got {self.execute_steps}")

    def given(self) -> dict[str, Any]:
        """The fields this names (not None)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def apply(self, policy: PolicyConfig) -> PolicyConfig:
        """``policy`` executed as this says (its own value where a field is None); refuses what the policy cannot
        run (e.g. more steps than its chunk), naming both."""
        try:
            return replace(policy, **self.given())
        except ValueError as e:
            trained = {k: getattr(policy, k) for k in EXECUTION_FIELDS}
            raise ValueError(f"cannot execute this policy (trained {trained}, t_act={policy.t_act}) with "
                             f"{self.given()}: {e}") from None


# The PolicyConfig fields that only say how chunks run (PolicyExecution's): training never reads them.
EXECUTION_FIELDS = tuple(f.name for f in fields(PolicyExecution))

# Named presets: only the fields that differ from ``PolicyConfig``'s defaults (``default`` is the defaults).
POLICY_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},  # 4 layers × 128 wide (0.85 M params): trains in minutes on a GPU
    "small": {"d_model": 64, "n_layers": 2},  # make run's: 2 layers × 64 wide, ~0.1 M params
    "tiny": {"d_model": 32, "n_layers": 1, "n_heads": 2, "ff_mult": 2, "dropout": 0.0},  # tests and smoke runs
}
