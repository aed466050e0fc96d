"""On-policy distillation (OPD): the student samples, the teacher scores the same tokens.

Objectives (see DESIGN.md "Algorithms"):
- `loss: jsd`: GKD's generalized Jensen-Shannon divergence over the full vocabulary at every
  sampled position (Agarwal et al., 2024, "On-Policy Distillation of Language Models"),
  beta in [0, 1] (0 forward KL, 1 reverse KL). Needs the teacher's logits, so the teacher
  runs in process (`hf:PATH`); computed by `fused_linear_jsd` from the student's and the
  teacher's hidden states and LM heads, chunked, never holding B x T x V logits.
- `loss: sampled`: the per-token advantage A_t = lp_T - lp_S on the sampled tokens only,
  loss -mean ratio_t * A_t (Thinking Machines, "On-Policy Distillation", 2025; GKD's
  sampled form), PPO-clipped by `clip_eps`. Works with any teacher that can `score`: in
  process (`hf:PATH`) or remote (`openai:URL#MODEL`, a vLLM or `mentorgym serve-model`
  endpoint, through prompt_logprobs).

No environment reward is used: the teacher's judgement of each token is the signal.
Teacher and student must share a tokenizer (the teacher scores the student's own ids).

Run: `mentorgym train configs/sokoban_opd.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mentorgym.agents.trajectory import Trajectory
from mentorgym.errors import ConfigError
from mentorgym.training import onpolicy as O
from mentorgym.training.losses import fused_linear_jsd, sampled_token_distill_loss


@dataclass
class Config(O.OnPolicyConfig):
    teacher: str = "hf:runs/teacher/final"
    """The teacher: `hf:PATH` (in process) or `openai:URL#MODEL` (sampled loss only)."""
    loss: str = "sampled"
    """`sampled` (per-token lp_T - lp_S advantage) or `jsd` (full-distribution GKD)."""
    jsd_beta: float = 1.0
    """GKD beta for `loss: jsd`: 0 forward KL(T||S), 1 reverse KL(S||T), between: JSD."""
    clip_eps: float = 0.2
    """PPO clip of the ratio in the sampled loss (0: no clipping)."""
    jsd_chunk: int = 256
    """Tokens per chunk in the fused JSD (memory knob)."""

    def validate(self) -> None:
        super().validate()
        if self.loss not in ("sampled", "jsd"):
            raise ConfigError(f"loss {self.loss!r}: use sampled or jsd")
        if not 0.0 <= self.jsd_beta <= 1.0:
            raise ConfigError(f"jsd_beta must be in [0, 1], got {self.jsd_beta}")
        if self.loss == "jsd" and not is_in_process(self.teacher):
            raise ConfigError(
                f"loss: jsd needs the teacher's logits, so an in-process teacher (hf:PATH); "
                f"{self.teacher!r} can only score sampled tokens: set loss: sampled"
            )


def is_in_process(spec: str) -> bool:
    return not spec.startswith(("openai:", "vllm:", "expert", "random", "human", "replay:"))


def load_teacher(spec: str, s: Any) -> Any:
    """An in-process frozen model for `hf:PATH` / a path, else a `Teacher` policy."""
    if is_in_process(spec):
        from mentorgym.agents.tiny import default_tiny_path

        path = str(default_tiny_path()) if spec == "tiny" else spec.removeprefix("hf:")
        return O.load_frozen(path, s.device, s.tok)
    from mentorgym.agents.specs import load_policy

    teacher = load_policy(spec, temperature=1.0)
    if not hasattr(teacher, "score"):
        raise ConfigError(f"teacher {spec!r} cannot score tokens; use hf:PATH or openai:URL#MODEL")
    return teacher


def teacher_logprobs(
    teacher: Any,
    s: Any,
    cfg: O.OnPolicyConfig,
    trajs: list[Trajectory],
    eps: list[O.Episode],
    b: O.Batch,
    want_hidden: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The teacher's logprobs of the batch's tokens (B x L), and its hidden states if asked."""
    if isinstance(teacher, torch.nn.Module):
        return O.teacher_view(
            teacher, s.tok, trajs, eps, [None] * len(eps), cfg, s.device, want_hidden
        )
    lp_BL = O.external_teacher_logprobs(teacher, trajs, eps, b.mask_BL.shape[1])
    return lp_BL.to(s.device), None


def train(cfg: Config, run_dir: Path, resume: bool) -> Path:
    """OPD end to end; returns `RUN/final`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    s = O.setup(cfg, run_dir)
    teacher = load_teacher(cfg.teacher, s)
    print(
        f"teacher: {cfg.teacher} ({'in process' if isinstance(teacher, torch.nn.Module) else 'remote'}), loss: {cfg.loss}"
    )

    def loss_fn(step: int, groups: list[list[Trajectory]]) -> tuple[float, dict[str, float]]:
        trajs = [t for g in groups for t in g]

        def micro(
            idx: list[int], eps: list[O.Episode], b: O.Batch
        ) -> tuple[torch.Tensor, dict[str, float]]:
            sub = [trajs[i] for i in idx]
            lp_t_BL, t_hidden_BLH = teacher_logprobs(
                teacher, s, cfg, sub, eps, b, cfg.loss == "jsd"
            )
            hidden_BLH = O.hidden_at(s.model, b)
            # The reverse-KL estimate on the sampled tokens, logged in both modes.
            kl = float(((b.logp_old_BL - lp_t_BL) * b.mask_BL).sum() / b.mask_BL.sum().clamp_min(1))
            if cfg.loss == "jsd":
                assert t_hidden_BLH is not None
                loss = fused_linear_jsd(
                    hidden_BLH,
                    O.lm_head(s.model),
                    t_hidden_BLH,
                    O.lm_head(teacher),
                    b.mask_BL,
                    cfg.jsd_beta,
                    cfg.rollout_temperature,
                    chunk_size=cfg.jsd_chunk,
                )
            else:
                logp_BL = O.logprobs_from_hidden(
                    s.model, hidden_BLH, b.target_BL, cfg.rollout_temperature
                )
                loss = sampled_token_distill_loss(
                    logp_BL, b.logp_old_BL, lp_t_BL, b.mask_BL, cfg.clip_eps or None
                )
            return loss, {"sampled_reverse_kl": kl}

        return O.accumulate(s, cfg, trajs, micro)

    return O.train_loop(cfg, run_dir, resume, s, "opd", loss_fn)


def dry_run(cfg: Config) -> list[str]:
    """Validate the config and check env and teacher spec; returns report lines."""
    return O.dry_run_lines(cfg, f"opd ({cfg.loss})")
