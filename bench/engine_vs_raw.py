"""The rollout engine against the engine underneath it: the same 32 Sokoban episodes through
`vllm:`'s asynchronous rollout engine, and the same prompts replayed as raw `LLM.generate`
batches, one per turn (the ceiling for the same tokens on the same vLLM engine).

The engine run records every request it sent (prompt ids, turn number) and how many tokens vLLM
generated for it. The raw replay then sends, turn by turn, all the episodes' prompts of that
turn as one `LLM.generate` call with `max_tokens` equal to what the engine generated for each
(and `ignore_eos`, so both sides generate exactly the same number of tokens). The prefix cache
is dropped before the replay, so the raw side reuses a prompt's prefix only from the turns it
has itself replayed, as the engine did. A second replay sends every prompt of the pass in one
`LLM.generate` call (no turn barrier; vLLM schedules all of them at once). Throughput is
generated tokens per second of wall time, and per second of this process's CPU time (vLLM's
CPU build runs in process: `time.process_time` counts its threads too), which is what to read
on a machine shared with other jobs, where the wall-clock load can change between passes; the
goal is engine >= 0.8 x raw. The gap is what the rollout engine adds: encoding the conversation,
decoding and parsing completions, env steps on the same cores, Python per turn and per
engine step.

    python bench/engine_vs_raw.py [--episodes 32] [--max-new-tokens 12] [--runs 3] [--model PATH]
                                  [--no-memo-too]

`--no-memo-too` adds an engine pass with the chat-segment memo of `agents/chat.py` turned off
(each turn's prompt then renders the chat template for every earlier message again, O(k^2)
template work at turn k: the overhead this bench found and the memo removed).

Each run is one engine pass and its raw replay, back to back (so load on a shared machine
hits both); one untimed warm-up pass comes first; the ratio reported is the median of the
runs' ratios. `--profile FILE` writes a cProfile of the engine passes' main thread (the rollout loop: envs,
encoding, futures; the engine loop thread is not in it) to FILE.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mentorgym.agents import chat
from mentorgym.agents.rollout import run
from mentorgym.agents.tiny import default_tiny_path
from mentorgym.agents.vllm_engine import VLLMPolicy

ENV = "mentorgym/Sokoban-v0"


class Recorder:
    """Wraps the policy's result hook: each finished act request's prompt, turn and token count."""

    def __init__(self, policy: VLLMPolicy) -> None:
        self.calls: list[tuple[int, list[int], int]] = []  # (turn, prompt ids, generated tokens)
        self._turns: dict[str, int] = defaultdict(int)
        self._real = policy._result
        policy._result = self._result  # type: ignore[method-assign]

    def _result(self, req: Any, out: Any) -> Any:
        if req.kind == "act":
            turn = self._turns[req.episode]
            self._turns[req.episode] += 1
            self.calls.append((turn, list(req.prompt_ids), len(out.outputs[0].token_ids)))
        return self._real(req, out)

    def reset(self) -> None:
        self.calls.clear()
        self._turns.clear()


class StepCounter:
    """Wraps the vLLM engine core's `get_output`, called once per engine step: how many steps
    a pass took and how many sequences each step advanced on average. Both passes use the
    same engine, so the engine's steps against raw's show whether the rollout engine feeds
    vLLM smaller batches (more steps for the same tokens), the overhead a tiny model on a
    CPU feels most."""

    def __init__(self, policy: VLLMPolicy) -> None:
        self.steps = 0
        self.outputs = 0
        core = policy._engine.engine_core
        real = core.get_output

        def counted() -> Any:
            out = real()
            self.steps += 1
            self.outputs += len(out.outputs)
            return out

        core.get_output = counted  # type: ignore[method-assign]

    def take(self) -> dict[str, float]:
        out = {"engine_steps": self.steps, "sequences_per_step": self.outputs / max(self.steps, 1)}
        self.steps = self.outputs = 0
        return out


def engine_pass(policy: VLLMPolicy, rec: Recorder, seeds: list[int]) -> dict[str, float]:
    rec.reset()
    t0, c0 = time.perf_counter(), time.process_time()
    trajs = run(ENV, policy, seeds=seeds, concurrency=len(seeds))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    gen = sum(n for _, _, n in rec.calls)
    return {
        "s": seconds,
        "cpu_s": cpu,
        "tokens_per_cpu_s": gen / cpu,
        "turns": sum(len(t.turns) for t in trajs),
        "generated_tokens": gen,
        "prompt_tokens": sum(len(p) for _, p, _ in rec.calls),
        "tokens_per_s": gen / seconds,
    }


def raw_pass(
    policy: VLLMPolicy, calls: list[tuple[int, list[int], int]], one_batch: bool = False
) -> dict[str, float]:
    """The recorded prompts through `LLM.generate`: one call per turn (each turn's prompts
    together), or with `one_batch` every prompt of the pass in a single call."""
    import vllm
    from vllm.inputs import TokensPrompt

    by_turn: dict[int, list[tuple[list[int], int]]] = defaultdict(list)
    for turn, prompt, n in calls:
        by_turn[0 if one_batch else turn].append((prompt, n))
    policy.llm.reset_prefix_cache()
    seconds = cpu = 0.0
    gen = 0
    with policy._lock:  # the engine loop is idle between passes; keep it out while we generate
        for turn in sorted(by_turn):
            items = by_turn[turn]
            prompts = [TokensPrompt(prompt_token_ids=p) for p, _ in items]
            params = [
                vllm.SamplingParams(
                    temperature=policy.temperature,
                    top_p=policy.top_p,
                    max_tokens=n,
                    ignore_eos=True,
                    logprobs=0,
                )
                for _, n in items
            ]
            t0, c0 = time.perf_counter(), time.process_time()
            outs = policy.llm.generate(prompts, params, use_tqdm=False)
            seconds += time.perf_counter() - t0
            cpu += time.process_time() - c0
            gen += sum(len(o.outputs[0].token_ids) for o in outs)
    want = sum(n for _, _, n in calls)
    if gen != want:
        raise RuntimeError(f"raw replay generated {gen} tokens, the engine {want}")
    return {
        "s": seconds,
        "cpu_s": cpu,
        "generated_tokens": gen,
        "tokens_per_s": gen / seconds,
        "tokens_per_cpu_s": gen / cpu,
    }


@contextmanager
def no_memo() -> Iterator[None]:
    """The engine as it was before the chat-segment memo: every segment rendered afresh."""
    real = chat._Segments._get

    def fresh(self: chat._Segments, kind: str, upto: int) -> list[int]:
        return chat.text_ids(self.tokenizer, self._text(kind, upto))

    chat._Segments._get = fresh  # type: ignore[method-assign]
    try:
        yield
    finally:
        chat._Segments._get = real  # type: ignore[method-assign]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--model", default=None, help="checkpoint (default: the offline tiny model)")
    p.add_argument("--profile", default=None, help="write a cProfile of the engine passes here")
    p.add_argument(
        "--no-memo-too",
        action="store_true",
        help="also an engine pass without the chat-segment memo (the engine before it)",
    )
    a = p.parse_args()
    model = a.model or str(default_tiny_path())
    policy = VLLMPolicy(
        model, max_tokens=a.max_new_tokens, max_model_len=2048, temperature=1.0, seed=0
    )
    rec = Recorder(policy)
    counter = StepCounter(policy)
    seeds = list(range(a.episodes))
    engine_pass(policy, rec, seeds[:4])  # warm-up: first generate, graphs, caches
    raw_pass(policy, rec.calls)
    counter.take()
    prof = cProfile.Profile() if a.profile else None
    runs = []
    load = [os.getloadavg()[0]]
    for i in range(a.runs):
        if prof is not None:
            prof.enable()
        eng = engine_pass(policy, rec, [s + 1000 * i for s in seeds])
        if prof is not None:
            prof.disable()
        eng.update(counter.take())
        raw = raw_pass(policy, rec.calls)
        raw.update(counter.take())
        one = raw_pass(policy, rec.calls, one_batch=True)
        one.update(counter.take())
        r = {"engine": eng, "raw": raw, "raw_one_batch": one}
        r["ratio"] = eng["tokens_per_s"] / raw["tokens_per_s"]
        r["ratio_one_batch"] = eng["tokens_per_s"] / one["tokens_per_s"]
        r["cpu_ratio"] = eng["tokens_per_cpu_s"] / raw["tokens_per_cpu_s"]
        r["cpu_ratio_one_batch"] = eng["tokens_per_cpu_s"] / one["tokens_per_cpu_s"]
        if a.no_memo_too:
            with no_memo():
                r["engine_no_memo"] = engine_pass(policy, rec, [s + 1000 * i for s in seeds])
            r["memo_speedup"] = eng["tokens_per_s"] / r["engine_no_memo"]["tokens_per_s"]
            r["memo_cpu_speedup"] = (
                eng["tokens_per_cpu_s"] / r["engine_no_memo"]["tokens_per_cpu_s"]
            )
        runs.append(r)
        load.append(os.getloadavg()[0])
        print(json.dumps(runs[-1]), flush=True)
    if prof is not None:
        prof.dump_stats(a.profile)
    policy.close()
    out = {
        "episodes": a.episodes,
        "max_new_tokens": a.max_new_tokens,
        "engine_tokens_per_s": statistics.median(r["engine"]["tokens_per_s"] for r in runs),
        "raw_tokens_per_s": statistics.median(r["raw"]["tokens_per_s"] for r in runs),
        "engine_vs_raw": statistics.median(r["ratio"] for r in runs),
        "engine_vs_raw_one_batch": statistics.median(r["ratio_one_batch"] for r in runs),
        "memo_speedup": statistics.median(r.get("memo_speedup", float("nan")) for r in runs),
        "engine_vs_raw_cpu": statistics.median(r["cpu_ratio"] for r in runs),
        "engine_vs_raw_one_batch_cpu": statistics.median(r["cpu_ratio_one_batch"] for r in runs),
        "memo_cpu_speedup": statistics.median(
            r.get("memo_cpu_speedup", float("nan")) for r in runs
        ),
        "load_average": load,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
