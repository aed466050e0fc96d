"""Reading SWE instance files in every shape the harnesses ship them.

- a **JSON list** of instances (SWE-bench's and SWE-Gym's dumps);
- **JSONL**, one instance per line (mentorgym's own files, `swe synth`);
- a **single JSON object**, one instance (how SWE-smith ships each instance), or an object
  mapping ids to instances;
- a **directory saved by `datasets`** (`Dataset.save_to_disk`), read with
  `datasets.load_from_disk`.

The shape is detected from the content, not the file name. Every error names the file and,
where there is one, the record (`FILE[3]`, `FILE:12`) and says what to give instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mentorgym.errors import ConfigError

Record = tuple[str, dict[str, Any]]
"""(where, instance): where names the file and the record, for error messages."""

_SHAPES = "a JSON list, JSONL, one JSON object or a folder saved by `datasets`"


def read_records(path: Path, split: str | None = None) -> list[Record]:
    """Every instance in `path` (a file or a `datasets` folder), each with where it is."""
    if path.is_dir():
        rows = _dataset_dir(path, split)
    else:
        rows = _text_records(path, _read_text(path))
    for where, row in rows:
        if not isinstance(row, dict):
            raise ConfigError(
                f"{where} is a JSON {type(row).__name__}, not a SWE instance (an object with "
                "instance_id, FAIL_TO_PASS, ...); the file must hold instance objects"
            )
    return rows


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if not raw.strip():
        raise ConfigError(f"SWE task file {path} is empty; it must hold {_SHAPES}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"SWE task file {path} is not text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
            f"it must hold {_SHAPES}"
        ) from None


def _text_records(path: Path, text: str) -> list[Record]:
    head = text.lstrip()[:1]
    if head not in ("[", "{"):
        raise ConfigError(
            f"SWE task file {path} is neither JSON nor JSONL: it starts with "
            f"{text.lstrip()[:20]!r}; it must hold {_SHAPES}"
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if head == "{" and e.msg == "Extra data":  # more than one object: JSONL
            return _jsonl(path, text)
        raise ConfigError(
            f"SWE task file {path} is not valid JSON ({e.msg}: line {e.lineno} column "
            f"{e.colno}; is it cut short?); it must hold {_SHAPES}"
        ) from None
    if isinstance(data, list):
        return [(f"{path}[{i}]", row) for i, row in enumerate(data)]
    if "instance_id" in data or not data or not all(isinstance(v, dict) for v in data.values()):
        return [(str(path), data)]  # one instance (SWE-smith)
    return [(f"{path}[{k!r}]", row) for k, row in data.items()]  # {id: instance}


def _jsonl(path: Path, text: str) -> list[Record]:
    rows: list[Record] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((f"{path}:{n}", json.loads(line)))
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"{path}:{n} is not valid JSON ({e.msg} at column {e.colno}); each line of a "
                "JSONL task file must be one instance object"
            ) from None
    return rows


def _dataset_dir(path: Path, split: str | None) -> list[Record]:
    if not any((path / name).is_file() for name in ("dataset_info.json", "dataset_dict.json")):
        raise ConfigError(
            f"{path} is a directory but not a dataset saved by `datasets` (no dataset_info.json "
            f"or dataset_dict.json); give a task file or such a folder"
        )
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            f"{path} is a dataset saved by `datasets`; reading it needs `pip install datasets`"
        ) from None
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # a damaged arrow file or state.json: the user's folder, not our bug
        raise ConfigError(
            f"could not read the `datasets` folder {path} ({type(e).__name__}: {e})"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds)
        pick = split or ("test" if "test" in ds else names[0] if len(names) == 1 else None)
        if pick not in ds:
            raise ConfigError(f"{path} holds splits {names}; pick one with split=NAME")
        ds = ds[pick]
    return [(f"{path}[{i}]", dict(row)) for i, row in enumerate(ds)]
