"""The offline tiny model: a randomly initialized Qwen3 with a tokenizer the project trains itself.

No machine here can download weights, so `build_tiny` makes a model from a config and
trains a byte-level BPE tokenizer on text the registered envs produce (reset and expert
episodes of Sokoban and MathTools). Both are saved in Hugging Face format, so
`AutoModelForCausalLM.from_pretrained(DIR)` / `AutoTokenizer.from_pretrained(DIR)` load
them exactly as they load a real checkpoint, and every backend path is the same.

Tokenizer choices that matter for learning:
- Sokoban grid characters (`#`, space, `$`, `.`, `@`, `*`, `+`, newline) and digits are
  always single tokens (a pre-tokenizer isolates them before BPE), so a grid row is a
  sequence of cells, never arbitrary multi-cell chunks; a space stays glued to a
  following word (" move") so prose stays compact.
- `<|im_start|>`, `<|im_end|>` (eos) and `<|endoftext|>` (pad) are special tokens;
  `<tool_call>`, `</tool_call>`, `<answer>`, `</answer>` (and `<tool_response>`,
  `<think>`, their closers) are added non-special tokens: one token each, and kept
  when decoding with `skip_special_tokens=True`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

from mentorgym.errors import ConfigError

TINY_VERSION = "2"
"""Bump when the builder changes what it writes; it is part of the cache directory name."""

DEFAULT_ENV_IDS = ["mentorgym/Sokoban-v0", "mentorgym/MathTools-v0"]
EPISODES_PER_ENV = 24
MAX_CORPUS_STEPS = 30

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TAG_TOKENS = [
    "<tool_call>",
    "</tool_call>",
    "<answer>",
    "</answer>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
]

# Isolated before byte-level BPE: every digit, every grid character, and every space that
# is not the start of a word (grid floor, indentation), so none of them merge.
_ISOLATE_PATTERN = r"\p{N}|[#$.@*+\n]| (?!\p{L})"

SIZES: dict[str, dict[str, int]] = {
    # ~1M parameters: fast enough for DAgger on a CPU in minutes.
    "tiny": dict(
        vocab_size=2048,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=2048,
    ),
    # ~5M parameters: a teacher a few times the tiny student, still quick to train on a CPU.
    "base": dict(
        vocab_size=2048,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=2048,
    ),
    # ~25M parameters.
    "small": dict(
        vocab_size=4096,
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=64,
        max_position_embeddings=4096,
    ),
}

# Qwen-style ChatML. Renders system/user/assistant/tool turns; an assistant message may carry
# OpenAI-style `tool_calls` (rendered as <tool_call> blocks after its content); `tools`
# (JSON schemas) go into a system block. Each message renders independently of the ones
# after it, so a conversation's text is the concatenation of its messages' texts.
CHAT_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages and messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{- '<tools>' }}"
    "{%- for t in tools %}{{- '\\n' + (t | tojson) }}{%- endfor %}"
    "{{- '\\n</tools><|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (tools and loop.first and message.role == 'system') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + (message.content or '') }}"
    "{%- if message.role == 'assistant' and message.tool_calls %}"
    "{%- for tc in message.tool_calls %}"
    "{%- set f = tc.function if tc.function is defined else tc %}"
    "{%- if (message.content or '') or not loop.first %}{{- '\\n' }}{%- endif %}"
    "{%- if f.arguments is string %}{%- set args = f.arguments %}"
    "{%- else %}{%- set args = f.arguments | tojson %}{%- endif %}"
    "{{- '<tool_call>{\"name\": ' + (f.name | tojson) + ', \"arguments\": ' + args + '}</tool_call>' }}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def default_tiny_path() -> Path:
    """The cached tiny model, built on first use.

    Lives in `$MENTORGYM_CACHE/tiny-<key>` (else `~/.cache/mentorgym/tiny-<key>`); the key
    names the builder version and which envs could feed the tokenizer corpus, so the cache
    is rebuilt once the envs land. Safe when processes race: each builds in a temporary
    directory and renames it into place; the loser discards its copy.
    """
    root = Path(os.environ.get("MENTORGYM_CACHE") or Path.home() / ".cache" / "mentorgym")
    envs = [e for e in DEFAULT_ENV_IDS if _env_importable(e)]
    key = hashlib.sha1(("+".join(envs)).encode()).hexdigest()[:8]
    path = root / f"tiny-{TINY_VERSION}-{key}"
    if (path / "config.json").exists():
        return path
    root.mkdir(parents=True, exist_ok=True)
    build_tiny(path, size="tiny", env_ids=DEFAULT_ENV_IDS, seed=0)
    return path


TINY_MAX_NEW_TOKENS = 64


def build_tiny(
    out: str | Path,
    size: str = "tiny",
    env_ids: list[str] | None = None,
    seed: int = 0,
    tokenizer_from: str | Path | None = None,
) -> Path:
    """Build a random-init Qwen3 causal LM and its own tokenizer; save both to `out`.

    `env_ids` (default Sokoban-v0 and MathTools-v0) are played with their experts to get
    tokenizer training text; an env that cannot be made is skipped with a warning. The
    result is deterministic for a given `seed`, size and env set. Writing is atomic:
    `out` appears complete or not at all (if it already exists, it is left as is).
    `tokenizer_from` reuses the tokenizer of another checkpoint instead of training one, so that
    a teacher and a student of different sizes share token ids (distillation needs that).
    Returns `out`.
    """
    if size not in SIZES:
        raise ConfigError(f"unknown tiny model size {size!r}; choose one of {sorted(SIZES)}")
    out = Path(out)
    if (out / "config.json").exists():
        return out
    env_ids = DEFAULT_ENV_IDS if env_ids is None else env_ids
    spec = SIZES[size]

    if tokenizer_from is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_from))
        used_envs = [f"tokenizer of {tokenizer_from}"]
    else:
        texts, used_envs = corpus(env_ids, seed)
        tokenizer = train_tokenizer(texts, vocab_size=spec["vocab_size"])
    model = _init_model(tokenizer, spec, seed)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {
            "builder": "mentorgym.agents.tiny",
            "version": TINY_VERSION,
            "size": size,
            "seed": seed,
            "corpus_envs": used_envs,
            "num_parameters": model.num_parameters(),
        }
        (tmp / "mentorgym_tiny.json").write_text(json.dumps(info, indent=1) + "\n")
        # An untrained model rarely ends its turn; 64 new tokens cover a Sokoban answer and a
        # math tool call, and keep a first `eval --agent tiny` to seconds instead of minutes.
        from mentorgym.agents.hf import PolicyCard, write_policy_card

        write_policy_card(tmp, PolicyCard(max_new_tokens=TINY_MAX_NEW_TOKENS))
        try:
            os.rename(tmp, out)  # atomic; fails if another process already put `out` there
        except OSError:
            if not (out / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


# --- corpus ------------------------------------------------------------------------------------


def corpus(env_ids: list[str], seed: int = 0) -> tuple[list[str], list[str]]:
    """Tokenizer training text: expert episodes of each env that can be made, plus built-in text.

    Returns the texts and the ids of the envs that contributed.
    """
    texts = list(_builtin_texts(seed))
    used: list[str] = []
    for env_id in env_ids:
        try:
            env_texts = list(_env_texts(env_id, seed))
        except Exception as e:  # an env still being written must not break the model build
            warnings.warn(
                f"tiny tokenizer: skipping {env_id} ({type(e).__name__}: {e})", stacklevel=2
            )
            continue
        texts.extend(env_texts)
        used.append(env_id)
    return texts, used


def _env_importable(env_id: str) -> bool:
    import gymnasium
    from gymnasium.envs.registration import load_env_creator

    import mentorgym  # noqa: F401  (registers the built-in ids)

    try:
        spec = gymnasium.spec(env_id)
        if isinstance(spec.entry_point, str):
            load_env_creator(spec.entry_point)
        return True
    except Exception:
        return False


def _env_texts(env_id: str, seed: int) -> Iterator[str]:
    import mentorgym

    env = mentorgym.make(env_id)
    try:
        for ep in range(EPISODES_PER_ENV):
            messages, _ = env.reset(seed=seed * 100_003 + ep)
            yield from (m["content"] for m in messages)
            for _ in range(MAX_CORPUS_STEPS):
                action = env.unwrapped.expert_action()
                if action is None:
                    break
                yield action
                messages, _, terminated, truncated, _ = env.step(action)
                yield from (m["content"] for m in messages)
                if terminated or truncated:
                    break
    finally:
        env.close()


def _builtin_texts(seed: int) -> Iterator[str]:
    """Text every tokenizer should know even before the envs exist: formats, grids, arithmetic."""
    from mentorgym.envs.base import (
        ANSWER_FORMAT,
        TOOL_CALL_FORMAT,
        Tool,
        format_tool_call,
        tools_prompt,
    )

    rng = random.Random(seed)
    python = Tool(
        name="python",
        description="Run Python code and return what it prints.",
        parameters={
            "type": "object",
            "properties": {"code": {"type": "string"}},
            "required": ["code"],
        },
        run=lambda args: "",
    )
    yield tools_prompt([python])
    yield f"Write your move as {ANSWER_FORMAT}. To call a tool write {TOOL_CALL_FORMAT}."
    yield (
        "You are playing Sokoban. Push every box onto a target. Legend: # wall, space floor, "
        "$ box, . target, @ player, * box on target, + player on target. "
        "Moves: Up, Down, Left, Right. Answer with one move, e.g. <answer>Up</answer>."
    )
    for _ in range(200):
        yield (
            _random_grid(rng)
            + "\n"
            + f"<answer>{rng.choice(['Up', 'Down', 'Left', 'Right'])}</answer>"
        )
    for _ in range(200):
        a, b, c = rng.randint(1, 999), rng.randint(1, 99), rng.randint(2, 12)
        yield (
            f"A shop sells {a} apples on Monday and {b} more on each of the next {c} days. "
            f"How many apples does it sell in total?"
        )
        yield format_tool_call("python", {"code": f"total = {a} + {b} * {c}\nprint(total)"})
        yield f"{a + b * c}\n<answer>{a + b * c}</answer>"
        yield f"Error: tool \"python\" is missing required argument(s) ['code']. Format error: {c}/{b} = {c / b:.4f}"


def _random_grid(rng: random.Random) -> str:
    h, w = rng.randint(5, 8), rng.randint(5, 8)
    rows = []
    for r in range(h):
        row = []
        for c in range(w):
            edge = r in (0, h - 1) or c in (0, w - 1)
            row.append("#" if edge or rng.random() < 0.15 else rng.choice("     $.@*+"))
        rows.append("".join(row))
    return "\n".join(rows)


# --- tokenizer and model -----------------------------------------------------------------------


def train_tokenizer(texts: list[str], vocab_size: int = 2048):
    """Train the byte-level BPE on `texts`; returns a transformers fast tokenizer with the chat template."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_ISOLATE_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(TAG_TOKENS),
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def _init_model(tokenizer, spec: dict[str, int], seed: int):
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=spec["hidden_size"],
        intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["num_hidden_layers"],
        num_attention_heads=spec["num_attention_heads"],
        num_key_value_heads=spec["num_key_value_heads"],
        head_dim=spec["head_dim"],
        max_position_embeddings=spec["max_position_embeddings"],
        tie_word_embeddings=True,
        eos_token_id=eos,
        pad_token_id=pad,
        bos_token_id=None,
        dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad)
    return model
