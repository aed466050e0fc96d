"""The `vllm:MODEL` backend: a vLLM engine in this process (optional extra, CUDA GPU).

`act_batch` hands every prompt to one `LLM.generate` call (vLLM schedules them with
continuous batching) and returns the sampled ids with their logprobs; `score` reads
`prompt_logprobs` of the prompt plus the completion. Prompts are encoded with the
same chat encoding as `hf:` (`mentorgym.agents.chat.encode_chat`), so a student trained
with `hf:` and a teacher served here agree on every token.

vLLM reports logprobs of the model's raw distribution (before temperature and top-p),
as the `hf:` backend's `score` does.

vllm is imported when the policy is built, never at `import mentorgym`.
"""

from __future__ import annotations

import itertools
from typing import Any

from mentorgym.agents.base import Action, BatchedPolicy, Scores
from mentorgym.envs.base import Message
from mentorgym.errors import PolicyError

VLLM_MISSING = "vLLM is not installed: pip install 'mentorgym[vllm]' (needs a CUDA GPU)"


class VLLMPolicy(BatchedPolicy):
    """A policy and teacher over `vllm.LLM`.

    `model` is a local checkpoint directory or a hub id (vLLM downloads it when a hub is
    reachable). `engine_kwargs` go to `vllm.LLM` unchanged (dtype, max_model_len,
    enforce_eager, ...).
    """

    def __init__(
        self,
        model: str,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_tokens: int = 256,
        stop: list[str] | None = None,
        seed: int | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        **engine_kwargs: Any,
    ):
        try:
            import vllm
        except ImportError as e:
            raise PolicyError(VLLM_MISSING) from e
        self.name = f"vllm:{model}"
        self.model_name = model
        self.temperature = temperature
        self.top_p = top_p
        self.max_tokens = max_tokens
        self.stop = list(stop) if stop else None
        self.seed = seed
        # Each request gets its own seed (seed, seed+1, ...) so equal prompts sample apart.
        self._seeds = itertools.count(seed) if seed is not None else None
        self._vllm = vllm
        try:
            self.llm = vllm.LLM(
                model=model,
                tensor_parallel_size=tensor_parallel_size,
                gpu_memory_utilization=gpu_memory_utilization,
                seed=0 if seed is None else seed,
                **engine_kwargs,
            )
        except Exception as e:  # vLLM raises many kinds; all mean the same to a user
            raise PolicyError(f"vLLM could not load {model!r}: {type(e).__name__}: {e}") from e
        self.tokenizer = self.llm.get_tokenizer()

    def encode(self, messages: list[Message]) -> list[int]:
        """Chat prompt ids, ending with the assistant header."""
        from mentorgym.agents.chat import encode_chat

        return encode_chat(self.tokenizer, messages, add_generation_prompt=True)

    def act_batch(self, histories: list[list[Message]]) -> list[Action]:
        """One `LLM.generate` over all histories; each action carries its sampled ids."""
        if not histories:
            return []
        prompts = [self._tokens_prompt(self.encode(h)) for h in histories]
        params = [self._sampling_params() for _ in prompts]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        actions = []
        for out in outputs:
            completion = out.outputs[0]
            ids = list(completion.token_ids)
            logprobs = [
                float(step[t].logprob)
                for t, step in zip(ids, completion.logprobs or [], strict=False)
            ]
            actions.append(
                Action(
                    text=completion.text,
                    token_ids=ids,
                    logprobs=logprobs if len(logprobs) == len(ids) else None,
                    meta={"finish_reason": completion.finish_reason},
                )
            )
        return actions

    def score(
        self, messages: list[Message], completion_token_ids: list[int], top_k: int = 0
    ) -> Scores:
        """Per-token logprobs of `completion_token_ids` after `messages`, from prompt_logprobs."""
        if not completion_token_ids:
            return Scores(logprobs=[], top_logprobs=[] if top_k > 0 else None)
        prompt_ids = self.encode(messages)
        ids = prompt_ids + list(completion_token_ids)
        # One token must be sampled; it is thrown away.
        params = self._vllm.SamplingParams(
            max_tokens=1, temperature=0.0, prompt_logprobs=max(top_k, 0)
        )
        (out,) = self.llm.generate([self._tokens_prompt(ids)], params, use_tqdm=False)
        per_position = out.prompt_logprobs
        if per_position is None or len(per_position) < len(ids):
            raise PolicyError(
                f"vLLM returned no prompt_logprobs for {len(ids)} tokens of {self.model_name}"
            )
        logprobs: list[float] = []
        tops: list[dict[int, float]] = []
        for pos, token_id in enumerate(completion_token_ids, start=len(prompt_ids)):
            table = {int(t): float(lp.logprob) for t, lp in (per_position[pos] or {}).items()}
            logprobs.append(table[token_id])
            if top_k > 0:
                # The table holds the top k, plus the actual token when it ranks below k.
                tops.append(dict(sorted(table.items(), key=lambda kv: kv[1], reverse=True)[:top_k]))
        return Scores(logprobs=logprobs, top_logprobs=tops if top_k > 0 else None)

    def _tokens_prompt(self, ids: list[int]) -> Any:
        from vllm.inputs import TokensPrompt

        return TokensPrompt(prompt_token_ids=ids)

    def _sampling_params(self) -> Any:
        return self._vllm.SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            stop=self.stop,
            # logprobs=0 returns the sampled token's own logprob only.
            logprobs=0,
            seed=None if self._seeds is None else next(self._seeds),
        )
