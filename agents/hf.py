"""The `hf:` backend: a local transformers causal LM as a Policy and a Teacher.

`HFPolicy` samples with its own loop over the KV cache (left-padded batch, one forward
per new token) so it can return, for every sampled token, the exact id and its sampling
logprob. Which distribution the numbers come from:

- `generate`/`act_batch` with temperature > 0: the distribution tokens were drawn from,
  `log_softmax(logits / temperature)`, restricted to the top-p nucleus and renormalized
  when top_p < 1. That is the sampler's log pi of each sampled token, as trainers need.
- temperature 0 is greedy decoding; its logprobs are of the plain model distribution
  `log_softmax(logits)` (temperature 1, no top-p).
- `score`, `score_batch` and `prompt_logprobs` always use the plain model distribution.
  So at temperature 1 and top_p 1 a sample's logprobs equal its `score`.

Sampled ids exclude padding and include the end-of-turn/eos token when the model sampled
it (finish_reason "stop"). A stop string cuts the text before the stop string and cuts the
ids after the token that completed it (finish_reason "stop"). Text is decoded without
special tokens; `<tool_call>`/`<answer>` are ordinary added tokens and stay in the text.
All model calls hold one lock, so the model server's and the rollout engine's threads can
share a policy.

Reproducible sampling: with the rollout engine's turn seeds (`try_act_batch`'s `seeds`),
each row draws from a torch.Generator of its own seeded by (run seed, episode, turn), so
its tokens do not depend on the rest of its batch (`mentorgym.agents.seeding`).

KV cache between turns: with episode keys, each live episode's keys and values are kept
after its turn; the next turn's prompt feeds only what follows its longest common prefix
with them (all of the last prompt and the sampled ids when the prompt extends it, the
common head after a window slide). Kept caches are dropped at `end_episode`, least recently
used first past `kv_cache_bytes`, and all at once when a GPU runs short of free memory.
"""

from __future__ import annotations

import inspect
import random
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from mentorgym.agents.base import Action, BatchedPolicy, Scores
from mentorgym.agents.card import (  # noqa: F401  (re-exported: trainers import the card from here)
    POLICY_CARD,
    PolicyCard,
    card_for,
    merge_card,
    read_policy_card,
    write_policy_card,
)
from mentorgym.agents.chat import SampledTurns, assistant_turns, encode_view, end_of_turn_id
from mentorgym.agents.seeding import request_seed
from mentorgym.envs.base import Message
from mentorgym.errors import PolicyError, RequestError

_SCORE_BATCH = 8
_KV_CACHE_BYTES = 2 << 30
"""Default budget of the KV cache kept between turns (least recently used dropped first)."""
_CUDA_FREE_FLOOR = 0.1
"""Drop every kept KV cache when less than this share of the GPU's memory is free."""


@dataclass
class _KV:
    """One episode's kept keys and values: those of `ids`, per layer [heads, len(ids), dim]."""

    ids: list[int]
    layers: list[tuple[torch.Tensor, torch.Tensor]]

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.layers)


@dataclass
class _Layout:
    """Where a batch's rows sit in its cache: row b's kept tokens fill the last kept[b] of
    the first C slots; its fed prompt tokens the last fed[b] of the next L."""

    C: int
    L: int
    kept: list[int]
    fed: list[int]


@dataclass
class Generation:
    """One sampled completion."""

    token_ids: list[int]
    logprobs: list[float]
    top_logprobs: list[dict[int, float]] | None
    text: str
    finish_reason: Literal["stop", "length"]


class HFPolicy(BatchedPolicy):
    """A transformers causal LM from a local path (or a hub id where a hub is reachable).

    Implements Policy (`act`, `act_batch`) and Teacher (`score`). Pass `model` and
    `tokenizer` to wrap objects already in memory (a trainer's student).
    """

    def __init__(
        self,
        path_or_id: str,
        *,
        temperature: float | None = None,
        top_p: float | None = None,
        max_new_tokens: int | None = None,
        stop: list[str] | None = None,
        context_turns: int | None = None,
        system_prompt: bool | None = None,
        device: str | None = None,
        dtype: str | None = None,
        seed: int | None = None,
        kv_cache: bool = True,
        kv_cache_bytes: int = _KV_CACHE_BYTES,
        model: Any = None,
        tokenizer: Any = None,
    ):
        self.name = "hf:" + str(path_or_id)
        s = merge_card(
            card_for(path_or_id), temperature=temperature, top_p=top_p, stop=stop,
            max_new_tokens=max_new_tokens, context_turns=context_turns, system_prompt=system_prompt,
        )  # fmt: skip
        self.temperature, self.top_p, self.max_new_tokens = s.temperature, s.top_p, s.max_new_tokens
        self.stop, self.context_turns, self.system_prompt = s.stop, s.context_turns, s.system_prompt
        if model is None or tokenizer is None:
            model, tokenizer = _load(str(path_or_id), device, dtype, model, tokenizer)
        elif device is not None or dtype is not None:
            model = model.to(device=device, dtype=_torch_dtype(dtype, device))
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.model.eval()
        self._lock = threading.RLock()
        self.seed = seed if seed is not None else random.randrange(2**63)
        """The run seed: mixed into each request's seed (`mentorgym.agents.seeding`)."""
        self._generator = self._new_generator(self.seed)
        self.kv_cache = kv_cache
        """Keep each live episode's keys/values between its turns (`generate`'s `episodes`):
        a turn whose prompt extends the last one feeds only its new tokens."""
        self.kv_cache_bytes = kv_cache_bytes
        self._kv: OrderedDict[str, _KV] = OrderedDict()
        self.kv_stats = {"prompt_tokens": 0, "reused_tokens": 0}
        self.pad_id = _pad_id(tokenizer, model)
        self.eos_ids = _eos_ids(tokenizer, model)
        # Sampled ids of each episode's turns: an assistant message we wrote ourselves is
        # re-encoded as exactly the ids we sampled, not a re-tokenization.
        self.sampled = SampledTurns()
        config = getattr(model, "config", None)
        self.context_window: int | None = getattr(config, "max_position_embeddings", None)
        params = inspect.signature(model.forward).parameters
        self._keep_arg = "logits_to_keep" in params
        # transformers 5.x renamed `past_key_values` to `cache` (the old name is deprecated).
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    # --- Policy ---------------------------------------------------------------------------

    takes_episode_keys = True
    """The rollout engine passes `episodes` (one key per history) to `act_batch`."""
    takes_request_seeds = True
    """... and `seeds` (one per history): each row samples from a generator of its own."""

    def act_batch(
        self, histories: list[list[Message]], episodes: Sequence[str] | None = None
    ) -> list[Action]:
        """One assistant turn for each history, sampled together in one batch.

        `episodes` names each history's episode, so that its earlier turns are re-encoded as
        the ids sampled for them. Raises `RequestError` when a prompt fills the model's
        context window (`try_act_batch` returns it for that history instead).
        """
        actions = self.try_act_batch(histories, episodes)
        for a in actions:
            if isinstance(a, RequestError):
                raise a
        return actions  # type: ignore[return-value]

    def try_act_batch(
        self,
        histories: list[list[Message]],
        episodes: Sequence[str] | None = None,
        seeds: Sequence[int] | None = None,
    ) -> list[Action | RequestError]:
        """`act_batch` with failures as values: where the context window is known, each
        prompt's `max_new_tokens` is capped to what is left of it, and a prompt that already
        fills it gets a `RequestError` while the others are sampled.

        With `seeds` (the rollout engine's turn seeds), history i samples from a generator
        seeded with `request_seed(self.seed, seeds[i])`, whatever else is in the batch;
        without them the policy's own generator advances."""
        keys = list(episodes) if episodes is not None else [None] * len(histories)
        row_seeds = [request_seed(self.seed, s) for s in seeds] if seeds is not None else None
        prompts = [self.encode(h, episode=k) for h, k in zip(histories, keys, strict=True)]
        budgets = [self.token_budget(len(p)) for p in prompts]
        ok = [i for i, b in enumerate(budgets) if b > 0]
        gens = self.generate(
            [prompts[i] for i in ok],
            max_new_tokens=[budgets[i] for i in ok],
            temperature=self.temperature,
            top_p=self.top_p,
            stop=self.stop,
            seeds=[row_seeds[i] for i in ok] if row_seeds is not None else None,
            episodes=[keys[i] for i in ok],
        )
        out: list[Action | RequestError] = [
            RequestError(
                f"{self.name}: the prompt ({len(p)} tokens) fills the model's context window "
                f"({self.context_window} tokens); shorten the history (a policy card's "
                "context_turns) or use a model with a longer window"
            )
            for p in prompts
        ]
        for i, g in zip(ok, gens, strict=True):
            key = keys[i]
            if key is not None:
                self.sampled.remember(key, assistant_turns(histories[i]), g.text, g.token_ids)
            meta = {"finish_reason": g.finish_reason, "prompt_tokens": len(prompts[i])}
            out[i] = Action(g.text, g.token_ids, g.logprobs, meta=meta)
        return out

    def token_budget(self, prompt_tokens: int) -> int:
        """How many tokens a completion of this prompt may have: `max_new_tokens`, capped to
        what is left of the context window."""
        if self.context_window is None:
            return self.max_new_tokens
        return max(0, min(self.max_new_tokens, self.context_window - prompt_tokens))

    def end_episode(self, episode: str) -> None:
        """Drop what is kept for a finished episode (its sampled ids and KV cache)."""
        self.sampled.forget(episode)
        with self._lock:
            self._kv.pop(episode, None)

    def encode(
        self, messages: Sequence[Message | dict[str, Any]], episode: str | None = None
    ) -> list[int]:
        """Prompt ids (with the assistant generation prompt) of what the policy sees: the
        history cut to its context window (see `mentorgym.agents.chat.encode_view`)."""
        return encode_view(
            self.tokenizer,
            list(messages),  # type: ignore[arg-type]
            context_turns=self.context_turns,
            system_prompt=self.system_prompt,
            sampled=self.sampled,
            episode=episode,
        )

    # --- Teacher ----------------------------------------------------------------------------

    def score(
        self, messages: list[Message], completion_token_ids: list[int], top_k: int = 0
    ) -> Scores:
        """Logprobs of `completion_token_ids` as this model's reply to `messages` (temperature 1)."""
        return self.score_batch([(messages, completion_token_ids)], top_k=top_k)[0]

    def score_batch(
        self, items: Sequence[tuple[Sequence[Message], list[int]]], top_k: int = 0
    ) -> list[Scores]:
        """`score` for many (messages, completion ids) pairs: right-padded batched forwards."""
        seqs = [(self.encode(msgs), list(ids)) for msgs, ids in items]
        out: list[Scores] = []
        with self._lock:
            for start in range(0, len(seqs), _SCORE_BATCH):
                out += self._score_chunk(seqs[start : start + _SCORE_BATCH], top_k)
        return out

    @torch.no_grad()
    def _score_chunk(self, seqs: list[tuple[list[int], list[int]]], top_k: int) -> list[Scores]:
        full = [p + c for p, c in seqs]
        T = max(len(s) for s in full)
        input_BT = torch.full((len(full), T), self.pad_id, dtype=torch.long)
        attn_BT = torch.zeros((len(full), T), dtype=torch.long)
        for b, s in enumerate(full):
            input_BT[b, : len(s)] = torch.tensor(s)
            attn_BT[b, : len(s)] = 1
        hidden_BTD = self._hidden(input_BT.to(self.device), attn_BT.to(self.device))
        results = []
        for b, (prompt, completion) in enumerate(seqs):
            if not completion:
                results.append(Scores([], [] if top_k else None))
                continue
            # Position t predicts token t+1: completion token j sits at len(prompt)+j.
            h_CD = hidden_BTD[b, len(prompt) - 1 : len(prompt) + len(completion) - 1]
            logp_CV = torch.log_softmax(self._head(h_CD), dim=-1)
            target_C = torch.tensor(completion, device=logp_CV.device)
            lp = logp_CV.gather(-1, target_C[:, None])[:, 0].tolist()
            results.append(Scores(lp, _top(logp_CV, top_k)))
        return results

    def prompt_logprobs(
        self, ids: list[int], top_k: int = 0
    ) -> tuple[list[float | None], list[dict[int, float]] | None]:
        """log p(ids[t] | ids[:t]) for each t (None for the first), as vLLM's prompt_logprobs.

        With top_k, also each position's k most likely ids ({} for the first position).
        """
        if not ids:
            return [], ([] if top_k else None)
        with self._lock, torch.no_grad():
            input_BT = torch.tensor([ids], device=self.device)
            hidden_TD = self._hidden(input_BT, torch.ones_like(input_BT))[0, :-1]
            logp_TV = torch.log_softmax(self._head(hidden_TD), dim=-1)
            lp = logp_TV.gather(-1, input_BT[0, 1:, None])[:, 0].tolist()
            tops = _top(logp_TV, top_k)
        return [None, *lp], ([{}, *tops] if tops is not None else None)

    def _hidden(self, input_BT: torch.Tensor, attn_BT: torch.Tensor) -> torch.Tensor:
        base = getattr(self.model, self.model.base_model_prefix, None)
        if base is None or self.model.get_output_embeddings() is None:
            raise PolicyError(
                f"{self.name}: the model has no base model and output head to score with"
            )
        return base(input_ids=input_BT, attention_mask=attn_BT, use_cache=False).last_hidden_state

    def _head(self, hidden_XD: torch.Tensor) -> torch.Tensor:
        logits_XV = self.model.get_output_embeddings()(hidden_XD).float()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits_XV = torch.tanh(logits_XV / cap) * cap
        return logits_XV

    # --- sampling ---------------------------------------------------------------------------

    def generate(
        self,
        prompt_ids: list[list[int]],
        *,
        max_new_tokens: int | Sequence[int],
        temperature: float,
        top_p: float,
        stop: list[str] | None = None,
        top_logprobs: int = 0,
        seed: int | None = None,
        seeds: Sequence[int] | None = None,
        episodes: Sequence[str | None] | None = None,
    ) -> list[Generation]:
        """Sample one completion per prompt, all in one left-padded batch over the KV cache.

        `episodes` names each prompt's episode: its keys/values are kept for its next turn,
        whose prompt extends this one (see `kv_cache`), until `end_episode`.

        `max_new_tokens` is one limit for all prompts or one per prompt.

        `seeds` (one per prompt) samples each prompt from a generator of its own, so its
        tokens do not depend on the rest of the batch; `seed` makes this call reproducible
        on its own; without either the policy's generator (seeded at construction) advances.
        """
        if any(len(p) == 0 for p in prompt_ids):
            raise ValueError("every prompt needs at least one token")
        if not prompt_ids:
            return []
        limits = (
            [max_new_tokens] * len(prompt_ids)
            if isinstance(max_new_tokens, int)
            else list(max_new_tokens)
        )
        if len(limits) != len(prompt_ids) or min(limits) < 1:
            raise ValueError(f"need one max_new_tokens >= 1 per prompt, got {max_new_tokens}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if episodes is not None and len(episodes) != len(prompt_ids):
            raise ValueError(f"need one episode key per prompt, got {len(episodes)}")
        if seeds is not None and len(seeds) != len(prompt_ids):
            raise ValueError(f"need one seed per prompt, got {len(seeds)} for {len(prompt_ids)}")
        with self._lock:
            gen: torch.Generator | list[torch.Generator] = self._generator
            if seeds is not None:
                gen = [self._new_generator(s) for s in seeds]
            elif seed is not None:
                gen = self._new_generator(seed)
            keys = list(episodes) if episodes is not None else [None] * len(prompt_ids)
            return self._generate(
                prompt_ids, limits, temperature, top_p, stop or [], top_logprobs, gen, keys
            )

    @torch.no_grad()
    def _generate(
        self,
        prompt_ids: list[list[int]],
        limits: list[int],
        temperature: float,
        top_p: float,
        stop: list[str],
        top_k: int,
        gen: torch.Generator | list[torch.Generator],
        keys: Sequence[str | None],
    ) -> list[Generation]:
        reuse = [self._reusable(k, p) for k, p in zip(keys, prompt_ids, strict=True)]
        cache, attn_BS, logits_BV, next_pos_B1, layout = self._prefill(prompt_ids, reuse)
        B = len(prompt_ids)
        ids: list[list[int]] = [[] for _ in range(B)]
        lps: list[list[float]] = [[] for _ in range(B)]
        tops: list[list[dict[int, float]]] = [[] for _ in range(B)]
        texts: list[str | None] = [None] * B
        finish: list[Literal["stop", "length"]] = ["length"] * B
        done = [False] * B
        for _ in range(max(limits)):
            tok_B, lp_B, top_B = _sample(logits_BV, temperature, top_p, top_k, gen)
            for b, (t, lp) in enumerate(zip(tok_B.tolist(), lp_B.tolist(), strict=True)):
                if done[b]:
                    continue
                ids[b].append(t)
                lps[b].append(lp)
                if top_B is not None:
                    tops[b].append(top_B[b])
                if t in self.eos_ids:
                    done[b], finish[b] = True, "stop"
                elif stop:
                    text = self._decode(ids[b])
                    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
                    if cut >= 0:
                        done[b], finish[b], texts[b] = True, "stop", text[:cut]
                if not done[b] and len(ids[b]) >= limits[b]:
                    done[b] = True  # finish_reason stays "length"
            if all(done):
                break
            feed_B1 = torch.where(torch.tensor(done, device=self.device), self.pad_id, tok_B)[
                :, None
            ]
            attn_BS = torch.cat([attn_BS, attn_BS.new_ones((B, 1))], dim=1)
            logits_BV = self._forward(feed_B1, attn_BS, next_pos_B1, cache)
            next_pos_B1 = next_pos_B1 + 1
        self._keep(keys, prompt_ids, ids, cache, layout)
        return [
            Generation(
                token_ids=ids[b],
                logprobs=lps[b],
                top_logprobs=tops[b] if top_k else None,
                text=texts[b] if texts[b] is not None else self._decode(ids[b]),
                finish_reason=finish[b],
            )
            for b in range(B)
        ]

    def _prefill(
        self, prompt_ids: list[list[int]], reuse: list[_KV | None]
    ) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor, _Layout]:
        """The batch's first forward. Row b's kept keys/values (`reuse[b]`, a prefix of its
        prompt) go into the cache, right-aligned in C slots; the rest of its prompt is fed,
        left-padded to L tokens. Without reuse (C = 0) this is a plain left-padded prefill."""
        from transformers import DynamicCache

        B = len(prompt_ids)
        kept = [len(r.ids) if r is not None else 0 for r in reuse]
        fed = [len(p) - c for p, c in zip(prompt_ids, kept, strict=True)]
        C, L = max(kept), max(fed)
        input_BL = torch.full((B, L), self.pad_id, dtype=torch.long)
        attn_BS = torch.zeros((B, C + L), dtype=torch.long)
        for b, p in enumerate(prompt_ids):
            input_BL[b, L - fed[b] :] = torch.tensor(p[kept[b] :])
            attn_BS[b, C - kept[b] : C] = 1
            attn_BS[b, C + L - fed[b] :] = 1
        input_BL, attn_BS = input_BL.to(self.device), attn_BS.to(self.device)
        # Padding: positions count real tokens only, so a padded prompt sees the same
        # rotary positions as the same prompt alone.
        start_B1 = torch.tensor(kept, device=self.device)[:, None]
        pos_BL = (attn_BS[:, C:].cumsum(-1) - 1).clamp(min=0) + start_B1
        cache = DynamicCache(config=self.model.config)
        if C:
            for i, layer in enumerate(cache.layers):
                k0 = next(r for r in reuse if r is not None).layers[i][0]
                K_BHCD = k0.new_zeros((B, k0.shape[0], C, k0.shape[-1]))
                V_BHCD = torch.zeros_like(K_BHCD)
                for b, r in enumerate(reuse):
                    if r is not None:
                        K_BHCD[b, :, C - kept[b] :] = r.layers[i][0]
                        V_BHCD[b, :, C - kept[b] :] = r.layers[i][1]
                layer.update(K_BHCD, V_BHCD)
        logits_BV = self._forward(input_BL, attn_BS, pos_BL, cache)
        self.kv_stats["prompt_tokens"] += sum(len(p) for p in prompt_ids)
        self.kv_stats["reused_tokens"] += sum(kept)
        return cache, attn_BS, logits_BV, pos_BL[:, -1:] + 1, _Layout(C, L, kept, fed)

    # --- the KV cache kept between an episode's turns ---------------------------------------

    def _reusable(self, key: str | None, prompt: list[int]) -> _KV | None:
        """What of episode `key`'s kept keys/values this prompt can use: the longest common
        prefix of the kept ids and the prompt, leaving at least one prompt token to feed.
        A window slide (context_turns) keeps only what still matches; none when nothing does."""
        entry = self._kv.get(key) if key is not None and self.kv_cache else None
        if entry is None:
            return None
        self._kv.move_to_end(key)  # type: ignore[arg-type]
        n = 0
        for a, b in zip(entry.ids, prompt[:-1]):
            if a != b:
                break
            n += 1
        if n == 0:
            return None
        if n == len(entry.ids):
            return entry
        return _KV(entry.ids[:n], [(k[:, :n], v[:, :n]) for k, v in entry.layers])

    def _keep(
        self,
        keys: Sequence[str | None],
        prompt_ids: list[list[int]],
        ids: list[list[int]],
        cache: Any,
        layout: _Layout,
    ) -> None:
        """Keep each episode's keys/values of its prompt and the tokens it sampled (all
        but the last, which was never fed), for its next turn; then trim to the budget."""
        if not self.kv_cache or not self._cacheable(cache):
            return
        C, L = layout.C, layout.L
        for b, key in enumerate(keys):
            if key is None:
                continue
            slots = [*range(C - layout.kept[b], C), *range(C + L - layout.fed[b], C + L)]
            slots += range(C + L, C + L + len(ids[b]) - 1)
            idx = torch.tensor(slots, device=self.device)
            layers = [(lay.keys[b][:, idx], lay.values[b][:, idx]) for lay in cache.layers]
            self._kv[key] = _KV(prompt_ids[b] + ids[b][:-1], layers)
            self._kv.move_to_end(key)
        self._trim()

    def _cacheable(self, cache: Any) -> bool:
        """Only full-attention layers can be cut per row (a sliding window's cache is not
        the whole prefix)."""
        from transformers.cache_utils import DynamicLayer

        return all(type(layer) is DynamicLayer for layer in cache.layers)

    def _trim(self) -> None:
        """Drop the least recently used episodes' caches past `kv_cache_bytes`, and all of
        them when the accelerator's free memory runs short."""
        total = sum(e.nbytes for e in self._kv.values())
        while self._kv and total > self.kv_cache_bytes:
            total -= self._kv.popitem(last=False)[1].nbytes
        if self.device.type == "cuda" and self._kv:
            free, whole = torch.cuda.mem_get_info(self.device)
            if free < _CUDA_FREE_FLOOR * whole:
                self._kv.clear()

    def _forward(
        self, input_BL: torch.Tensor, attn_BS: torch.Tensor, pos_BL: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        kwargs: dict[str, Any] = {"logits_to_keep": 1} if self._keep_arg else {}
        kwargs[self._cache_arg] = cache
        out = self.model(
            input_ids=input_BL,
            attention_mask=attn_BS,
            position_ids=pos_BL,
            use_cache=True,
            **kwargs,
        )
        return out.logits[:, -1].float()

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    def _new_generator(self, seed: int) -> torch.Generator:
        device = next(self.model.parameters()).device if hasattr(self, "model") else "cpu"
        return torch.Generator(device=device).manual_seed(int(seed))


def _sample(
    logits_BV: torch.Tensor,
    temperature: float,
    top_p: float,
    top_k: int,
    gen: torch.Generator | list[torch.Generator],
) -> tuple[torch.Tensor, torch.Tensor, list[dict[int, float]] | None]:
    """Next tokens, their logprobs and optional top-k, all under the distribution sampled from.

    `gen` is one generator for the batch, or one per row (each row's draw then depends on
    its own generator and logits only)."""
    if temperature <= 0:
        logp_BV = torch.log_softmax(logits_BV, dim=-1)
        tok_B = logp_BV.argmax(dim=-1)
    else:
        logp_BV = torch.log_softmax(logits_BV / temperature, dim=-1)
        if top_p < 1.0:
            sorted_BV, order_BV = logp_BV.sort(dim=-1, descending=True)
            probs_BV = sorted_BV.exp()
            # Drop a token when the tokens above it already hold top_p of the mass.
            drop_BV = (probs_BV.cumsum(dim=-1) - probs_BV) >= top_p
            drop_BV = drop_BV.scatter(-1, order_BV, drop_BV)
            logp_BV = torch.log_softmax(logp_BV.masked_fill(drop_BV, float("-inf")), dim=-1)
        probs_BV = logp_BV.exp()
        if isinstance(gen, list):
            tok_B = torch.cat(
                [torch.multinomial(probs_BV[b], 1, generator=g) for b, g in enumerate(gen)]
            )
        else:
            tok_B = torch.multinomial(probs_BV, 1, generator=gen)[:, 0]
    lp_B = logp_BV.gather(-1, tok_B[:, None])[:, 0]
    return tok_B, lp_B, _top(logp_BV, top_k)


def _top(logp_XV: torch.Tensor, k: int) -> list[dict[int, float]] | None:
    if k <= 0:
        return None
    vals_XK, idx_XK = logp_XV.topk(min(k, logp_XV.shape[-1]), dim=-1)
    return [
        dict(zip(i, v, strict=True)) for i, v in zip(idx_XK.tolist(), vals_XK.tolist(), strict=True)
    ]


def _torch_dtype(dtype: str | None, device: str | None) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    try:
        return {
            "float32": torch.float32,
            "fp32": torch.float32,
            "bfloat16": torch.bfloat16,
            "bf16": torch.bfloat16,
            "float16": torch.float16,
            "fp16": torch.float16,
        }[dtype]
    except KeyError:
        raise PolicyError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16") from None


def _load(path_or_id: str, device: str | None, dtype: str | None, model: Any, tokenizer: Any):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    local = Path(path_or_id).expanduser()
    if not local.exists() and path_or_id.startswith(("/", ".", "~")):
        raise PolicyError(
            f"no checkpoint directory at {local}; build one with `mentorgym model tiny --out DIR`"
        )
    src = str(local) if local.exists() else path_or_id
    try:
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(src)
        if model is None:
            model = AutoModelForCausalLM.from_pretrained(src, dtype=_torch_dtype(dtype, device))
    except ImportError as e:
        from mentorgym.agents.models import broken_torchvision

        raise PolicyError(broken_torchvision(e) or f"could not load {path_or_id!r}: {e}") from e
    except (OSError, ValueError) as e:
        if local.exists():
            raise PolicyError(f"could not load a causal LM and tokenizer from {local}: {e}") from e
        raise PolicyError(
            f"{path_or_id!r} is not a local directory and could not be loaded from the Hugging Face "
            f"hub ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); if no hub is "
            "reachable, give a local checkpoint path (e.g. one written by `mentorgym model tiny`)"
        ) from e
    return model.to(device), tokenizer


def _pad_id(tokenizer: Any, model: Any) -> int:
    for cand in (
        tokenizer.pad_token_id,
        getattr(model.config, "pad_token_id", None),
        tokenizer.eos_token_id,
    ):
        if isinstance(cand, int):
            return cand
    return 0


def _eos_ids(tokenizer: Any, model: Any) -> set[int]:
    ids: set[int] = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for cand in (gen_eos, tokenizer.eos_token_id):
        if isinstance(cand, int):
            ids.add(cand)
        elif isinstance(cand, list):
            ids.update(int(c) for c in cand)
    if getattr(tokenizer, "chat_template", None):
        try:
            ids.add(end_of_turn_id(tokenizer))
        except PolicyError:
            pass  # a template without a closing token: the eos ids above are all there is
    if not ids:
        raise PolicyError("the tokenizer and model name no eos token; generation could never stop")
    return ids
