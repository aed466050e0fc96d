"""Trajectories as token sequences: the one encoding module of training.

Two shapes of the same encoding (the chat template rendered by `mentorgym.agents.chat`,
sampled ids used as they were sampled):
- `examples_from_trajectories` / `collate` (SFT, DAgger): one example per labeled turn.
- `encode_episode` / `make_batch` (the on-policy trainers): one episode as the sequences
  the student sampled from, and the sampled tokens of a batch of episodes as compact rows.

The truncation rule, one for both: a turn whose context plus target (its sampled or
labeled ids) passes `max_seq_len` is left out of the loss and counted; contexts are never
cut, so what is trained on is what the student sees when it acts.

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

Token ids of turns the student did not write (a teacher's) are used only when
`foreign_ids` says the teacher shares the student's tokenizer; otherwise their text is
encoded with the student's tokenizer.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from mentorgym.agents import chat
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
    """Turns skipped because they carry no target under the chosen `target` (or whose actor
    is not among the trained ones)."""
    unlabeled: int = 0
    """Of `no_label`, the turns the teacher gave no label at all (e.g. a Sokoban dead end
    without `undo`): states the student reached that no example teaches."""
    dropped: int = 0
    """Turns left out because their context plus target passes `max_seq_len`."""
    exact_ids: int = 0
    """Examples whose target came from the trajectory's sampled token ids."""

    def log(self, max_seq_len: int) -> str:
        line = (
            f"data: {self.examples} examples from {self.turns} turns "
            f"({self.exact_ids} with sampled ids); max_seq_len={max_seq_len}: "
            f"{self.dropped} dropped (too long), {self.no_label} without a label "
            f"({self.unlabeled} the teacher could not label)"
        )
        log.info(line)
        return line

    def add(self, other: BuildStats) -> None:
        for k in ("turns", "examples", "no_label", "unlabeled", "dropped", "exact_ids"):
            setattr(self, k, getattr(self, k) + getattr(other, k))


def _segments(
    tokenizer: Any, messages: list[Message], action_ids: list[list[int] | None]
) -> list[list[int]]:
    """One id segment per message, exactly as `chat.encode_chat_with_actions` builds them.

    Computed once per trajectory so that every turn's context is a concatenation of
    segments (the chat encoding is prefix-stable by design), instead of re-rendering the
    template for every prefix. tests/test_data.py checks the equality with chat.
    """
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
    foreign_ids: bool = True,
    actors: frozenset[str] | None = None,
) -> tuple[list[Example], BuildStats]:
    """One example per labeled turn, with the truncation rule in the module docstring.

    `last_turns` / `system_prompt` apply `window_messages` to every context first (the
    student acts through the same window). `foreign_ids=False` re-encodes the text of turns
    not written by the student (a teacher with another tokenizer). `actors` keeps examples
    only of turns those actors took; the other turns stay in the context, unlabeled.
    """
    examples: list[Example] = []
    stats = BuildStats()
    for traj in trajs:
        if not traj.turns:
            continue
        # The whole episode as messages; turn k's context is a prefix of it.
        full = context(traj, len(traj.turns) - 1)
        action_ids = [
            t.token_ids if foreign_ids or t.actor == "student" else None for t in traj.turns
        ]
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
            if text is None or (actors is not None and turn.actor not in actors):
                stats.no_label += 1
                stats.unlabeled += text is None
                continue
            exact = action_ids[k] is not None and text == turn.action
            tgt = chat.target_ids(tokenizer, text=text, token_ids=action_ids[k] if exact else None)
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
            if len(ctx) + len(tgt) > max_seq_len:
                stats.dropped += 1
                continue
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


# --- episodes (the on-policy trainers) ------------------------------------------------------


@dataclass
class TokenizedEpisode:
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


def encode_episode(
    tok: Any,
    traj: Trajectory,
    max_seq_len: int,
    note: str | None = None,
    context_turns: int = 0,
    system_prompt: bool = True,
) -> TokenizedEpisode:
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
            ids += chat.text_ids(tok, chat.message_text(tok, msgs, i))
            continue
        turn = traj.turns[k]
        sampled = turn.token_ids
        ids += chat.text_ids(tok, chat.generation_prompt_text(tok, msgs[:i]))
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
    return TokenizedEpisode([ids[:max_seq_len]], spans, turns, dropped)


def _encode_windowed(
    tok: Any,
    traj: Trajectory,
    max_seq_len: int,
    note: str | None,
    context_turns: int,
    system_prompt: bool,
) -> TokenizedEpisode:
    ep = TokenizedEpisode([], [], [])
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
    episodes: list[TokenizedEpisode], trajs: list[Trajectory], pad_id: int, device: torch.device
) -> Batch:
    """Pack episodes (and their trajectories' sampler logprobs) into a `Batch` on `device`."""
    seqs = [seq for e in episodes for seq in e.seqs]
    R, T = len(seqs), max(len(seq) for seq in seqs)
    B = len(episodes)
    L = max(max(sum(end - start for _, start, end in e.spans), 1) for e in episodes)
    input_ids_RT = torch.full((R, T), pad_id, dtype=torch.long)
    attention_mask_RT = torch.zeros((R, T), dtype=torch.long)
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
    tensors = (input_ids_RT, attention_mask_RT, row_BL, pos_BL, target_BL, mask_BL)
    return Batch(*(x.to(device) for x in (*tensors, step_ids_BL, logp_old_BL)))
