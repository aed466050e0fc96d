"""Per-request sampling seeds: what a sampled token draws from, independent of batching.

The rollout engine names each request by the episode it belongs to and its turn
(`turn_seed(spec_key, turn)`, stable across runs); a sampling policy mixes in its own run
seed (`request_seed(run_seed, turn_seed)`) and draws that request's tokens from a
generator seeded with the result: `hf:` a torch.Generator per row of its batch, `vllm:`
SamplingParams.seed, `openai:` the request's `seed` field. So which requests share a
batch, how many are in flight and in which order they arrive change nothing that is
sampled; the same run seed, episode and turn give the same draws.
"""

from __future__ import annotations

import hashlib

SEED_BITS = 63
"""Seeds fit a signed 64-bit int (torch.Generator, vLLM and JSON all take them)."""


def derive(*parts: object) -> int:
    """A 63-bit seed that is a pure function of `parts` (their reprs), the same on every
    machine and Python process (unlike `hash`, which is salted per process)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - SEED_BITS)


def turn_seed(episode: str, turn: int) -> int:
    """The seed the rollout engine sends with turn `turn` of the episode named `episode`
    (its spec key, e.g. "seed=3/sample=1": stable across runs, unlike the run's episode keys)."""
    return derive("turn", episode, turn)


def request_seed(run_seed: int, turn: int) -> int:
    """The seed a policy samples one request with: its run seed mixed with the request's
    `turn_seed`, so two runs with different seeds draw apart on the same episodes."""
    return derive("request", run_seed, turn)
