"""The student being trained, as every algorithm uses it.

- `setup`: join torchrun, seed, build (`student: tiny`) or load the student, move and wrap it
  for the device and strategy, open `RUN/metrics.jsonl`.
- `sampling_policy`: the student as a `Policy` for rollouts. Every rollout of the student
  (DAgger's mixture, the on-policy groups, evaluation) is sampled through this one function.
- `evaluate`: the pure student on held-out seeds.
- `policy_card` / `save_final`: `RUN/final` with the window and settings the student acted
  with, loadable as `hf:RUN/final`.
- `teacher_shares_tokenizer`: whether a teacher's token ids can be the student's targets.
- `check_setup`: the dry-run checks that need no weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mentorgym.agents.hf import HFPolicy, PolicyCard
from mentorgym.agents.models import broken_torchvision, is_model_name
from mentorgym.agents.spec import parse_agent_spec
from mentorgym.errors import ConfigError
from mentorgym.training import distributed, lora
from mentorgym.training.checkpoint import save_model
from mentorgym.training.config import CoreConfig, config_to_dict
from mentorgym.training.metrics import Metrics
from mentorgym.training.trackers import open_trackers


@dataclass
class Student:
    """The trainable student and where it runs, built once per run."""

    dist: distributed.Dist
    device: torch.device
    model: torch.nn.Module
    tok: Any
    path: str
    """Where its initial weights were loaded from (also its tokenizer's folder)."""
    metrics: Metrics
    engine: Any = None
    """The vLLM engine (`sampler: vllm`), started at the first sampling."""


def initial_path(cfg: CoreConfig, run_dir: Path, d: distributed.Dist) -> str:
    """Where the student's initial weights are: a fresh tiny model in `RUN/init`, or `student`."""
    spec = parse_agent_spec(cfg.student)
    if spec.kind != "tiny":
        return spec.path
    init = run_dir / "init"
    if d.is_main and not (init / "config.json").exists():
        from mentorgym.agents.tiny import build_tiny

        build_tiny(init, size=cfg.tiny_size, env_ids=[cfg.env_id], seed=cfg.seed)
    if d.enabled:
        dist.barrier()
    return str(init)


def load_model(path: str, model_dtype: str) -> tuple[torch.nn.Module, Any]:
    """A trainable model and its tokenizer from a path or hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if model_dtype == "bfloat16" else torch.float32
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as e:
        raise ConfigError(
            f"student {path!r} could not be loaded ({e}); give a local Hugging Face folder, "
            "a hub id on a machine that reaches the hub, a named model or `tiny`"
        ) from e
    except ImportError as e:
        raise ConfigError(broken_torchvision(e) or f"student {path!r}: {e}") from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


def setup(cfg: CoreConfig, run_dir: Path, strategy: str = "ddp") -> Student:
    """Join torchrun, seed, build or load the student and prepare it for `strategy`."""
    d = distributed.init_distributed()
    distributed.seed_everything(cfg.seed)
    distributed.set_deterministic(cfg.deterministic)
    device = distributed.pick_device(d, cfg.device)
    path = initial_path(cfg, run_dir, d)
    model, tok = load_model(path, cfg.model_dtype)
    if cfg.lora and d.enabled and strategy == "fsdp":
        raise ConfigError("lora: use strategy: ddp (every rank holds the small adapter), not fsdp")
    model = lora.apply(model, cfg.lora, cfg.gradient_checkpointing)
    model = distributed.prepare_model(model, d, device, cfg.gradient_checkpointing, strategy)
    n_train, n_params = lora.trainable_parameters(model)
    if d.is_main:
        adapter = f", LoRA: {n_train / 1e6:.2f}M trainable" if lora.is_lora(model) else ""
        print(
            f"student: {path} ({n_params / 1e6:.2f}M parameters{adapter}) on {device} "
            f"x{d.world_size} ({strategy})"
        )
    trackers = None
    if d.is_main and cfg.report_to:
        trackers = open_trackers(cfg.report_to, run_dir, config_to_dict(cfg), run_dir.name)
    metrics = Metrics(run_dir / "metrics.jsonl", enabled=d.is_main, trackers=trackers)
    return Student(d, device, model, tok, path, metrics)


def sampling_policy(
    student: Student,
    cfg: CoreConfig,
    temperature: float,
    seed: int,
    weights_path: str | None = None,
) -> HFPolicy:
    """The student as a Policy for rollouts, sharing the live weights (or, with
    `weights_path`, loading a saved copy: a sharded FSDP model cannot generate on one rank).

    With `sampler: vllm` it is a vLLM engine beside the trainer, started once; the live
    weights are loaded into it in memory here, before every sampling (so after every
    optimizer step), and the seconds that took are logged as `sampler_sync_s`."""
    if cfg.sampler == "vllm":
        return _vllm_sampler(student, cfg, temperature, seed)
    live = weights_path is None
    return HFPolicy(
        student.path if live else weights_path,
        temperature=temperature,
        top_p=1.0,
        max_new_tokens=cfg.max_new_tokens,
        context_turns=cfg.context_turns,
        system_prompt=cfg.system_prompt,
        device=str(student.device),
        seed=seed,
        model=distributed.unwrap(student.model) if live else None,
        tokenizer=student.tok if live else None,
    )


def _vllm_sampler(student: Student, cfg: CoreConfig, temperature: float, seed: int) -> Any:
    from mentorgym.agents.vllm_engine import VLLMPolicy, sync_weights

    if student.dist.enabled:
        raise ConfigError(
            "sampler: vllm runs in a single process here; under torchrun use sampler: hf "
            "(vllm_engine.sync_weights shows the rank-0 gather for a multi-rank trainer)"
        )
    if student.engine is None:
        student.engine = VLLMPolicy(
            student.path,
            max_tokens=cfg.max_new_tokens,
            context_turns=cfg.context_turns,
            system_prompt=cfg.system_prompt,
            top_p=1.0,
            enforce_eager=True,
            dtype=cfg.model_dtype,
            log_file=student.metrics.path.parent / "vllm.log",  # vLLM's own lines, off the log
        )
    engine = student.engine
    # A LoRA student sends its merged weights (the engine serves the plain base architecture).
    sync = lora.sync_merged if lora.is_lora(student.model) else sync_weights
    seconds = sync(engine, student.model)
    student.metrics.log({"kind": "sampler_sync", "sampler_sync_s": round(seconds, 4)})
    engine.temperature = temperature
    engine.reseed(seed)
    return engine


def sampler_gap(
    student: Student, cfg: CoreConfig, trajs: list[Any], max_episodes: int = 64
) -> dict[str, float]:
    """How far the sampler's logprobs of the student's sampled tokens are from the trainer's
    recomputation with the same weights: `sampler_logprob_gap_mean` / `_max`, as the
    on-policy loops log them. Call it after the rollouts and before training on them; with
    `sampler: hf` it is ~0 by construction, with `sampler: vllm` it checks the weight sync.

    The trainer's side is the training encoding (`encode_episode`: every earlier turn as the
    ids that were sampled, never re-tokenized from its text), the sequences the student
    trains on. Re-encoding the history from text instead would change the prompt wherever a
    real tokenizer splits a sampled turn's text differently from how it was sampled, and
    report that as a gap. Only the student's own turns count (not a teacher's under beta);
    at most `max_episodes` episodes are scored."""
    from mentorgym.training.data import TokenizedEpisode, encode_episode, make_batch
    from mentorgym.training.losses import logprob_gap
    from mentorgym.training.scoring import hidden_at, logprobs_from_hidden

    episodes, kept = [], []
    for t in trajs:
        ep = encode_episode(
            student.tok, t, cfg.max_seq_len, None, cfg.context_turns, cfg.system_prompt
        )
        own = [
            (span, k)
            for span, k in zip(ep.spans, ep.turns, strict=True)
            if t.turns[k].actor != "teacher" and len(t.turns[k].logprobs or []) == span[2] - span[1]
        ]
        if own:
            episodes.append(TokenizedEpisode(ep.seqs, [s for s, _ in own], [k for _, k in own]))
            kept.append(t)
        if len(kept) == max_episodes:
            break
    if not kept:
        return {}
    temperature = getattr(cfg, "rollout_temperature", 1.0)
    was_training = student.model.training
    student.model.eval()
    trained, sampled, masks = [], [], []
    with torch.no_grad():
        for i in range(0, len(kept), 8):  # a few episodes per forward: bounded memory
            b = make_batch(episodes[i : i + 8], kept[i : i + 8], student.tok.pad_token_id,
                           student.device)  # fmt: skip
            hidden_BLH = hidden_at(student.model, b)
            trained.append(
                logprobs_from_hidden(student.model, hidden_BLH, b.target_BL, temperature).flatten()
            )
            sampled.append(b.logp_old_BL.flatten())
            masks.append(b.mask_BL.flatten())
    student.model.train(was_training)
    gap_mean, gap_max = logprob_gap(torch.cat(trained), torch.cat(sampled), torch.cat(masks))
    return {"sampler_logprob_gap_mean": gap_mean, "sampler_logprob_gap_max": gap_max}


def evaluate(
    student: Student, cfg: CoreConfig, out: Path | None, seed: int | None = None
) -> dict[str, Any]:
    """The pure student (no teacher) on `eval_episodes` held-out seeds from `eval_seed`,
    through the same window it trains with; `seed` seeds its sampler (default `cfg.seed`)."""
    from mentorgym.agents.rollout import run, summarize

    was_training = student.model.training
    student.model.eval()
    policy = sampling_policy(student, cfg, cfg.eval_temperature, cfg.seed if seed is None else seed)
    env_id, env_kwargs = cfg.rollout_env()
    trajs = run(
        env_id,
        policy,
        cfg.eval_episodes,
        seed=cfg.eval_seed,
        env_kwargs=env_kwargs,
        out=out,
        concurrency=cfg.concurrency,
        progress=cfg.progress,
    )
    student.model.train(was_training)
    return summarize(trajs)


def policy_card(cfg: CoreConfig) -> PolicyCard:
    """What `hf:RUN/final` needs to act as the student did: its window and evaluation settings."""
    return PolicyCard(
        context_turns=cfg.context_turns,
        system_prompt=cfg.system_prompt,
        temperature=cfg.eval_temperature,
        max_new_tokens=cfg.max_new_tokens,
    )


def save_final(student: Student, cfg: CoreConfig, run_dir: Path) -> Path:
    """The trained student in `RUN/final` (HF format plus its policy card)."""
    final = run_dir / "final"
    if lora.is_lora(student.model):  # the merged model: a plain checkpoint for every backend
        if student.dist.is_main:
            lora.save_merged(student.model, student.tok, final, policy_card(cfg))
    else:
        save_model(student.model, student.tok, final, student.dist, policy_card(cfg))
    if student.dist.is_main:
        print(f"final student: {final}  (evaluate: mentorgym eval {cfg.env_id} --agent hf:{final})")
    return final


def check_setup(cfg: CoreConfig, teacher: str | None = None) -> list[str]:
    """Env, teacher and student checks that need no weights; what cannot be checked is said."""
    import gymnasium

    import mentorgym  # noqa: F401  (registers the built-in envs)

    lines: list[str] = []
    try:
        spec = gymnasium.spec(cfg.env_id)
    except gymnasium.error.Error as e:
        raise ConfigError(f"env_id {cfg.env_id!r}: {e}") from e
    lines.append(
        f"env: {spec.id} (max_episode_steps={spec.max_episode_steps}) kwargs={cfg.env_kwargs}"
    )
    try:
        from mentorgym import make

        env = make(cfg.env_id, **cfg.env_kwargs)
        env.close()
        lines.append("env: constructed")
    except TypeError as e:
        raise ConfigError(f"env_kwargs {cfg.env_kwargs} do not fit {cfg.env_id}: {e}") from e
    except Exception as e:
        # e.g. SWE needs a Docker engine and a reachable task set: offline that is reported
        # as skipped (with the env's own message), and everything else is still validated.
        lines.append(f"env: SKIPPED construction ({type(e).__name__}: {e})")
    if teacher:
        lines.append(_check_teacher(teacher))
    lines.append(_check_student(cfg))
    return lines


def _check_teacher(teacher: str) -> str:
    spec = parse_agent_spec(teacher)
    if spec.model_backend and spec.in_process:
        where = "in process" if spec.weights else "vLLM engine"
        return f"teacher: {teacher} (model backend, {where}; weights not loaded in a dry run)"
    from mentorgym.agents.specs import load_policy

    policy = load_policy(spec)
    return f"teacher: {getattr(policy, 'name', teacher)} (spec parsed; no request sent)"


def _check_student(cfg: CoreConfig) -> str:
    spec = parse_agent_spec(cfg.student)
    if spec.kind == "tiny":
        return f"student: a fresh tiny model ({cfg.tiny_size}) would be built in RUN/init"
    if spec.kind in ("hf", "path") and is_model_name(spec.location):
        return f"student: {spec.location} (a named model; `mentorgym models get {spec.location}` converts it once)"
    path = spec.path
    try:
        from transformers import AutoConfig

        mc = AutoConfig.from_pretrained(path)
    except Exception as e:
        return f"student: SKIPPED loading the model config of {path!r} (not reachable here: {type(e).__name__})"
    return (
        f"student: {path} config loaded ({mc.model_type}, "
        f"{getattr(mc, 'num_hidden_layers', '?')} layers, hidden {getattr(mc, 'hidden_size', '?')})"
    )


def teacher_shares_tokenizer(spec: str, tok: Any) -> bool:
    """Whether the teacher's token ids are the student's: only a model whose weights load here
    (`hf:PATH`, a bare path, `tiny`) with the same vocabulary. Other teachers' turns are
    re-encoded from their text."""
    from transformers import AutoTokenizer

    parsed = parse_agent_spec(spec)
    if not parsed.weights:
        return False
    try:
        teacher_tok = AutoTokenizer.from_pretrained(parsed.path)
    except OSError:
        return False
    return teacher_tok.get_vocab() == tok.get_vocab()
