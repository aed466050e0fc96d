"""LoRA for every trainer, through peft: the `lora:` block of a config.

```yaml
lora: {rank: 16, alpha: 32, dropout: 0.05, target_modules: all-linear}
```

peft's LoRA layers are injected into the student in place (`inject_adapter_in_model`), so
the student stays the same transformers model: every trainer, scorer and the `hf:` sampler
use it unchanged, and only the adapter's parameters have `requires_grad`. What changes:
- checkpoints (`RUN/checkpoints/step_*/model`) hold the adapter in peft's own format
  (`adapter_config.json`, `adapter_model.safetensors`), loadable by
  `PeftModel.from_pretrained(base, DIR)`; resume loads it back into the injected layers;
- `RUN/final` is the merged model (base + B @ A * alpha / rank) with its tokenizer and policy
  card, a plain checkpoint for `hf:`, `vllm:` and `vllm serve`;
- the vLLM sampler receives the merged weights after every update (the live model is never
  merged in place, so no rounding creeps into the trained weights).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from mentorgym.errors import ConfigError

ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
"""peft saves adapter keys as a PeftModel names them; the injected model's names lack it."""


@dataclass
class LoraSettings:
    """The `lora:` block (peft's LoraConfig under the names TRL users write)."""

    rank: int = 16
    """r: the adapter's inner dimension."""
    alpha: float = 32.0
    """lora_alpha: the update is scaled by alpha / rank."""
    dropout: float = 0.0
    """lora_dropout on the adapter's input."""
    target_modules: list[str] | str = field(default="all-linear")
    """Module names to adapt (e.g. [q_proj, v_proj]) or `all-linear` (every linear layer but
    the output head)."""


def settings(block: dict[str, Any]) -> LoraSettings | None:
    """The settings of a `lora:` block, None when it is empty (full fine-tuning)."""
    if not block:
        return None
    known = {f.name for f in fields(LoraSettings)}
    unknown = sorted(set(block) - known)
    if unknown:
        raise ConfigError(
            f"lora: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(known))}"
        )
    s = LoraSettings(**block)
    if not isinstance(s.rank, int) or s.rank <= 0:
        raise ConfigError(f"lora.rank must be an integer > 0, got {s.rank!r}")
    if not isinstance(s.alpha, (int, float)) or s.alpha <= 0:
        raise ConfigError(f"lora.alpha must be > 0, got {s.alpha!r}")
    if not isinstance(s.dropout, (int, float)) or not 0 <= s.dropout < 1:
        raise ConfigError(f"lora.dropout must be in [0, 1), got {s.dropout!r}")
    if not isinstance(s.target_modules, (str, list)) or not s.target_modules:
        raise ConfigError("lora.target_modules: a list of module names, or all-linear")
    return s


def _peft() -> Any:
    try:
        import peft
    except ImportError:
        raise ConfigError(
            "lora: needs peft: `pip install peft` (or `pip install 'mentorgym[lora]'`)"
        ) from None
    return peft


def apply(
    model: torch.nn.Module, block: dict[str, Any], gradient_checkpointing: bool = False
) -> torch.nn.Module:
    """Inject LoRA layers into `model` in place when `block` asks for them; freeze the rest."""
    s = settings(block)
    if s is None:
        return model
    peft = _peft()
    config = peft.LoraConfig(
        r=s.rank,
        lora_alpha=s.alpha,
        lora_dropout=s.dropout,
        target_modules=s.target_modules,
        base_model_name_or_path=getattr(model, "name_or_path", None),
    )
    try:
        model = peft.inject_adapter_in_model(config, model)
    except ValueError as e:
        raise ConfigError(f"lora.target_modules {s.target_modules!r}: {e}") from e
    if gradient_checkpointing:
        # Frozen embeddings give checkpointed blocks inputs without grad; peft's usual fix.
        model.enable_input_require_grads()
    return model


def is_lora(model: torch.nn.Module) -> bool:
    """Whether `model` (or the module DDP wraps) carries injected LoRA layers."""
    inner = getattr(model, "module", model)
    return bool(getattr(inner, "peft_config", None))


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(getattr(model, "module", model).parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def save_adapter(model: torch.nn.Module, path: Path) -> None:
    """The adapter in peft's format (what `PeftModel.from_pretrained(base, path)` reads)."""
    from safetensors.torch import save_file

    peft = _peft()
    inner = getattr(model, "module", model)
    state = peft.get_peft_model_state_dict(inner)
    path.mkdir(parents=True, exist_ok=True)
    save_file(
        {PEFT_PREFIX + k: v.detach().contiguous().cpu() for k, v in state.items()},
        str(path / ADAPTER_WEIGHTS),
        metadata={"format": "pt"},
    )
    inner.peft_config["default"].save_pretrained(str(path))


def load_adapter(model_dir: Path, model: torch.nn.Module) -> bool:
    """Load an adapter saved by `save_adapter` into the injected layers; False when
    `model_dir` holds no adapter (a full checkpoint)."""
    file = model_dir / ADAPTER_WEIGHTS
    if not file.is_file():
        if is_lora(model):
            raise ConfigError(
                f"checkpoint {model_dir} holds full weights but this run trains a LoRA adapter; "
                "resume with the config the checkpoint was written with"
            )
        return False
    if not is_lora(model):
        raise ConfigError(
            f"checkpoint {model_dir} holds a LoRA adapter; resume with the run's `lora:` block"
        )
    from safetensors.torch import load_file

    peft = _peft()
    state = {k.removeprefix(PEFT_PREFIX): v for k, v in load_file(str(file)).items()}
    result = peft.set_peft_model_state_dict(getattr(model, "module", model), state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ConfigError(f"adapter {file} does not match the model: unexpected {unexpected[:3]}")
    return True


@torch.no_grad()
def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights of the merged model under the base model's names, without touching the
    live model: each adapted layer's weight is `base + delta` (peft's `get_delta_weight`)."""
    from peft.tuners.lora import LoraLayer

    inner = getattr(model, "module", model)
    out: dict[str, torch.Tensor] = {}
    deltas: dict[str, torch.Tensor] = {}
    for name, module in inner.named_modules():
        if isinstance(module, LoraLayer):
            for adapter in module.active_adapters:
                d = module.get_delta_weight(adapter)
                key = f"{name}.weight"
                deltas[key] = deltas[key] + d if key in deltas else d
    for key, value in inner.state_dict().items():
        if ".lora_" in key:
            continue
        base_key = key.replace(".base_layer.", ".")
        out[base_key] = value + deltas[base_key] if base_key in deltas else value
    return out


def save_merged(model: torch.nn.Module, tokenizer: Any, path: Path, card: Any = None) -> None:
    """The merged model as a plain Hugging Face checkpoint in `path` (plus tokenizer and card)."""
    from transformers import AutoModelForCausalLM

    from mentorgym.agents.card import write_policy_card

    inner = getattr(model, "module", model)
    state = merged_state_dict(inner)
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(inner.config)
    plain.load_state_dict(state, strict=True, assign=True)
    plain.tie_weights()
    plain.generation_config = inner.generation_config
    path.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(path, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    if card is not None:
        write_policy_card(path, card)


def sync_merged(engine: Any, model: torch.nn.Module) -> float:
    """Load the merged weights into a vLLM engine (single process); returns the seconds."""
    t0 = time.perf_counter()
    engine.load_weights(list(merged_state_dict(model).items()))
    return time.perf_counter() - t0
