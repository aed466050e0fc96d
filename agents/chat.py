"""Chat prompts as token ids, built so that earlier turns never change under later ones.

Trajectories store the exact ids a policy sampled, and trainers train on those ids. So a
prompt is not `tokenize(apply_chat_template(all messages))`: that can re-tokenize an
earlier assistant turn differently from how it was sampled, and some templates rewrite
earlier turns. Instead a prompt is the concatenation of one id segment per message:

- a message's text is what the tokenizer's own chat template adds for it: the template
  rendered over `messages[:i+1]` minus the render of `messages[:i]`. When the template
  rewrites earlier turns as later ones arrive (real Qwen3 strips `<think>` blocks from
  assistant turns before the last user message), that difference is not a suffix; the
  message is then rendered on its own after a neutral one-user-message context and the
  earlier turns keep the ids they had. So for Qwen3 a later prompt keeps earlier
  reasoning that the official template would drop: fidelity to what was sampled wins.
- an assistant message whose sampled ids are known becomes
  `generation_prompt_ids + sampled_ids + closing`, where `closing` is
  `completion_suffix_ids` (e.g. `<|im_end|>` + newline) minus the end-of-turn token
  when the sample already ends with it.

Hence `encode_chat(msgs[:k])` (with its generation prompt) followed by the sampled ids is
always a prefix of every later prompt of the same episode.

Rule for training targets (`target_ids`): a sampled turn's target is its sampled ids as
they are (they include the end-of-turn token when the model stopped on it; a turn cut by
length or a stop string gets none added, as the model did not sample one); a turn given
only as text (an expert's or a teacher's label) is its tokenized text plus the
end-of-turn token, so the student learns to stop.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from mentorgym.envs.base import Message
from mentorgym.errors import PolicyError

_SENTINEL = "\u2063MENTORGYM\u2063"
_NEUTRAL: list[dict[str, Any]] = [{"role": "user", "content": "."}]


def render(
    tokenizer: Any, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False
) -> str:
    """The chat template's text for `messages` (no tokenization)."""
    if not getattr(tokenizer, "chat_template", None):
        raise PolicyError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; "
            "use an instruct/chat checkpoint or set tokenizer.chat_template"
        )
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )


def text_ids(tokenizer: Any, text: str) -> list[int]:
    """Ids of already-rendered template text (no special tokens added)."""
    # The template already wrote any BOS into the text; never let the tokenizer add another.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _render_or_empty(tokenizer: Any, messages: Sequence[dict[str, Any]], gen: bool = False) -> str:
    if not messages:
        return ""
    return render(tokenizer, messages, add_generation_prompt=gen)


def message_text(tokenizer: Any, messages: Sequence[dict[str, Any]], i: int) -> str:
    """The text the chat template adds for `messages[i]` given the messages before it."""
    prev = _render_or_empty(tokenizer, messages[:i])
    full = render(tokenizer, messages[: i + 1])
    if full.startswith(prev):
        return full[len(prev) :]
    # The template rewrote an earlier turn; render this message on its own.
    for ctx in (_NEUTRAL, []):
        try:
            before = _render_or_empty(tokenizer, ctx)
            after = render(tokenizer, [*ctx, messages[i]])
        except Exception:  # some templates refuse a context without a user message
            continue
        if after.startswith(before):
            return after[len(before) :]
    raise PolicyError(
        f"the chat template of {getattr(tokenizer, 'name_or_path', '?')!r} cannot render "
        f"message {i} ({messages[i].get('role')}) on its own; give the tokenizer a template "
        "that renders messages incrementally"
    )


def generation_prompt_text(tokenizer: Any, messages: Sequence[dict[str, Any]]) -> str:
    """What the template appends to open an assistant turn after `messages`."""
    context = list(messages) or _NEUTRAL
    base = render(tokenizer, context)
    with_gen = render(tokenizer, context, add_generation_prompt=True)
    if not with_gen.startswith(base):
        raise PolicyError(
            "the chat template's generation prompt is not a suffix of the conversation"
        )
    return with_gen[len(base) :]


def completion_suffix_ids(tokenizer: Any) -> list[int]:
    """The ids that close an assistant turn in a rendered conversation (e.g. `<|im_end|>`, `\\n`).

    Its first id is the end-of-turn token a model emits to stop.
    """
    msgs = [*_NEUTRAL, {"role": "assistant", "content": _SENTINEL}]
    text = message_text(tokenizer, msgs, 1)
    return text_ids(tokenizer, text[text.rindex(_SENTINEL) + len(_SENTINEL) :])


def end_of_turn_id(tokenizer: Any) -> int:
    """The token that ends an assistant turn (first id of `completion_suffix_ids`, else eos)."""
    suffix = completion_suffix_ids(tokenizer)
    if suffix:
        return suffix[0]
    if tokenizer.eos_token_id is None:
        raise PolicyError(
            "the tokenizer has neither an end-of-turn token in its template nor an eos token"
        )
    return int(tokenizer.eos_token_id)


def encode_chat_with_actions(
    tokenizer: Any,
    messages: Sequence[Message | dict[str, Any]],
    action_ids: Sequence[list[int] | None] | None = None,
    add_generation_prompt: bool = True,
) -> list[int]:
    """Prompt ids for `messages`, using the sampled ids of assistant turns where known.

    `action_ids[j]` is the sampled ids of the j-th assistant message (None: tokenize its
    text). Each message is its own segment (see the module docstring), so a prompt begins
    with the ids of every earlier prompt of the episode plus the ids sampled after it.
    """
    msgs = list(messages)
    seg = _Segments(tokenizer, msgs)
    ids: list[int] = []
    suffix: list[int] | None = None
    j = 0
    for i, m in enumerate(msgs):
        sampled = None
        if m["role"] == "assistant":
            if action_ids is not None and j < len(action_ids):
                sampled = action_ids[j]
            j += 1
        if sampled is None:
            ids += seg.message(i)
            continue
        if suffix is None:
            suffix = completion_suffix_ids(tokenizer)
        closing = suffix[1:] if suffix and sampled and sampled[-1] == suffix[0] else suffix
        ids += seg.generation_prompt(i) + list(sampled) + closing
    if add_generation_prompt:
        ids += seg.generation_prompt(len(msgs))
    return ids


_SEGMENT_CACHE_SIZE = 1 << 15
"""Segments kept per tokenizer; the cache starts over when it is full."""


class _Segments:
    """The id segments of one conversation, memoized per tokenizer by the messages they depend
    on (a message's segment on the messages up to it, a generation prompt on those before it).

    An episode's prompt at turn k repeats every segment of turn k-1's, and each segment costs
    two renders of the chat template over the messages before it: without the memo a turn
    costs O(k^2) template work and an episode O(k^3), which on a 20-turn episode was most of
    the rollout engine's own time. With it, a turn renders only its new messages. The result
    is the same ids: a segment is a function of the tokenizer and those messages."""

    def __init__(self, tokenizer: Any, msgs: list[dict[str, Any]]) -> None:
        self.tokenizer, self.msgs = tokenizer, msgs
        try:  # messages as hashable tuples, once per call (keys are slices of this list)
            self.items: list[tuple] | None = [tuple(m.items()) for m in msgs]
            hash(tuple(self.items))
        except TypeError:  # a message with an unhashable field: no memo, same result
            self.items = None
        cache = getattr(tokenizer, "_mentorgym_segments", None)
        if cache is None:
            cache = {}
            try:
                tokenizer._mentorgym_segments = cache
            except AttributeError:  # a tokenizer that takes no attributes: no memo
                self.items = None
        self.cache: dict[tuple, list[int]] = cache

    def message(self, i: int) -> list[int]:
        """The ids of what the template adds for message i."""
        return self._get("message", i + 1)

    def generation_prompt(self, i: int) -> list[int]:
        """The ids of the generation prompt after the first i messages."""
        return self._get("generation", i)

    def _text(self, kind: str, upto: int) -> str:
        if kind == "message":
            return message_text(self.tokenizer, self.msgs, upto - 1)
        return generation_prompt_text(self.tokenizer, self.msgs[:upto])

    def _get(self, kind: str, upto: int) -> list[int]:
        """A segment that depends on messages[:upto], memoized."""
        if self.items is None:
            return text_ids(self.tokenizer, self._text(kind, upto))
        key = (kind, tuple(self.items[:upto]))
        hit = self.cache.get(key)
        if hit is None:
            hit = text_ids(self.tokenizer, self._text(kind, upto))
            if len(self.cache) >= _SEGMENT_CACHE_SIZE:
                self.cache.clear()
            self.cache[key] = hit
        return list(hit)


def encode_chat(
    tokenizer: Any, messages: Sequence[Message | dict[str, Any]], add_generation_prompt: bool = True
) -> list[int]:
    """Prompt ids for `messages`, one segment per message (assistant turns tokenized from text)."""
    return encode_chat_with_actions(tokenizer, messages, None, add_generation_prompt)


def target_ids(
    tokenizer: Any, text: str | None = None, token_ids: list[int] | None = None
) -> list[int]:
    """The ids a trainer should put labels on for one assistant turn (rule in the module docstring)."""
    if token_ids is not None:
        return list(token_ids)
    if text is None:
        raise ValueError("target_ids needs the turn's sampled token_ids or its text")
    return text_ids(tokenizer, text) + [end_of_turn_id(tokenizer)]


def window_messages(
    messages: list[Message], last_turns: int, system_prompt: bool = True
) -> list[Message]:
    """The messages a windowed policy sees: (the system prompt +) the last `last_turns` turns.

    `last_turns=1` keeps only the current observation (the messages after the last
    assistant message); `k` keeps the last k observations and the k-1 actions between
    them; `0` keeps everything. Training data and student rollouts apply the same window, so the
    student is trained on exactly the contexts it acts from.
    """
    if last_turns <= 0 and system_prompt:
        return messages
    n_sys = 0
    while n_sys < len(messages) and messages[n_sys]["role"] == "system":
        n_sys += 1
    head = messages[:n_sys] if system_prompt else []
    rest = messages[n_sys:]
    if last_turns <= 0:
        return head + rest
    asst = [i for i, m in enumerate(rest) if m["role"] == "assistant"]
    if len(asst) < last_turns:
        return head + rest
    # Cut just after the action that precedes the oldest kept observation.
    return head + rest[asst[-last_turns] + 1 :]


class SampledTurns:
    """The ids a policy sampled for its assistant turns, kept per episode.

    A prompt re-encodes an earlier assistant turn as the ids that were sampled for it (see
    the module docstring). They are looked up by episode and by the turn's position in the
    episode, never by text: two episodes (two members of one group) may write the same text
    with different ids. A remembered turn is used only while the message still holds the
    text that was sampled; anything else (an expert's turn, an edited history) is tokenized.
    The oldest episodes are dropped past `max_episodes`; the rollout engine forgets an
    episode when it ends.
    """

    def __init__(self, max_episodes: int = 4096):
        self.max_episodes = max_episodes
        self._episodes: dict[str, dict[int, tuple[str, list[int]]]] = {}
        self._lock = threading.Lock()

    def remember(self, episode: str, turn: int, text: str, ids: list[int]) -> None:
        with self._lock:
            turns = self._episodes.pop(episode, {})
            turns[turn] = (text, list(ids))
            self._episodes[episode] = turns  # re-inserted: most recently used last
            while len(self._episodes) > self.max_episodes:
                self._episodes.pop(next(iter(self._episodes)))

    def forget(self, episode: str) -> None:
        with self._lock:
            self._episodes.pop(episode, None)

    def action_ids(
        self, episode: str | None, messages: Sequence[Message]
    ) -> list[list[int] | None]:
        """For each assistant message of `messages` (a whole history), its sampled ids or None."""
        texts = [m["content"] for m in messages if m["role"] == "assistant"]
        with self._lock:
            turns = self._episodes.get(episode, {}) if episode is not None else {}
            out: list[list[int] | None] = []
            for j, text in enumerate(texts):
                known = turns.get(j)
                out.append(list(known[1]) if known is not None and known[0] == text else None)
        return out

    def __len__(self) -> int:
        return len(self._episodes)


def assistant_turns(messages: Sequence[Message]) -> int:
    """How many assistant messages `messages` holds (the index the next action will get)."""
    return sum(m["role"] == "assistant" for m in messages)


def encode_view(
    tokenizer: Any,
    messages: Sequence[Message],
    *,
    context_turns: int,
    system_prompt: bool,
    sampled: SampledTurns | None = None,
    episode: str | None = None,
) -> list[int]:
    """Prompt ids of what a policy sees of a history: its policy card's window and system
    prompt applied, earlier sampled turns as their sampled ids. Every model backend
    (`hf:`, `vllm:`, `openai:` with a local tokenizer) encodes prompts with this."""
    history = list(messages)
    known = sampled.action_ids(episode, history) if sampled is not None else []
    view = window_messages(history, context_turns, system_prompt)
    dropped = assistant_turns(history) - assistant_turns(view)
    return encode_chat_with_actions(tokenizer, view, known[dropped:] or None)


def completion_text(
    tokenizer: Any, ids: list[int], stop: Sequence[str] | None = None
) -> tuple[str, list[int], bool]:
    """A sampled completion's text as every backend reports it: `ids` decoded in one piece
    without special tokens, cut before the first stop string; the ids are cut after the
    token that completed it. Returns (text, ids, whether a stop string ended it).

    Servers and vLLM detokenize incrementally, which can differ from one decode on byte
    pieces (and then miss a stop string); decoding here keeps `hf:`, `vllm:` and `openai:`
    token for token and character for character the same."""

    def decode(part: list[int]) -> str:
        return tokenizer.decode(part, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    text = decode(ids)
    cuts = [i for i in (text.find(s) for s in stop or []) if i >= 0]
    if not cuts:
        return text, list(ids), False
    k = next(k for k in range(1, len(ids) + 1) if any(s in decode(ids[:k]) for s in stop or []))
    return text[: min(cuts)], list(ids[:k]), True
