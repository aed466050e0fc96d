"""GRPO: the sparse-reward baseline (Shao et al., 2024, "DeepSeekMath", group relative policy
optimization; DAPO's clip-higher ranges).

Each step samples `group_size` episodes of each of `tasks_per_step` tasks (the same env
seed within a group), turns each episode's reward R into the group-normalized advantage
`(R - mean_g) / (std_g + eps)` (`grpo_advantages`), and takes one AdamW step on the
clipped ratio loss `-min(r A, clip(r, 1 - e_lo, 1 + e_hi) A)` over every sampled
assistant token of the episode (`clipped_pg_loss`; r = pi_theta / pi_sampler). A group
whose members all got the same reward has zero advantage and teaches nothing.

Run: `mentorgym train configs/math_grpo.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mentorgym.agents.trajectory import Trajectory
from mentorgym.training import onpolicy as O
from mentorgym.training.losses import clipped_pg_loss, grpo_advantages


@dataclass
class Config(O.OnPolicyConfig):
    scale_advantages: bool = True
    """Divide by the group's std (GRPO); false only centers (Dr. GRPO)."""


def group_advantages(groups: list[list[Trajectory]], reward: str, scale: bool) -> list[float]:
    """One advantage per episode, in the flattened order of `groups`."""
    rewards_NG = torch.tensor([[O.episode_reward(t, reward) for t in g] for g in groups])
    return grpo_advantages(rewards_NG, scale=scale).flatten().tolist()


def pg_micro_loss(s, cfg: O.OnPolicyConfig, adv: list[float]) -> O.MicroLoss:
    """The clipped policy-gradient loss of a micro-batch with per-episode advantages `adv`."""

    def micro(
        idx: list[int], eps: list[O.Episode], b: O.Batch
    ) -> tuple[torch.Tensor, dict[str, float]]:
        hidden_BLH = O.hidden_at(s.model, b)
        logp_BL = O.logprobs_from_hidden(s.model, hidden_BLH, b.target_BL, cfg.rollout_temperature)
        adv_B = torch.tensor([adv[i] for i in idx], device=logp_BL.device)
        loss = clipped_pg_loss(
            logp_BL, b.logp_old_BL, adv_B, b.mask_BL, cfg.clip_low, cfg.clip_high
        )
        return loss, {"ratio_dev": _ratio_dev(logp_BL, b)}

    return micro


def _ratio_dev(logp_BL: torch.Tensor, b: O.Batch) -> float:
    """Mean |pi_theta / pi_sampler - 1| over loss tokens: ~0 when sampling and training agree."""
    dev_BL = (logp_BL.detach() - b.logp_old_BL).exp().sub(1).abs()
    return float((dev_BL * b.mask_BL).sum() / b.mask_BL.sum().clamp_min(1))


def train(cfg: Config, run_dir: Path, resume: bool) -> Path:
    """GRPO end to end; returns `RUN/final`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    s = O.setup(cfg, run_dir)

    def loss_fn(step: int, groups: list[list[Trajectory]]) -> tuple[float, dict[str, float]]:
        adv = group_advantages(groups, cfg.reward, cfg.scale_advantages)
        trajs = [t for g in groups for t in g]
        loss, info = O.accumulate(s, cfg, trajs, pg_micro_loss(s, cfg, adv))
        info["zero_adv_groups"] = float(
            sum(
                len({round(x, 9) for x in adv[i * cfg.group_size : (i + 1) * cfg.group_size]}) == 1
                for i in range(len(groups))
            )
        )
        return loss, info

    return O.train_loop(cfg, run_dir, resume, s, "grpo", loss_fn)


def dry_run(cfg: Config) -> list[str]:
    """Validate the config and check the env; returns report lines."""
    return O.dry_run_lines(cfg, "grpo")
