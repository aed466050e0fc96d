"""Logprobs of the student's sampled tokens, by the student and by teachers.

- `hidden_at`, `logprobs_from_hidden`, `lm_head`: forwards that gather hidden states at the
  loss positions only, so the B x T x V logits are never built.
- Teachers: `load_teacher` (a frozen in-process model when the spec names weights, else any `Teacher`
  that can `score` ids, such as `openai:URL#MODEL`), `frozen_copy` (the student's own copy,
  for self-distillation), and `teacher_logprobs` / `teacher_view`: the teacher's logprobs of
  the batch's tokens, each episode optionally seen with a note (privileged context).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.utils.checkpoint

from mentorgym.agents import chat
from mentorgym.agents.base import Teacher
from mentorgym.agents.spec import parse_agent_spec
from mentorgym.agents.trajectory import Trajectory, context
from mentorgym.envs.base import Message
from mentorgym.errors import ConfigError
from mentorgym.training.config import OnPolicyConfig
from mentorgym.training.data import Batch, TokenizedEpisode, encode_episode, make_batch
from mentorgym.training.distributed import unwrap
from mentorgym.training.losses import token_logprobs


def hidden_at(model: torch.nn.Module, b: Batch) -> torch.Tensor:
    """Final hidden states that predict the batch's loss tokens (at `pos - 1`): B x L x H."""
    inner = unwrap(model)
    base = getattr(inner, inner.base_model_prefix)
    out = base(input_ids=b.input_ids_RT, attention_mask=b.attention_mask_RT, use_cache=False)
    return out.last_hidden_state[b.row_BL, (b.pos_BL - 1).clamp_min(0)]


def lm_head(model: torch.nn.Module) -> torch.Tensor:
    """The output embedding matrix (V x H)."""
    return unwrap(model).get_output_embeddings().weight


LOGPROB_CHUNK = 2048
"""Positions whose logits `logprobs_from_hidden` makes at once (a chunk x V block)."""


def logprobs_from_hidden(
    model: torch.nn.Module,
    hidden_BLH: torch.Tensor,
    target_BL: torch.Tensor,
    temperature: float,
    chunk: int = LOGPROB_CHUNK,
) -> torch.Tensor:
    """log pi(target) at each loss position, from gathered hidden states.

    The logits are made `chunk` positions at a time and, when a gradient is needed, made again
    in backward (activation checkpointing), so memory holds one chunk x V block rather than
    B x L x V: at Qwen3's vocabulary that block is what dominates a long batch."""
    head = unwrap(model).get_output_embeddings()
    B, L, H = hidden_BLH.shape
    h_NH, t_N = hidden_BLH.reshape(B * L, H), target_BL.reshape(B * L)

    def part(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return token_logprobs(head(h), t, temperature)

    grad = torch.is_grad_enabled() and (h_NH.requires_grad or head.weight.requires_grad)
    parts = [
        torch.utils.checkpoint.checkpoint(
            part, h_NH[i : i + chunk], t_N[i : i + chunk], use_reentrant=False
        )
        if grad and B * L > chunk
        else part(h_NH[i : i + chunk], t_N[i : i + chunk])
        for i in range(0, B * L, chunk)
    ]
    return torch.cat(parts).view(B, L)


# --- teachers ----------------------------------------------------------------------------------


def load_frozen(path: str, device: torch.device, student_tok: Any) -> torch.nn.Module:
    """A teacher checkpoint in process, frozen; its tokenizer must be the student's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except OSError as e:
        raise ConfigError(
            f"teacher {path!r} could not be loaded ({e}); give a local HF folder. The shipped "
            "configs expect a DAgger-trained teacher there: run `mentorgym train "
            "configs/sokoban_dagger.yaml --out runs/sokoban_dagger` (or configs/math_dagger.yaml "
            "--out runs/math_dagger) first"
        ) from e
    if tok.get_vocab() != student_tok.get_vocab():
        raise ConfigError(
            f"teacher {path!r} has a different tokenizer from the student; token-level "
            "distillation scores the student's own token ids, so give both the same tokenizer "
            "(e.g. build the teacher with the student's tokenizer, see bench/distill_compare.py)"
        )
    return frozen_copy(model).to(device)


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy with gradients off, in eval mode (a teacher or a reference)."""
    m = copy.deepcopy(unwrap(model))
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


@torch.no_grad()
def teacher_view(
    teacher: torch.nn.Module,
    tok: Any,
    trajs: list[Trajectory],
    student_eps: list[TokenizedEpisode],
    notes: list[str | None],
    cfg: OnPolicyConfig,
    device: torch.device,
    want_hidden: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An in-process teacher's logprobs (B x L, aligned with the student's batch rows) of the
    student's sampled tokens, each episode seen with its `note` (privileged context), and the
    teacher's hidden states at those tokens when `want_hidden` (for full-distribution JSD)."""
    # Notes make the teacher's sequence longer; give it room so no student token is lost.
    room = cfg.max_seq_len + max((len(chat.text_ids(tok, n)) + 8 for n in notes if n), default=0)
    t_eps = []
    for traj, ep, note in zip(trajs, student_eps, notes, strict=True):
        t_ep = encode_episode(tok, traj, room, note, cfg.context_turns, cfg.system_prompt)
        keep = set(ep.turns)
        pairs = [(s, k) for s, k in zip(t_ep.spans, t_ep.turns, strict=True) if k in keep]
        t_eps.append(TokenizedEpisode(t_ep.seqs, [s for s, _ in pairs], [k for _, k in pairs]))
        if [k for _, k in pairs] != ep.turns:
            raise ValueError(
                f"teacher view of episode seed={traj.seed} lost a turn; raise max_seq_len"
            )
    tb = make_batch(t_eps, trajs, tok.pad_token_id, device)
    hidden_BLH = hidden_at(teacher, tb)
    logp_BL = logprobs_from_hidden(teacher, hidden_BLH, tb.target_BL, 1.0)
    return logp_BL, (hidden_BLH if want_hidden else None)


def external_teacher_logprobs(
    teacher: Teacher, trajs: list[Trajectory], student_eps: list[TokenizedEpisode], L: int
) -> torch.Tensor:
    """Logprobs from any `Teacher` (e.g. `openai:` via prompt_logprobs): one `score` call per
    turn with that turn's whole context and its sampled ids (a teacher with a context window
    of its own, such as `hf:` with a policy card, applies it). B x L, aligned with the batch
    rows."""
    out_BL = torch.zeros((len(trajs), L))
    items: list[tuple[list[Message], list[int]]] = []
    where: list[tuple[int, int, int]] = []
    for b, (traj, ep) in enumerate(zip(trajs, student_eps, strict=True)):
        j = 0
        for (_, start, end), k in zip(ep.spans, ep.turns, strict=True):
            items.append((context(traj, k), list(traj.turns[k].token_ids or [])))
            where.append((b, j, end - start))
            j += end - start
    # A backend that scores many completions at once (hf, openai) says so with `score_batch`.
    batched = getattr(teacher, "score_batch", None)
    scores = batched(items) if batched else [teacher.score(m, ids) for m, ids in items]
    for (b, j, n), sc in zip(where, scores, strict=True):
        if len(sc.logprobs) != n:
            raise ValueError(
                f"teacher {teacher.name} returned {len(sc.logprobs)} logprobs for {n} ids"
            )
        out_BL[b, j : j + n] = torch.tensor(sc.logprobs)
    return out_BL


def load_teacher(spec: str, device: torch.device, student_tok: Any) -> torch.nn.Module | Teacher:
    """A frozen model in this process when the spec names weights (`hf:PATH`, a bare path,
    `tiny`), else a `Teacher` that scores ids (`openai:URL#MODEL`)."""
    parsed = parse_agent_spec(spec)
    if parsed.weights:
        return load_frozen(parsed.path, device, student_tok)
    if parsed.kind == "expert":  # the Sokoban solver as a token-level teacher
        from mentorgym.agents.expert_teacher import ExpertTeacher

        return ExpertTeacher(student_tok)
    from mentorgym.agents.specs import load_policy

    teacher = load_policy(parsed, temperature=1.0)
    if not isinstance(teacher, Teacher):
        raise ConfigError(
            f"teacher {spec!r} cannot score tokens; use hf:PATH, openai:URL#MODEL or expert"
        )
    teacher_tok = getattr(teacher, "tokenizer", None)  # vllm: holds one; openai: loads it later
    if teacher_tok is not None and teacher_tok.get_vocab() != student_tok.get_vocab():
        raise ConfigError(
            f"teacher {spec!r} has a different tokenizer from the student; token-level "
            "distillation scores the student's own token ids, so give both the same tokenizer"
        )
    return teacher


def teacher_logprobs(
    teacher: torch.nn.Module | Teacher,
    tok: Any,
    cfg: OnPolicyConfig,
    trajs: list[Trajectory],
    eps: list[TokenizedEpisode],
    batch: Batch,
    device: torch.device,
    want_hidden: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The teacher's logprobs of the batch's tokens (B x L), and its hidden states if asked
    (in-process teachers only)."""
    if isinstance(teacher, torch.nn.Module):
        return teacher_view(teacher, tok, trajs, eps, [None] * len(eps), cfg, device, want_hidden)
    lp_BL = external_teacher_logprobs(teacher, trajs, eps, batch.mask_BL.shape[1])
    return lp_BL.to(device), None
