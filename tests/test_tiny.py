"""The offline tiny model: HF-format save/load, the tokenizer's shape, determinism, the cache."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mentorgym.agents import tiny
from mentorgym.envs.base import TextEnv, assistant, system, user
from mentorgym.errors import ConfigError


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.build_tiny(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="module")
def tok(tiny_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_dir)


def test_loads_offline_with_auto_classes(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert 0.5e6 < model.num_parameters() < 2e6
    assert model.config.max_position_embeddings == 2048
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    info = json.loads((tiny_dir / "mentorgym_tiny.json").read_text())
    assert info["size"] == "tiny" and info["seed"] == 0


def test_grid_characters_are_single_tokens(tok) -> None:
    grid = "#######\n#  .  #\n# $@* #\n#+    #\n#######\n"
    ids = tok(grid, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(grid)  # one token per cell and per newline
    assert [tok.decode([i]) for i in ids] == list(grid)
    for digit_run in ("12345", "3.14159"):
        assert len(tok(digit_run, add_special_tokens=False)["input_ids"]) == len(digit_run)


def test_tags_and_specials_are_one_token_and_tags_survive_decoding(tok) -> None:
    for t in tiny.TAG_TOKENS + tiny.SPECIAL_TOKENS:
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1, t
    text = '<tool_call>{"name": "python", "arguments": {}}</tool_call> <answer>42</answer>'
    ids = tok(text + "<|im_end|>", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_chat_template_renders_all_roles_and_tool_calls(tok) -> None:
    call = {"type": "function", "function": {"name": "python", "arguments": {"code": "print(2)"}}}
    messages = [
        system("sys"),
        user("task"),
        {"role": "assistant", "content": "let me run it", "tool_calls": [call]},
        {"role": "tool", "content": "2"},
        assistant("<answer>2</answer>"),
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nsys<|im_end|>\n"
        "<|im_start|>user\ntask<|im_end|>\n"
        '<|im_start|>assistant\nlet me run it\n<tool_call>{"name": "python", "arguments": '
        '{"code": "print(2)"}}</tool_call><|im_end|>\n'
        "<|im_start|>tool\n2<|im_end|>\n"
        "<|im_start|>assistant\n<answer>2</answer><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    schema = {"type": "function", "function": {"name": "python", "parameters": {}}}
    with_tools = tok.apply_chat_template(messages[:2], tools=[schema], tokenize=False)
    assert with_tools.startswith("<|im_start|>system\nsys\n\n<tools>\n{")
    assert with_tools.count("<|im_start|>system") == 1


def test_build_is_deterministic_per_seed(tmp_path: Path) -> None:
    a = tiny.build_tiny(tmp_path / "a", env_ids=[], seed=0)
    b = tiny.build_tiny(tmp_path / "b", env_ids=[], seed=0)
    c = tiny.build_tiny(tmp_path / "c", env_ids=[], seed=1)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    sd_a = AutoModelForCausalLM.from_pretrained(a).state_dict()
    sd_b = AutoModelForCausalLM.from_pretrained(b).state_dict()
    sd_c = AutoModelForCausalLM.from_pretrained(c).state_dict()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert not torch.equal(sd_a["model.embed_tokens.weight"], sd_c["model.embed_tokens.weight"])


def test_small_size_config_and_unknown_size(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tiny"):
        tiny.build_tiny(tmp_path / "x", size="huge")
    assert not (tmp_path / "x").exists()
    spec = tiny.SIZES["small"]
    per_layer = (
        2 * spec["hidden_size"] * spec["num_attention_heads"] * spec["head_dim"]
        + 2 * spec["hidden_size"] * spec["num_key_value_heads"] * spec["head_dim"]
        + 3 * spec["hidden_size"] * spec["intermediate_size"]
    )
    assert 10e6 < per_layer * spec["num_hidden_layers"] < 100e6


def test_existing_output_is_left_alone(tiny_dir: Path) -> None:
    before = (tiny_dir / "model.safetensors").stat().st_mtime_ns
    assert tiny.build_tiny(tiny_dir, seed=5) == tiny_dir
    assert (tiny_dir / "model.safetensors").stat().st_mtime_ns == before


def test_losing_a_build_race_keeps_the_winner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "model"
    real_init = tiny._init_model

    def init_while_another_process_finishes(*args, **kwargs):
        out.mkdir()
        (out / "config.json").write_text("{}")  # the other builder's rename landed first
        return real_init(*args, **kwargs)

    monkeypatch.setattr(tiny, "_init_model", init_while_another_process_finishes)
    assert tiny.build_tiny(out, env_ids=[]) == out
    assert [p.name for p in out.iterdir()] == ["config.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # our temporary copy is gone


def test_default_path_builds_once_in_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MENTORGYM_CACHE", str(tmp_path))
    monkeypatch.setattr(tiny, "DEFAULT_ENV_IDS", [])  # keep it fast; the corpus is tested below
    first = tiny.default_tiny_path()
    assert first.parent == tmp_path and first.name.startswith(f"tiny-{tiny.TINY_VERSION}-")
    mtime = (first / "config.json").stat().st_mtime_ns
    assert tiny.default_tiny_path() == first
    assert (first / "config.json").stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [first.name]


class _EchoEnv(TextEnv):
    """A one-turn env with an expert, registered only for this test."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.n = int(self.np_random.integers(100))
        return [system("Quokka quokka rules."), user(f"Say zebrafish {self.n}.")], {}

    def step(self, action: str):
        return [user("Wombat says done.")], 1.0, True, False, {"success": True}

    def expert_action(self) -> str | None:
        return f"<answer>zebrafish {self.n}</answer>"


def test_corpus_uses_registered_envs_and_skips_broken_ones() -> None:
    env_id = "mentorgym-test/TinyEcho-v0"
    if env_id not in gymnasium.registry:
        gymnasium.register(id=env_id, entry_point=_EchoEnv)
    with pytest.warns(UserWarning, match="mentorgym-test/Missing-v0"):
        texts, used = tiny.corpus([env_id, "mentorgym-test/Missing-v0"], seed=0)
    assert used == [env_id]
    assert any("Wombat says done." in t for t in texts)
    assert any(t.startswith("<answer>zebrafish ") for t in texts)
    assert sum("Quokka" in t for t in texts) == tiny.EPISODES_PER_ENV


def test_built_model_used_the_builtin_envs_that_exist(tiny_dir: Path) -> None:
    present = [e for e in tiny.DEFAULT_ENV_IDS if tiny._env_importable(e)]
    if not present:
        pytest.skip("neither Sokoban-v0 nor MathTools-v0 can be imported yet")
    info = json.loads((tiny_dir / "mentorgym_tiny.json").read_text())
    assert info["corpus_envs"] == present, (
        "an importable built-in env failed to produce tokenizer text"
    )
