"""The agent-spec grammar, parsed once (`agents/spec.py`), and the policy-card merge.

The configs test loads every config in configs/ and asks two questions of each agent it
names (student, teacher, summarizer): what `--dry-run` says it is, and what the trainer's
setup builds for it (with the weight loaders replaced by recorders, so nothing is trained
or downloaded). The two must agree: a bare-path teacher used to be "in process" for one and
an unknown spec for the other."""

from __future__ import annotations

from pathlib import Path

import pytest

from mentorgym.agents.card import PolicyCard, merge_card
from mentorgym.agents.spec import AgentSpec, parse_agent_spec
from mentorgym.errors import ConfigError

CONFIGS = sorted(Path(__file__).resolve().parents[1].glob("configs/*.yaml"))


@pytest.mark.parametrize(
    ("text", "kind", "location", "weights", "remote"),
    [
        ("expert", "expert", "", False, False),
        ("random", "random", "", False, False),
        ("human", "human", "", False, False),
        ("tiny", "tiny", "", True, False),
        ("replay:turns.json", "replay", "turns.json", False, False),
        ("hf:runs/x/final", "hf", "runs/x/final", True, False),
        ("runs/x/final", "path", "runs/x/final", True, False),
        ("Qwen/Qwen3-4B", "path", "Qwen/Qwen3-4B", True, False),
        ("vllm:Qwen/Qwen3-4B", "vllm", "Qwen/Qwen3-4B", False, False),
        ("openai:http://h:8000/v1#Qwen/Qwen3-32B", "openai", "http://h:8000/v1", False, True),
    ],
)
def test_parse_every_form(text, kind, location, weights, remote):
    spec = parse_agent_spec(text)
    assert (spec.kind, spec.location, spec.weights, spec.remote) == (
        kind,
        location,
        weights,
        remote,
    )
    assert spec.trainable == weights and spec.in_process == (not remote)


def test_openai_model_card_and_path():
    spec = parse_agent_spec("openai:http://h:8000/v1#Qwen/Qwen3-32B")
    assert spec.model == "Qwen/Qwen3-32B" and spec.card is None
    assert parse_agent_spec("hf:runs/x").card == "runs/x" == parse_agent_spec("runs/x").path
    with pytest.raises(ConfigError, match="names no model weights"):
        _ = parse_agent_spec("expert").path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gpt", "unknown agent spec"),
        ("foo:bar", "unknown agent spec"),
        ("hf:", "names no hf target"),
        ("replay", "names no replay target"),
        ("openai:http://h:8000/v1", "openai:BASE_URL#MODEL"),
        ("", "empty agent spec"),
    ],
)
def test_bad_specs_are_clear_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_agent_spec(text)


def test_merge_card_order_explicit_card_default():
    card = PolicyCard(context_turns=2, system_prompt=False, temperature=0.0, stop=["</a>"])
    merged = merge_card(card, temperature=0.7, top_p=None, max_new_tokens=None)
    assert merged.temperature == 0.7  # the argument wins
    assert merged.context_turns == 2 and merged.system_prompt is False  # then the card
    assert merged.top_p == 1.0 and merged.max_new_tokens == 256  # then the defaults
    assert merged.stop == ["</a>"]
    assert merge_card(PolicyCard(stop=[])).stop is None
    with pytest.raises(TypeError, match="max_tokens"):
        merge_card(card, max_tokens=3)


def _agents(cfg) -> dict[str, str]:
    names = {"student": cfg.student}
    for field in ("teacher", "summarizer"):
        value = getattr(cfg, field, None)
        if value and value != "rule":
            names[field] = value
    return names


def _dry_run_judgement(role: str, text: str, cfg) -> str:
    """What the dry run's checks say an agent is."""
    from mentorgym.training import student as student_lib

    line = (
        student_lib._check_student(cfg) if role == "student" else student_lib._check_teacher(text)
    )
    if "a fresh tiny model" in line:
        return "fresh tiny"
    if "in process" in line or role == "student":
        return "weights here"
    if "vLLM engine" in line:
        return "vllm engine"
    return "policy"


def _setup_judgement(role: str, text: str, cfg, algorithm: str, monkeypatch, tmp_path) -> str:
    """What the trainer's setup builds for an agent, with the weight loaders recorded."""
    from mentorgym.agents import hf, tiny
    from mentorgym.training import scoring
    from mentorgym.training import student as student_lib
    from mentorgym.training.distributed import Dist

    # The solver teacher scores in the student's tokenizer: load it before the loaders are
    # replaced by recorders.
    student_tok = None
    if role == "teacher" and parse_agent_spec(text).kind == "expert":
        from transformers import AutoTokenizer

        student_tok = AutoTokenizer.from_pretrained(tiny.default_tiny_path())
    built: list[str] = []
    monkeypatch.setattr(tiny, "build_tiny", lambda *a, **k: built.append("fresh tiny"))
    monkeypatch.setattr(scoring, "load_frozen", lambda *a, **k: built.append("weights here"))

    class RecordedHF:
        def __init__(self, *a, **k):
            built.append("weights here")

    monkeypatch.setattr(hf, "HFPolicy", RecordedHF)
    if role == "student":
        path = student_lib.initial_path(cfg, tmp_path, Dist())
        return built[-1] if built else ("weights here" if path else "none")
    if role == "teacher" and algorithm in ("opd", "sod"):
        teacher = scoring.load_teacher(text, None, student_tok)
        return built[-1] if built else type(teacher).__name__
    from mentorgym.agents.specs import load_policy

    if parse_agent_spec(text).kind == "vllm":
        return "vllm engine"  # a vLLM engine is not started here: its kind decides
    policy = load_policy(text)
    return built[-1] if built else "policy" if policy is not None else "none"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_dry_run_and_setup_agree(path, monkeypatch, tmp_path):
    from mentorgym.training.config import load_config

    algorithm, cfg = load_config(path)
    for role, text in _agents(cfg).items():
        dry = _dry_run_judgement(role, text, cfg)
        setup = _setup_judgement(role, text, cfg, algorithm, monkeypatch, tmp_path)
        if setup not in ("fresh tiny", "weights here", "vllm engine"):
            setup = "policy"
        assert dry == setup, f"{path.name} {role}={text!r}: dry run {dry!r}, setup {setup!r}"


def test_bare_path_teacher_is_the_same_everywhere(monkeypatch, tmp_path):
    """The disagreement the grammar had: a bare-path teacher is weights here for the dry run,
    for OPD's `load_teacher` and for DAgger's `load_policy` alike."""
    from mentorgym.training.config import build_config
    from mentorgym.training.opd import Config as OPDConfig

    cfg = build_config(OPDConfig, {"teacher": "runs/teacher/final", "eval_seed": 10**7})
    assert _dry_run_judgement("teacher", cfg.teacher, cfg) == "weights here"
    for algorithm in ("opd", "dagger"):
        got = _setup_judgement("teacher", cfg.teacher, cfg, algorithm, monkeypatch, tmp_path)
        assert got == "weights here", algorithm
    assert isinstance(parse_agent_spec(cfg.teacher), AgentSpec)


def test_untrainable_student_is_a_config_error():
    from mentorgym.training.config import build_config
    from mentorgym.training.dagger import Config

    for student in ("expert", "openai:http://h/v1#m", "vllm:Qwen/Qwen3-4B"):
        with pytest.raises(ConfigError, match="not trainable"):
            build_config(Config, {"student": student})


def test_renamed_executor_key_still_works_with_a_deprecation_message():
    from mentorgym.training.config import build_config
    from mentorgym.training.dagger import Config

    with pytest.warns(FutureWarning, match="'executor' is deprecated.*'env_placement'"):
        cfg = build_config(Config, {"executor": "ray"})
    assert cfg.env_placement == "ray" and cfg.rollout_env()[0] == "mentorgym/Ray-v0"
    with pytest.raises(ConfigError, match="both 'executor' and 'env_placement'"):
        build_config(Config, {"executor": "ray", "env_placement": "local"})
    with pytest.raises(ConfigError, match="env_placement 'gpu'"):
        build_config(Config, {"env_placement": "gpu"})
