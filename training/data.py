"""Trajectories to training examples, and examples to padded batches.

An example is one assistant turn: the conversation up to that turn (rendered with the
model's chat template by `mentorgym.agents.chat.encode_chat`) followed by the target
turn. The loss covers the target tokens only.

The target of a turn:
- `target="teacher"` (SFT on teacher turns, DAgger): the teacher's label for the state,
  `turn.teacher_action`, or the action itself when the teacher acted and no separate
  label was stored. Turns without a teacher label are skipped.
- `target="action"`: whatever was done in that turn, whoever did it.
Where the target text is exactly what was sampled and the trajectory holds the sampled
`token_ids`, those ids are the target as they are (never a re-tokenization); otherwise the
text is tokenized and the end-of-turn token appended (`chat.target_ids`). Earlier
assistant turns in the context also use their sampled ids where the trajectory has them
(`chat.encode_chat_with_actions`).

Truncation policy (explicit and counted): when context + target exceed `max_seq_len`,
keep the leading system message(s) and the most recent messages that fit, dropping
whole messages from the left (and never starting the kept history on an assistant or
tool message). If even the system prompt, the current observation and the target do
not fit, the example is dropped. `BuildStats` counts both and `log()` says so.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from mentorgym.agents.chat import window_messages
from mentorgym.agents.trajectory import Trajectory, context
from mentorgym.envs.base import Message

log = logging.getLogger(__name__)

Target = Literal["teacher", "action"]
TEACHER_ACTORS = frozenset({"teacher", "expert"})


@dataclass
class Example:
    """One training sequence: `input_ids[:n_prompt]` is context, the rest is the target."""

    input_ids: list[int]
    n_prompt: int
    weight: float = 1.0
    """Per-example loss weight (e.g. down-weighting old DAgger iterations)."""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_target(self) -> int:
        return len(self.input_ids) - self.n_prompt

    def key(self) -> str:
        """A content hash (context and target) for de-duplication."""
        h = hashlib.sha1(np.asarray(self.input_ids, dtype=np.int64).tobytes())
        h.update(str(self.n_prompt).encode())
        return h.hexdigest()


@dataclass
class BuildStats:
    """What happened to the turns offered to `examples_from_trajectories`."""

    turns: int = 0
    examples: int = 0
    no_label: int = 0
    """Turns skipped because they carry no target under the chosen `target`."""
    truncated: int = 0
    """Examples whose context lost messages from the left to fit `max_seq_len`."""
    dropped: int = 0
    """Turns dropped because even the shortest allowed context plus target did not fit."""
    exact_ids: int = 0
    """Examples whose target came from the trajectory's sampled token ids."""

    def log(self, max_seq_len: int) -> str:
        line = (
            f"data: {self.examples} examples from {self.turns} turns "
            f"({self.exact_ids} with sampled ids); max_seq_len={max_seq_len}: "
            f"{self.truncated} truncated from the left, {self.dropped} dropped (too long), "
            f"{self.no_label} without a label"
        )
        log.info(line)
        return line

    def add(self, other: BuildStats) -> None:
        for k in ("turns", "examples", "no_label", "truncated", "dropped", "exact_ids"):
            setattr(self, k, getattr(self, k) + getattr(other, k))


def _chat() -> Any:
    # Imported late: agents.chat imports transformers, and config-only paths should not pay.
    from mentorgym.agents import chat

    return chat


def _segments(
    tokenizer: Any, messages: list[Message], action_ids: list[list[int] | None]
) -> list[list[int]]:
    """One id segment per message, exactly as `chat.encode_chat_with_actions` builds them.

    Computed once per trajectory so that every turn's context is a concatenation of
    segments (the chat encoding is prefix-stable by design), instead of re-rendering the
    template for every prefix. tests/test_data.py checks the equality with chat.
    """
    chat = _chat()
    suffix = chat.completion_suffix_ids(tokenizer)
    segs: list[list[int]] = []
    j = 0
    for i, m in enumerate(messages):
        sampled = None
        if m["role"] == "assistant":
            sampled = action_ids[j] if j < len(action_ids) else None
            j += 1
        if sampled is None:
            segs.append(chat.text_ids(tokenizer, chat.message_text(tokenizer, messages, i)))
            continue
        closing = suffix[1:] if suffix and sampled and sampled[-1] == suffix[0] else suffix
        gen = chat.text_ids(tokenizer, chat.generation_prompt_text(tokenizer, messages[:i]))
        segs.append(gen + list(sampled) + closing)
    return segs


def _turn_target_text(traj: Trajectory, k: int, target: Target) -> str | None:
    turn = traj.turns[k]
    if target == "action":
        return turn.action
    if turn.teacher_action is not None:
        return turn.teacher_action
    if turn.actor in TEACHER_ACTORS:
        return turn.action
    return None


def _fit_context(
    messages: list[Message],
    action_ids: list[list[int] | None],
    n_target: int,
    tokenizer: Any,
    max_seq_len: int,
) -> tuple[list[int] | None, bool]:
    """Truncated context ids that leave room for `n_target` tokens; (None, _) when nothing fits."""
    encode = _chat().encode_chat_with_actions
    n_sys = 0
    while n_sys < len(messages) and messages[n_sys]["role"] == "system":
        n_sys += 1
    head, rest = messages[:n_sys], messages[n_sys:]
    # The current observation: everything after the last assistant message; never dropped.
    last_asst = max((i for i, m in enumerate(rest) if m["role"] == "assistant"), default=-1)
    floor = last_asst + 1
    start = 0
    while start < floor:
        start += 1
        # Keep the history starting on a user turn, as chat templates and models expect.
        while start < floor and rest[start]["role"] != "user":
            start += 1
        n_asst_dropped = sum(m["role"] == "assistant" for m in rest[:start])
        ids = encode(
            tokenizer, head + rest[start:], action_ids[n_asst_dropped:], add_generation_prompt=True
        )
        if len(ids) + n_target <= max_seq_len:
            return ids, True
    return None, True


def examples_from_trajectories(
    trajs: Iterable[Trajectory],
    tokenizer: Any,
    *,
    max_seq_len: int,
    target: Target = "teacher",
    weight: float = 1.0,
    meta: dict[str, Any] | None = None,
    last_turns: int = 0,
    system_prompt: bool = True,
) -> tuple[list[Example], BuildStats]:
    """One example per labeled turn, with the truncation policy in the module docstring.

    `last_turns` / `system_prompt` apply `window_messages` to every context first (the
    student must act through the same window, see `sft.WindowedPolicy`).
    """
    examples: list[Example] = []
    stats = BuildStats()
    chat = _chat()
    for traj in trajs:
        if not traj.turns:
            continue
        # The whole episode as messages; turn k's context is a prefix of it.
        full = context(traj, len(traj.turns) - 1)
        action_ids = [t.token_ids for t in traj.turns]
        windowed = last_turns > 0 or not system_prompt
        segs = [] if windowed else _segments(tokenizer, full, action_ids)
        ends: list[int] = []  # message count of turn k's context
        n = 0
        for turn in traj.turns:
            n += len(turn.observation)
            ends.append(n)
            n += 1
        for k, turn in enumerate(traj.turns):
            stats.turns += 1
            text = _turn_target_text(traj, k, target)
            if text is None:
                stats.no_label += 1
                continue
            exact = turn.token_ids is not None and text == turn.action
            tgt = chat.target_ids(tokenizer, text=text, token_ids=turn.token_ids if exact else None)
            msgs = full[: ends[k]]
            kept = action_ids[:k]
            if windowed:
                msgs = window_messages(msgs, last_turns, system_prompt)
                n_asst = sum(m["role"] == "assistant" for m in msgs)
                kept = action_ids[k - n_asst : k]
                ctx = chat.encode_chat_with_actions(
                    tokenizer, msgs, kept, add_generation_prompt=True
                )
            else:
                ctx = [i for seg in segs[: ends[k]] for i in seg]
                ctx += chat.text_ids(tokenizer, chat.generation_prompt_text(tokenizer, msgs))
            truncated = False
            if len(ctx) + len(tgt) > max_seq_len:
                ctx, truncated = _fit_context(msgs, kept, len(tgt), tokenizer, max_seq_len)
            if ctx is None:
                stats.dropped += 1
                continue
            stats.truncated += int(truncated)
            stats.exact_ids += int(exact)
            stats.examples += 1
            examples.append(
                Example(
                    input_ids=ctx + tgt,
                    n_prompt=len(ctx),
                    weight=weight,
                    meta={**(meta or {}), "seed": traj.seed, "task_id": traj.task_id, "turn": k},
                )
            )
    return examples, stats


def dedupe(examples: list[Example]) -> list[Example]:
    """Drop examples whose context and target repeat an earlier one (the first is kept)."""
    seen: set[str] = set()
    out: list[Example] = []
    for ex in examples:
        key = ex.key()
        if key not in seen:
            seen.add(key)
            out.append(ex)
    return out


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded, shifted tensors for next-token training.

    `input_ids_BT[:, t]` predicts `labels_BT[:, t]` (= the next token); `mask_BT` is 1 on
    target tokens only, `attention_mask_BT` is 1 on real tokens, `weight_B` holds the
    example weights.
    """
    T = max(len(ex.input_ids) for ex in examples) - 1
    B = len(examples)
    input_ids_BT = torch.full((B, T), pad_id, dtype=torch.long)
    labels_BT = torch.full((B, T), pad_id, dtype=torch.long)
    mask_BT = torch.zeros((B, T), dtype=torch.float32)
    attention_mask_BT = torch.zeros((B, T), dtype=torch.long)
    weight_B = torch.tensor([ex.weight for ex in examples], dtype=torch.float32)
    for b, ex in enumerate(examples):
        ids = torch.tensor(ex.input_ids, dtype=torch.long)
        n = len(ex.input_ids) - 1
        input_ids_BT[b, :n] = ids[:-1]
        labels_BT[b, :n] = ids[1:]
        attention_mask_BT[b, :n] = 1
        # Position t predicts token t+1, which is a target token when t+1 >= n_prompt.
        mask_BT[b, max(ex.n_prompt - 1, 0) : n] = 1.0
    return {
        "input_ids_BT": input_ids_BT,
        "labels_BT": labels_BT,
        "mask_BT": mask_BT,
        "attention_mask_BT": attention_mask_BT,
        "weight_B": weight_B,
    }


def batch_order(n_examples: int, epoch: int, seed: int) -> np.ndarray:
    """The shuffled order of one epoch; a pure function of (n, epoch, seed) for exact resume."""
    rng = np.random.default_rng([seed, epoch])
    return rng.permutation(n_examples)


def iterate_batches(
    examples: list[Example],
    batch_size: int,
    *,
    seed: int,
    start_batch: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[list[Example]]:
    """An endless stream of global batches of `batch_size`, this rank's share of each.

    Batch i of the stream is the same whatever `start_batch` is, so a resumed run that
    skips the batches it already consumed sees exactly what the uninterrupted run saw.
    Each epoch is a fresh seeded permutation; the last partial batch of an epoch spills
    into the next epoch's order.
    """
    if not examples:
        raise ValueError("no training examples: the data produced none (see the data log line)")
    n = len(examples)
    i = start_batch
    while True:
        idx = [i * batch_size + j for j in range(batch_size)]
        picks = []
        for flat in idx:
            epoch, pos = divmod(flat, n)
            picks.append(int(_cached_order(n, epoch, seed)[pos]))
        yield [examples[p] for p in picks[rank::world_size]]
        i += 1


_ORDER_CACHE: dict[tuple[int, int, int], np.ndarray] = {}


def _cached_order(n: int, epoch: int, seed: int) -> np.ndarray:
    key = (n, epoch, seed)
    if key not in _ORDER_CACHE:
        if len(_ORDER_CACHE) > 8:
            _ORDER_CACHE.clear()
        _ORDER_CACHE[key] = batch_order(n, epoch, seed)
    return _ORDER_CACHE[key]
