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
"""

from __future__ import annotations

import inspect
import random
import threading
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
    read_policy_card,
    write_policy_card,
)
from mentorgym.agents.card import first as _first
from mentorgym.agents.chat import SampledTurns, assistant_turns, encode_view, end_of_turn_id
from mentorgym.envs.base import Message
from mentorgym.errors import PolicyError, RequestError

_SCORE_BATCH = 8


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
        model: Any = None,
        tokenizer: Any = None,
    ):
        self.name = "hf:" + str(path_or_id)
        card = card_for(path_or_id)
        self.temperature = _first(temperature, card.temperature, 1.0)
        self.top_p = _first(top_p, card.top_p, 1.0)
        self.max_new_tokens = _first(max_new_tokens, card.max_new_tokens, 256)
        stop = _first(stop, card.stop, None)
        self.stop = list(stop) if stop else None
        self.context_turns = _first(context_turns, card.context_turns, 0)
        self.system_prompt = _first(system_prompt, card.system_prompt, True)
        if model is None or tokenizer is None:
            model, tokenizer = _load(str(path_or_id), device, dtype, model, tokenizer)
        elif device is not None or dtype is not None:
            model = model.to(device=device, dtype=_torch_dtype(dtype, device))
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.model.eval()
        self._lock = threading.RLock()
        self._generator = self._new_generator(seed if seed is not None else random.randrange(2**63))
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
        self, histories: list[list[Message]], episodes: Sequence[str] | None = None
    ) -> list[Action | RequestError]:
        """`act_batch` with failures as values: where the context window is known, each
        prompt's `max_new_tokens` is capped to what is left of it, and a prompt that already
        fills it gets a `RequestError` while the others are sampled."""
        keys = list(episodes) if episodes is not None else [None] * len(histories)
        prompts = [self.encode(h, episode=k) for h, k in zip(histories, keys, strict=True)]
        budgets = [self.token_budget(len(p)) for p in prompts]
        ok = [i for i, b in enumerate(budgets) if b > 0]
        gens = self.generate(
            [prompts[i] for i in ok],
            max_new_tokens=[budgets[i] for i in ok],
            temperature=self.temperature,
            top_p=self.top_p,
            stop=self.stop,
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
        """Drop what is kept for a finished episode."""
        self.sampled.forget(episode)

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
    ) -> list[Generation]:
        """Sample one completion per prompt, all in one left-padded batch over the KV cache.

        `max_new_tokens` is one limit for all prompts or one per prompt.

        `seed` makes this call reproducible on its own; without it the policy's generator
        (seeded at construction) advances.
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
        with self._lock:
            gen = self._generator if seed is None else self._new_generator(seed)
            return self._generate(
                prompt_ids, limits, temperature, top_p, stop or [], top_logprobs, gen
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
        gen: torch.Generator,
    ) -> list[Generation]:
        from transformers import DynamicCache

        B, L = len(prompt_ids), max(len(p) for p in prompt_ids)
        input_BL = torch.full((B, L), self.pad_id, dtype=torch.long)
        attn_BL = torch.zeros((B, L), dtype=torch.long)
        for b, p in enumerate(prompt_ids):
            input_BL[b, L - len(p) :] = torch.tensor(p)
            attn_BL[b, L - len(p) :] = 1
        input_BL, attn_BL = input_BL.to(self.device), attn_BL.to(self.device)
        # Left padding: positions count real tokens only, so a padded prompt sees the same
        # rotary positions as the same prompt alone.
        pos_BL = (attn_BL.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        logits_BV = self._forward(input_BL, attn_BL, pos_BL, cache)
        next_pos_B1 = pos_BL[:, -1:] + 1

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
            attn_BL = torch.cat([attn_BL, attn_BL.new_ones((B, 1))], dim=1)
            logits_BV = self._forward(feed_B1, attn_BL, next_pos_B1, cache)
            next_pos_B1 = next_pos_B1 + 1

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
    logits_BV: torch.Tensor, temperature: float, top_p: float, top_k: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, list[dict[int, float]] | None]:
    """Next tokens, their logprobs and optional top-k, all under the distribution sampled from."""
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
        tok_B = torch.multinomial(logp_BV.exp(), 1, generator=gen)[:, 0]
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
        from mentorgym.models import broken_torchvision

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
