"""Flat config dataclasses loaded from YAML with `--set key=value` overrides.

One dataclass per algorithm (`mentorgym.training.sft.Config`, `...dagger.Config`); its
fields carry their own docstrings. A YAML file names its algorithm
(`algorithm: dagger`) and sets any fields; `--set key=value` overrides win over the
file, and values are coerced to the field's declared type. Unknown keys are a
`ConfigError` naming the key and the valid ones. Nothing here rewrites what the user
asked for.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from mentorgym.errors import ConfigError

ALGORITHMS: dict[str, str] = {
    "sft": "mentorgym.training.sft",
    "bc": "mentorgym.training.sft",
    "dagger": "mentorgym.training.dagger",
    "opd": "mentorgym.training.opd",
    "sod": "mentorgym.training.sod",
    "skill_sd": "mentorgym.training.skill_sd",
    "opsd": "mentorgym.training.opsd",
    "grpo": "mentorgym.training.grpo",
}
"""`algorithm:` name -> the module that holds its `Config`, `train` and `dry_run`."""


def algorithm_module(name: str) -> types.ModuleType:
    """The module of an algorithm named in a config, or a ConfigError listing the known ones."""
    if name not in ALGORITHMS:
        raise ConfigError(
            f"unknown algorithm {name!r}; set `algorithm:` to one of {sorted(ALGORITHMS)}"
        )
    return importlib.import_module(ALGORITHMS[name])


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist; pass the path to a YAML file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(p)!r} must hold a mapping of key: value, not {type(data).__name__}"
        )
    return data


def parse_sets(sets: list[str]) -> dict[str, str]:
    """`["lr=1e-3", "teacher=expert"]` -> {"lr": "1e-3", ...} (values still strings)."""
    out: dict[str, str] = {}
    for s in sets:
        key, sep, value = s.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {s!r} is not key=value; write e.g. --set lr=1e-4")
        out[key.strip()] = value.strip()
    return out


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML or command-line value to the declared type `tp` of field `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: cannot read {value!r} as {tp}: {'; '.join(errors)}")
    if origin is typing.Literal:
        for a in args:
            if value == a or (isinstance(value, str) and str(a) == value):
                return a
        raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
    if origin in (list, tuple):
        if isinstance(value, str):
            try:
                value = (
                    ast.literal_eval(value)
                    if value.strip().startswith(("[", "("))
                    else value.split(",")
                )
            except (ValueError, SyntaxError) as e:
                raise ConfigError(f"{key}: cannot read {value!r} as a list: {e}") from e
            if isinstance(value, list) and value == [""]:
                value = []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError as e:
                raise ConfigError(f"{key}: cannot read {value!r} as a mapping: {e}") from e
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return yaml.safe_load(value) if isinstance(value, str) else value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value.replace("_", ""))
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: field type {tp} is not supported by the config loader")


def build_config(cls: type, values: dict[str, Any]) -> Any:
    """An instance of dataclass `cls` from a mapping; unknown keys are a ConfigError."""
    types_ = _field_types(cls)
    unknown = [k for k in values if k not in types_]
    if unknown:
        raise ConfigError(
            f"unknown config key {unknown[0]!r} for {cls.__module__}.{cls.__name__}; "
            f"valid keys: {', '.join(sorted(types_))}"
        )
    kwargs = {k: coerce(v, types_[k], k) for k, v in values.items()}
    cfg = cls(**kwargs)
    check = getattr(cfg, "validate", None)
    if callable(check):
        check()
    return cfg


def load_config(path: str | Path, sets: list[str] | None = None) -> tuple[str, Any]:
    """(algorithm name, Config instance) from a YAML file plus `--set` overrides."""
    data = read_yaml(path)
    overrides = parse_sets(sets or [])
    algo = str(overrides.pop("algorithm", data.pop("algorithm", "") or ""))
    data.pop("algorithm", None)
    if not algo:
        raise ConfigError(
            f"config {str(path)!r} does not name its algorithm; add a line `algorithm: dagger` "
            f"(one of {sorted(ALGORITHMS)})"
        )
    module = algorithm_module(algo)
    values = {**data, **overrides}
    return algo, build_config(module.Config, values)


def config_to_dict(cfg: Any, algorithm: str | None = None) -> dict[str, Any]:
    """A plain mapping of a config (with `algorithm` first when given), ready for YAML."""
    d = dataclasses.asdict(cfg)
    return {"algorithm": algorithm, **d} if algorithm else d


def dump_config(cfg: Any, path: str | Path, algorithm: str | None = None) -> None:
    """Write `config.yaml` so the run can be repeated with `mentorgym train PATH`."""
    Path(path).write_text(
        yaml.safe_dump(config_to_dict(cfg, algorithm), sort_keys=False), encoding="utf-8"
    )


def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal under it in the class body)."""
    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def echo_config(cfg: Any, algorithm: str) -> str:
    """The config as YAML lines, printed at the start of a run."""
    return f"# {algorithm} config\n" + yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
