"""Shared pieces of the on-policy trainers (GRPO, OPD, SOD, Skill-SD, OPSD).

- `OnPolicyConfig`: the settings every on-policy algorithm has (each algorithm's `Config`
  adds its own fields on top; one level, no chain).
- `sample`: the student plays `tasks_per_step x group_size` episodes with the rollout
  engine (group member g of task i replays the same seed, so GRPO groups share a task).
- `encode_episode` / `make_batch`: an episode as token sequences built from the exact
  sampled ids, as `HFPolicy.encode` built the prompts: one sequence for the whole
  conversation (prefix-stable chat encoding), or one per turn when the student sees a
  window of the conversation (`context_turns`); and the loss tokens of a batch as compact
  rows: row b holds only episode b's sampled tokens, with where each sits in the input
  sequences, the sampler's logprobs and their step (turn) ids.
- `student_hidden`, `logprobs_from_hidden`: forwards that gather hidden states at the loss
  positions only, so the B x T x V logits are never built.
- `train_loop`: sample -> loss -> AdamW step, checkpoints (`RUN/checkpoints`, resumable at
  step granularity), `metrics.jsonl`, held-out evaluation every `eval_every` steps and at
  the end, and the final student in `RUN/final` (loadable with `hf:RUN/final`).

Single process only: these loops sample on the training process; under torchrun they stop
with a ConfigError rather than silently training one copy per rank.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.utils.checkpoint

from mentorgym.agents.hf import PolicyCard
from mentorgym.agents.tiny import SIZES
from mentorgym.agents.trajectory import Trajectory, context
from mentorgym.envs.base import Message
from mentorgym.errors import ConfigError
from mentorgym.training import sft
from mentorgym.training import trainer as T
from mentorgym.training.losses import token_logprobs


@dataclass
class OnPolicyConfig:
    env_id: str = "mentorgym/Sokoban-v0"
    """The registered env to train on and evaluate in."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for `mentorgym.make(env_id, **env_kwargs)`."""
    student: str = "tiny"
    """`tiny` (a fresh tiny model built in RUN/init), or a local path / hub id."""
    tiny_size: str = "tiny"
    """Size of a from-scratch tiny student: `tiny` or `small`."""
    seed: int = 0
    """Seeds the model init, sampling and the training env seeds."""
    steps: int = 50
    """Optimizer steps; each samples a fresh batch of episodes."""
    tasks_per_step: int = 8
    """Distinct tasks (env seeds) per step; step k uses seeds seed + k*tasks_per_step + [0, n)."""
    group_size: int = 4
    """Episodes per task (GRPO's G); episodes per step = tasks_per_step * group_size."""
    reward: str = "return"
    """Episode reward for group advantages: `return` (sum of env rewards) or `success`."""
    context_turns: int = 0
    """The student sees only the last N observations (1: the current one; 0: all), in
    sampling, in the loss and at evaluation alike (as DAgger's and SFT's setting)."""
    system_prompt: bool = True
    """Keep the env's system prompt in the student's context."""
    rollout_temperature: float = 1.0
    """Student sampling temperature; logprobs of the new policy use the same temperature."""
    max_seq_len: int = 2048
    """Longest episode sequence in tokens; turns past it are left out of the loss (counted)."""
    batch_size: int = 16
    """Episodes per micro-batch of the loss forward (memory knob; the step sees them all)."""
    grad_accum: int = 1
    """Kept for the shared optimizer settings; a step always covers its whole sampled batch."""
    lr: float = 2e-4
    """Peak AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay on matrices."""
    warmup_steps: int = 0
    """Linear warmup steps before the cosine decay."""
    min_lr_ratio: float = 0.1
    """Cosine decay floor as a fraction of `lr`."""
    grad_clip: float = 1.0
    """Gradient norm clip."""
    clip_low: float = 0.2
    """PPO ratio clip below 1 (1 - clip_low)."""
    clip_high: float = 0.28
    """PPO ratio clip above 1 (1 + clip_high, DAPO's clip-higher)."""
    precision: str = "auto"
    """`auto` (bf16 autocast on CUDA, fp32 on CPU), `bf16` or `fp32`."""
    model_dtype: str = "float32"
    """Dtype of the student's weights: `float32` or `bfloat16`."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    strategy: str = "ddp"
    """Unused by on-policy trainers (single process); kept for the shared optimizer settings."""
    device: str = "auto"
    """`auto`, `cpu`, `cuda`, `cuda:1`, ..."""
    save_every: int = 10
    """Checkpoint every N steps (0: only at the end)."""
    eval_every: int = 0
    """Held-out evaluation every N steps (0: only at the end)."""
    eval_episodes: int = 64
    """Held-out episodes per evaluation (0: skip)."""
    eval_seed: int = 1_000_000
    """First held-out seed; keep it above seed + steps * tasks_per_step."""
    eval_temperature: float = 0.0
    """Student temperature at evaluation (0: greedy)."""
    max_new_tokens: int = 64
    """Longest assistant turn the student may write."""
    concurrency: int = 32
    """Episodes stepped at once by the rollout engine (policy calls are batched)."""
    progress: bool = False
    """Show rollout progress bars."""

    def validate(self) -> None:
        for name in ("steps", "tasks_per_step", "group_size", "batch_size", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.context_turns < 0:
            raise ConfigError(f"context_turns must be >= 0 (0: all), got {self.context_turns}")
        for name in ("max_new_tokens", "concurrency", "grad_accum"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.reward not in ("return", "success"):
            raise ConfigError(f"reward {self.reward!r}: use return or success")
        if self.rollout_temperature <= 0:
            raise ConfigError("rollout_temperature must be > 0 (on-policy losses need sampling)")
        if self.tiny_size not in SIZES:
            raise ConfigError(f"tiny_size {self.tiny_size!r}: use one of {sorted(SIZES)}")
        if self.model_dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"model_dtype {self.model_dtype!r}: use float32 or bfloat16")
        if self.eval_seed < self.seed + self.steps * self.tasks_per_step:
            raise ConfigError(
                f"eval_seed {self.eval_seed} overlaps the training seeds "
                f"{self.seed}..{self.seed + self.steps * self.tasks_per_step - 1}; raise eval_seed"
            )

    @property
    def episodes_per_step(self) -> int:
        return self.tasks_per_step * self.group_size


# --- sampling ---------------------------------------------------------------------------------


def student_sampler(s: sft.Setup, cfg: OnPolicyConfig, step: int, temperature: float) -> Any:
    """The live student as a Policy, with a sampling seed of its own for this step."""
    from mentorgym.agents.hf import HFPolicy

    return HFPolicy(
        s.path,
        temperature=temperature,
        top_p=1.0,
        max_new_tokens=cfg.max_new_tokens,
        context_turns=cfg.context_turns,
        system_prompt=cfg.system_prompt,
        device=str(s.device),
        seed=cfg.seed * 1_000_003 + step,
        model=T.unwrap(s.model),
        tokenizer=s.tok,
    )


def sample(s: sft.Setup, cfg: OnPolicyConfig, step: int) -> list[list[Trajectory]]:
    """Step `step`'s episodes as `tasks_per_step` groups of `group_size` (same seed in a group)."""
    from mentorgym.agents.rollout import run

    s.model.eval()
    policy = student_sampler(s, cfg, step, cfg.rollout_temperature)
    seeds = [cfg.seed + step * cfg.tasks_per_step + i for i in range(cfg.tasks_per_step)]
    # The engine keys episodes by seed, so each group member is its own call; the policy's
    # generator advances between calls, so members differ.
    members = [
        run(
            cfg.env_id,
            policy,
            seeds=seeds,
            env_kwargs=cfg.env_kwargs,
            concurrency=cfg.concurrency,
            progress=cfg.progress,
        )
        for _ in range(cfg.group_size)
    ]
    s.model.train()
    return [[members[g][i] for g in range(cfg.group_size)] for i in range(len(seeds))]


def evaluate(s: sft.Setup, cfg: OnPolicyConfig, out: Path | None) -> dict[str, Any]:
    """The pure student on `eval_episodes` held-out seeds from `eval_seed` (with the context
    window it is sampled with in training)."""
    from mentorgym.agents.rollout import run, summarize

    s.model.eval()
    policy = student_sampler(s, cfg, -1, cfg.eval_temperature)
    trajs = run(
        cfg.env_id,
        policy,
        cfg.eval_episodes,
        seed=cfg.eval_seed,
        env_kwargs=cfg.env_kwargs,
        out=out,
        concurrency=cfg.concurrency,
        progress=cfg.progress,
    )
    s.model.train()
    return summarize(trajs)


def episode_reward(traj: Trajectory, kind: str) -> float:
    return float(traj.success) if kind == "success" else traj.return_


# --- episodes as token sequences -------------------------------------------------------------


@dataclass
class Episode:
    """One trajectory as token sequences; `spans[k]` locates turn k's sampled ids."""

    seqs: list[list[int]]
    """The input sequences: the whole conversation, or one per trainable turn when windowed."""
    spans: list[tuple[int, int, int]]
    """(sequence, start, end) of each trainable turn's sampled ids, in turn order."""
    turns: list[int]
    """The turn index of each span."""
    dropped_turns: int = 0
    """Trainable turns left out because their sequence passed `max_seq_len`."""


def with_note(messages: list[Message], note: str) -> list[Message]:
    """`messages` with `note` appended to the system prompt (or as a first system message)."""
    if messages and messages[0]["role"] == "system":
        first = {"role": "system", "content": messages[0]["content"] + "\n\n" + note}
        return [first, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]


def _ids(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def encode_episode(
    tok: Any,
    traj: Trajectory,
    max_seq_len: int,
    note: str | None = None,
    context_turns: int = 0,
    system_prompt: bool = True,
) -> Episode:
    """The episode as ids, each sampled turn exactly as sampled (never re-tokenized).

    With the whole conversation in view (`context_turns=0`) it is one sequence; with a
    window, each trainable turn is its own sequence: the windowed prompt the student acted
    from, then its sampled ids. Turns without sampled ids (an expert's or teacher's turn)
    are encoded from their text and are not trainable. `note` adds privileged context to
    the system prompt (a self-distillation teacher's view); the sampled ids are the same,
    only their positions move. Turns whose sequence passes `max_seq_len` are dropped from
    the spans and counted.
    """
    if context_turns > 0:
        return _encode_windowed(tok, traj, max_seq_len, note, context_turns, system_prompt)
    from mentorgym.agents import chat

    last = len(traj.turns) - 1
    msgs = context(traj, last) + [{"role": "assistant", "content": traj.turns[last].action}]
    msgs = chat.window_messages(msgs, 0, system_prompt)
    if note:
        msgs = with_note(msgs, note)
    suffix = chat.completion_suffix_ids(tok)
    ids: list[int] = []
    spans: list[tuple[int, int, int]] = []
    turns: list[int] = []
    dropped = 0
    k = 0
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            ids += _ids(tok, chat.message_text(tok, msgs, i))
            continue
        turn = traj.turns[k]
        sampled = turn.token_ids
        ids += _ids(tok, chat.generation_prompt_text(tok, msgs[:i]))
        body = list(sampled) if sampled is not None else chat.target_ids(tok, text=turn.action)
        start = len(ids)
        ids += body
        if sampled:
            if len(ids) <= max_seq_len:
                spans.append((0, start, len(ids)))
                turns.append(k)
            else:
                dropped += 1
        ids += suffix[1:] if suffix and body and body[-1] == suffix[0] else suffix
        k += 1
    return Episode([ids[:max_seq_len]], spans, turns, dropped)


def _encode_windowed(
    tok: Any,
    traj: Trajectory,
    max_seq_len: int,
    note: str | None,
    context_turns: int,
    system_prompt: bool,
) -> Episode:
    from mentorgym.agents import chat

    ep = Episode([], [], [])
    for k, turn in enumerate(traj.turns):
        if not turn.token_ids:
            continue
        msgs = chat.window_messages(context(traj, k), context_turns, system_prompt)
        if note:
            msgs = with_note(msgs, note)
        # The window's assistant messages are the turns just before k, in order.
        n_actions = sum(m["role"] == "assistant" for m in msgs)
        earlier = [traj.turns[j].token_ids for j in range(k - n_actions, k)]
        seq = chat.encode_chat_with_actions(tok, msgs, earlier) + list(turn.token_ids)
        if len(seq) > max_seq_len:
            ep.dropped_turns += 1
            continue
        ep.spans.append((len(ep.seqs), len(seq) - len(turn.token_ids), len(seq)))
        ep.seqs.append(seq)
        ep.turns.append(k)
    return ep


@dataclass
class Batch:
    """Loss tokens of B episodes as rows of length L (padding where `mask_BL` is 0).

    `input_ids_RT` / `attention_mask_RT` are the R input sequences of all B episodes (R = B
    when each episode is one sequence); loss token (b, l) sits at `pos_BL[b, l]` of input
    row `row_BL[b, l]` (the logits at `pos - 1` predict it).
    """

    input_ids_RT: torch.Tensor
    attention_mask_RT: torch.Tensor
    row_BL: torch.Tensor
    pos_BL: torch.Tensor
    target_BL: torch.Tensor
    mask_BL: torch.Tensor
    step_ids_BL: torch.Tensor
    """Turn number within the episode's trainable turns (0, 1, ...), -1 on padding."""
    logp_old_BL: torch.Tensor
    """The sampler's logprob of each token (from the trajectory)."""


def make_batch(
    episodes: list[Episode], trajs: list[Trajectory], pad_id: int, device: torch.device
) -> Batch:
    """Pack episodes (and their trajectories' sampler logprobs) into a `Batch` on `device`."""
    seqs = [seq for e in episodes for seq in e.seqs]
    R, T_ = len(seqs), max(len(seq) for seq in seqs)
    B = len(episodes)
    L = max(max(sum(end - start for _, start, end in e.spans), 1) for e in episodes)
    input_ids_RT = torch.full((R, T_), pad_id, dtype=torch.long)
    attention_mask_RT = torch.zeros((R, T_), dtype=torch.long)
    for r, seq in enumerate(seqs):
        input_ids_RT[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask_RT[r, : len(seq)] = 1
    row_BL = torch.zeros((B, L), dtype=torch.long)
    pos_BL = torch.ones((B, L), dtype=torch.long)
    target_BL = torch.full((B, L), pad_id, dtype=torch.long)
    mask_BL = torch.zeros((B, L))
    step_ids_BL = torch.full((B, L), -1, dtype=torch.long)
    logp_old_BL = torch.zeros((B, L))
    first_row = 0
    for b, (ep, traj) in enumerate(zip(episodes, trajs, strict=True)):
        j = 0
        for k, ((seq, start, end), turn) in enumerate(zip(ep.spans, ep.turns, strict=True)):
            n = end - start
            row_BL[b, j : j + n] = first_row + seq
            pos_BL[b, j : j + n] = torch.arange(start, end)
            target_BL[b, j : j + n] = torch.tensor(ep.seqs[seq][start:end])
            mask_BL[b, j : j + n] = 1.0
            step_ids_BL[b, j : j + n] = k
            lps = traj.turns[turn].logprobs
            if lps is None or len(lps) != n:
                raise ValueError(
                    f"turn {turn} of episode seed={traj.seed} has {n} sampled ids but "
                    f"{0 if lps is None else len(lps)} logprobs; sample with an `hf:` student"
                )
            logp_old_BL[b, j : j + n] = torch.tensor(lps)
            j += n
        first_row += len(ep.seqs)
    t = lambda x: x.to(device)  # noqa: E731
    return Batch(
        t(input_ids_RT),
        t(attention_mask_RT),
        t(row_BL),
        t(pos_BL),
        t(target_BL),
        t(mask_BL),
        t(step_ids_BL),
        t(logp_old_BL),
    )


def hidden_at(model: torch.nn.Module, b: Batch) -> torch.Tensor:
    """Final hidden states that predict the batch's loss tokens (at `pos - 1`): B x L x H."""
    inner = T.unwrap(model)
    base = getattr(inner, inner.base_model_prefix)
    out = base(input_ids=b.input_ids_RT, attention_mask=b.attention_mask_RT, use_cache=False)
    return out.last_hidden_state[b.row_BL, (b.pos_BL - 1).clamp_min(0)]


def lm_head(model: torch.nn.Module) -> torch.Tensor:
    """The output embedding matrix (V x H)."""
    return T.unwrap(model).get_output_embeddings().weight


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
    head = T.unwrap(model).get_output_embeddings()
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
    m = copy.deepcopy(T.unwrap(model))
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


@torch.no_grad()
def teacher_view(
    teacher: torch.nn.Module,
    tok: Any,
    trajs: list[Trajectory],
    student_eps: list[Episode],
    notes: list[str | None],
    cfg: OnPolicyConfig,
    device: torch.device,
    want_hidden: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An in-process teacher's logprobs (B x L, aligned with the student's batch rows) of the
    student's sampled tokens, each episode seen with its `note` (privileged context), and the
    teacher's hidden states at those tokens when `want_hidden` (for full-distribution JSD)."""
    # Notes make the teacher's sequence longer; give it room so no student token is lost.
    room = cfg.max_seq_len + max((len(_ids(tok, n)) + 8 for n in notes if n), default=0)
    t_eps = []
    for traj, ep, note in zip(trajs, student_eps, notes, strict=True):
        t_ep = encode_episode(tok, traj, room, note, cfg.context_turns, cfg.system_prompt)
        keep = set(ep.turns)
        pairs = [(s, k) for s, k in zip(t_ep.spans, t_ep.turns, strict=True) if k in keep]
        t_eps.append(Episode(t_ep.seqs, [s for s, _ in pairs], [k for _, k in pairs]))
        if [k for _, k in pairs] != ep.turns:
            raise ValueError(
                f"teacher view of episode seed={traj.seed} lost a turn; raise max_seq_len"
            )
    tb = make_batch(t_eps, trajs, tok.pad_token_id, device)
    hidden_BLH = hidden_at(teacher, tb)
    logp_BL = logprobs_from_hidden(teacher, hidden_BLH, tb.target_BL, 1.0)
    return logp_BL, (hidden_BLH if want_hidden else None)


def external_teacher_logprobs(
    teacher: Any, trajs: list[Trajectory], student_eps: list[Episode], L: int
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
    batched = getattr(teacher, "score_batch", None)
    scores = batched(items) if batched else [teacher.score(m, ids) for m, ids in items]
    for (b, j, n), sc in zip(where, scores, strict=True):
        if len(sc.logprobs) != n:
            raise ValueError(
                f"teacher {teacher.name} returned {len(sc.logprobs)} logprobs for {n} ids"
            )
        out_BL[b, j : j + n] = torch.tensor(sc.logprobs)
    return out_BL


# --- the loop -------------------------------------------------------------------------------------

LossFn = Callable[[int, list[list[Trajectory]]], tuple[float, dict[str, float]]]
"""(step, groups) -> (loss, metrics); it runs the backward passes itself (see `accumulate`)."""

MicroLoss = Callable[[list[int], list[Episode], Batch], tuple[torch.Tensor, dict[str, float]]]
"""(indices into the step's episodes, their encodings, their batch) -> (token-mean loss, metrics)."""


def setup(cfg: OnPolicyConfig, run_dir: Path) -> sft.Setup:
    """The student, device and metrics, as SFT and DAgger build them (single process)."""
    d = T.init_distributed()
    if d.enabled:
        raise ConfigError(
            "on-policy trainers sample on the training process and run single-process; "
            "start them without torchrun"
        )
    return sft.setup(cfg, run_dir)


def micro_batches(
    s: sft.Setup, cfg: OnPolicyConfig, trajs: list[Trajectory]
) -> list[tuple[list[int], list[Episode], Batch]]:
    """Episodes with at least one trainable turn, encoded and packed `batch_size` at a time.

    Returns (indices into `trajs`, episodes, batch) per micro-batch."""
    eps = [
        encode_episode(s.tok, t, cfg.max_seq_len, None, cfg.context_turns, cfg.system_prompt)
        for t in trajs
    ]
    keep = [i for i, e in enumerate(eps) if e.spans]
    out = []
    for i in range(0, len(keep), cfg.batch_size):
        idx = keep[i : i + cfg.batch_size]
        chunk = [eps[j] for j in idx]
        out.append(
            (idx, chunk, make_batch(chunk, [trajs[j] for j in idx], s.tok.pad_token_id, s.device))
        )
    return out


def accumulate(
    s: sft.Setup, cfg: OnPolicyConfig, trajs: list[Trajectory], micro_loss: MicroLoss
) -> tuple[float, dict[str, float]]:
    """Backward through the step's loss one micro-batch at a time.

    Each micro-batch's token-mean loss is weighted by its share of the step's loss tokens,
    so the gradient is that of the token mean over the whole step whatever `batch_size` is.
    Metrics are token-weighted means too. Returns (loss, metrics).
    """
    parts = micro_batches(s, cfg, trajs)
    n_total = sum(float(b.mask_BL.sum()) for _, _, b in parts)
    total = 0.0
    metrics: dict[str, float] = {}
    for idx, eps, batch in parts:
        share = float(batch.mask_BL.sum()) / max(n_total, 1.0)
        with T.autocast(s.device, cfg.precision):
            loss, info = micro_loss(idx, eps, batch)
        (loss * share).backward()
        total += float(loss.detach()) * share
        for k, v in info.items():
            metrics[k] = metrics.get(k, 0.0) + float(v) * share
    metrics["loss_tokens"] = n_total
    metrics["dropped_turns"] = float(sum(e.dropped_turns for _, eps, _ in parts for e in eps))
    return total, metrics


def train_loop(
    cfg: OnPolicyConfig,
    run_dir: Path,
    resume: bool,
    s: sft.Setup,
    name: str,
    loss_fn: LossFn,
    on_step_end: Callable[[int], None] | None = None,
    extra_state: Callable[[], dict[str, Any]] | None = None,
) -> Path:
    """Steps of sample -> loss -> update, with checkpoints, metrics and evaluation.

    `loss_fn` returns the step's loss (already averaged over the batch) and metrics;
    `on_step_end(step)` runs after each update (Skill-SD re-syncs its teacher there);
    `extra_state()` adds algorithm state to each checkpoint's `state.json`.
    Returns `RUN/final`.
    """
    optimizer = T.make_optimizer(s.model, s.opt)
    scheduler = T.make_scheduler(optimizer, s.opt, cfg.steps)
    state = T.RunState()
    ckpt = T.latest_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        state = T.load_checkpoint(ckpt, s.model, optimizer, scheduler, s.d)
        s.metrics.truncate(lambda r: r.get("step", 0) <= state.step)
        print(f"resuming {name} from {ckpt} (step {state.step})")

    def checkpoint() -> None:
        if extra_state is not None:
            state.extra = extra_state()
        T.save_checkpoint(run_dir, s.model, s.tok, optimizer, scheduler, state, s.d)

    t0 = time.time()
    print(f"{'step':>5} {'loss':>9} {'reward':>7} {'success':>7} {'heldout':>8} {'time':>6}")
    while state.step < cfg.steps:
        step = state.step
        groups = sample(s, cfg, step)
        trajs = [t for g in groups for t in g]
        optimizer.zero_grad(set_to_none=True)
        loss, info = loss_fn(step, groups)
        grad_norm = torch.nn.utils.clip_grad_norm_(s.model.parameters(), cfg.grad_clip)
        optimizer.step()
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        state.step += 1
        state.global_step = state.step
        rec: dict[str, Any] = {
            "kind": "train",
            "step": state.step,
            "loss": loss,
            "lr": lr,
            "grad_norm": float(grad_norm),
            "episodes": len(trajs),
            "episodes_total": state.step * cfg.episodes_per_step,
            "rollout_reward": sum(episode_reward(t, cfg.reward) for t in trajs) / len(trajs),
            "rollout_success": sum(t.success for t in trajs) / len(trajs),
            **info,
        }
        s.metrics.log(rec)
        if on_step_end is not None:
            on_step_end(state.step)
        held = "-"
        last = state.step == cfg.steps
        if cfg.eval_episodes > 0 and (
            last or (cfg.eval_every and state.step % cfg.eval_every == 0)
        ):
            summary = evaluate(s, cfg, run_dir / f"eval_step{state.step:05d}.jsonl")
            s.metrics.log(
                {
                    "kind": "eval",
                    "iteration": state.step,
                    "step": state.step,
                    "episodes_total": state.step * cfg.episodes_per_step,
                    **summary,
                }
            )
            held = f"{summary['success_rate']:.3f}"
        print(
            f"{state.step:>5} {rec['loss']:>9.4f} {rec['rollout_reward']:>7.3f} "
            f"{rec['rollout_success']:>7.3f} {held:>8} {time.time() - t0:>5.0f}s",
            flush=True,
        )
        if last or (cfg.save_every and state.step % cfg.save_every == 0):
            checkpoint()
    s.metrics.plot(run_dir / "curves.png")
    final = run_dir / "final"
    card = PolicyCard(
        context_turns=cfg.context_turns,
        system_prompt=cfg.system_prompt,
        temperature=cfg.eval_temperature,
        max_new_tokens=cfg.max_new_tokens,
    )
    T.save_model(s.model, s.tok, final, s.d, card)
    print(f"final student: {final}  (evaluate: mentorgym eval {cfg.env_id} --agent hf:{final})")
    return final


def load_extra_state(run_dir: Path) -> dict[str, Any]:
    """The algorithm state saved with the latest checkpoint ({} when there is none)."""
    ckpt = T.latest_checkpoint(run_dir)
    if ckpt is None:
        return {}
    return dict(json.loads((ckpt / "state.json").read_text()).get("extra", {}))


def dry_run_lines(cfg: OnPolicyConfig, name: str) -> list[str]:
    lines = sft.check_setup(cfg)
    lines.append(
        f"{name}: {cfg.steps} steps x {cfg.tasks_per_step} tasks x {cfg.group_size} episodes "
        f"= {cfg.steps * cfg.episodes_per_step} sampled episodes"
    )
    return lines
