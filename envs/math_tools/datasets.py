"""Math data sets as `Problem`s: GSM8K, MATH and MATH500, AIME-style, SVAMP, or any columns.

`load_problems(source)` reads a local JSONL/JSON/Parquet/CSV file, a folder written by
`datasets.Dataset.save_to_disk`, or a Hugging Face hub name (`HuggingFaceH4/MATH-500`,
with `split=` and `subset=` as `datasets.load_dataset` takes them). Field names are
matched ignoring case (`Problem` and `problem` are the same field). The formats:

- `gsm8k`: `question`, and `answer` ending in `#### <final answer>` (the text before is
  the worked solution);
- `math` (MATH, MATH500): `problem`, and `answer`, or else the last `\\boxed{}` of
  `solution`; `solution` is kept as the worked solution;
- `aime`: `problem` and `answer` (AIME 2024/2025 sets; read like `math`);
- `svamp`: `Body` + `Question` make the question, `Answer` the answer, and a plain
  arithmetic `Equation` becomes the program `print(<Equation>)`;
- any other set through a column mapping: `question_key` and `answer_key` (an answer
  holding a `\\boxed{}` or `####` is cut to the final answer), optionally `solution_key`.

The format is detected from the first row's fields where only one format fits; where
none or several fit, the error names the candidates and the settings that choose one.
`id_key` names the id column in any format; without it `id`, `unique_id`, `idx` are
tried, else `<name>-<row index>`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mentorgym.envs.math_tools.answers import last_boxed
from mentorgym.envs.math_tools.problems import Problem
from mentorgym.errors import ConfigError

FORMATS = ("gsm8k", "math", "aime", "svamp")
FORMAT_FIELDS = {
    "gsm8k": "question, and answer ending in '#### <final answer>'",
    "math": "problem, and answer or a solution with \\boxed{}",
    "aime": "problem and answer",
    "svamp": "Body, Question and Answer",
}
_ID_FIELDS = ("id", "unique_id", "idx")
_LOCAL_SUFFIXES = {".jsonl", ".json", ".parquet", ".csv", ".arrow"}
_ARITHMETIC_RE = re.compile(r"[\d.\s()+\-*/]+")
_HUB_NAME_RE = re.compile(r"[\w.-]+(/[\w.-]+)?")

Row = dict[str, Any]


def load_problems(
    source: str | Path,
    *,
    format: str | None = None,
    split: str | None = None,
    subset: str | None = None,
    question_key: str | None = None,
    answer_key: str | None = None,
    id_key: str | None = None,
    solution_key: str | None = None,
) -> list[Problem]:
    """The problems of `source` (see the module docstring for sources and formats).

    `format` is one of `FORMATS`, or None to detect it; `question_key` and `answer_key`
    read any set by its columns instead. Raises `ConfigError` with what to change when
    the source cannot be read or a row does not fit its format.
    """
    if format is not None and format not in FORMATS:
        raise ConfigError(f"unknown dataset format {format!r}; use one of {', '.join(FORMATS)}")
    if (question_key is None) != (answer_key is None):
        raise ConfigError("a column mapping needs both question_key and answer_key")
    if question_key is not None and format is not None:
        raise ConfigError(
            f"pass either format={format!r} or question_key/answer_key, not both: a column "
            "mapping reads the set by its columns"
        )
    rows, name, where = _read_rows(source, split=split, subset=subset)
    if not rows:
        raise ConfigError(f"dataset {name!r} holds no problems")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ConfigError(f"{where(i)}: expected an object with named fields, got {row!r:.80}")
    if question_key is not None and answer_key is not None:
        read = _columns_reader(question_key, answer_key, solution_key)
    else:
        if solution_key is not None:
            raise ConfigError("solution_key goes with question_key and answer_key")
        read = _READERS[format or _detect_format(rows[0], name)]
    problems = []
    for i, row in enumerate(rows):
        fields = {k.lower(): v for k, v in row.items()}
        try:
            question, answer, solution, program = read(fields)
            task_id = _task_id(fields, id_key, name, i)
        except ValueError as e:
            raise ConfigError(f"{where(i)}: {e}") from e
        problems.append(Problem(question, answer, task_id, program, solution))
    return problems


def load_gsm8k(path: str | Path) -> list[Problem]:
    """Problems from a GSM8K-format JSONL file: `question`, and `answer` ending `#### N`."""
    return load_problems(path, format="gsm8k")


# --- sources -----------------------------------------------------------------------------------


def _read_rows(
    source: str | Path, *, split: str | None, subset: str | None
) -> tuple[list[Row], str, Callable[[int], str]]:
    """The rows, a short name for ids, and how to name row i in an error."""
    path = Path(source)
    if path.is_file() and path.suffix in (".jsonl", ".json"):
        return _read_json_lines(path)
    if path.is_file() and path.suffix in _LOCAL_SUFFIXES:
        kind = path.suffix[1:]  # parquet, csv, arrow: the names of datasets' builders
        rows = _hf_rows(lambda ds: ds.load_dataset(kind, data_files=str(path)), split, str(path))
        return rows, path.stem, lambda i: f"{path} row {i}"
    if path.is_dir():
        saved = (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()
        load = (
            (lambda ds: ds.load_from_disk(str(path)))
            if saved
            else (lambda ds: ds.load_dataset(str(path), subset, split=split))
        )
        return _hf_rows(load, split, str(path)), path.name, lambda i: f"{path} row {i}"
    name = str(source)
    if path.suffix in _LOCAL_SUFFIXES or not _HUB_NAME_RE.fullmatch(name):
        raise ConfigError(
            f"dataset file {name!r} not found; pass dataset=PATH to a JSONL, JSON, Parquet or "
            "CSV file, a folder saved by datasets, or a Hugging Face dataset name"
        )
    rows = _hf_rows(lambda ds: ds.load_dataset(name, subset, split=split), split, name)
    return rows, name.rsplit("/", 1)[-1], lambda i: f"{name} row {i}"


def _read_json_lines(path: Path) -> tuple[list[Row], str, Callable[[int], str]]:
    """A JSON array file, or JSONL with errors that name the line."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
        return rows, path.stem, lambda i: f"{path} item {i}"
    rows, linenos = [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
        linenos.append(lineno)
    return rows, path.stem, lambda i: f"{path}:{linenos[i]}"


def _hf_rows(load: Callable[[Any], Any], split: str | None, name: str) -> list[Row]:
    """Rows of a `datasets` Dataset; a DatasetDict needs `split` unless it has one split."""
    try:
        import datasets
    except ImportError as e:
        raise ConfigError(
            f"reading {name!r} needs the datasets package: pip install datasets"
        ) from e
    try:
        data = load(datasets)
    except (OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as e:
        raise ConfigError(
            f"could not load dataset {name!r} with datasets ({type(e).__name__}: {e}); a hub "
            "name needs network access or a cached copy"
        ) from e
    if isinstance(data, datasets.DatasetDict):
        splits = list(data)
        if split is None and len(splits) == 1:
            split = splits[0]
        if split not in data:
            raise ConfigError(f"dataset {name!r} has splits {splits}: pass split=<one of them>")
        data = data[split]
    return list(data)


# --- formats -------------------------------------------------------------------------------------

Reader = Callable[[Row], tuple[str, str, str | None, str | None]]
"""Lowercased row -> (question, answer, worked solution, program)."""


def _detect_format(row: Row, name: str) -> str:
    keys = {k.lower() for k in row}
    fits = []
    if {"body", "question", "answer"} <= keys:
        fits = ["svamp"]
    else:
        if {"question", "answer"} <= keys:
            fits.append("gsm8k")
        if "problem" in keys and ("answer" in keys or "solution" in keys):
            fits.append("aime" if "solution" not in keys else "math")
    if len(fits) == 1:
        return fits[0]
    known = "; ".join(f"{f} ({fields})" for f, fields in FORMAT_FIELDS.items())
    what = f"fits several formats ({', '.join(fits)})" if fits else "fits none of the known formats"
    raise ConfigError(
        f"dataset {name!r} with fields {sorted(row)} {what}. Known formats: {known}. Pass "
        "format=<name>, or question_key=... and answer_key=... to name the columns"
    )


def _text(fields: Row, key: str) -> str:
    value = fields.get(key.lower())
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string field {key!r}, got {value!r:.80}")
    return value.strip()


def _answer(fields: Row, key: str) -> str:
    """A final answer: a string as written, a number as its shortest text (3.0 -> "3")."""
    value = fields.get(key.lower())
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a string or number field {key!r}, got {value!r:.80}")
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"the field {key!r} is empty")
    return str(value).strip()


def _gsm8k(fields: Row) -> tuple[str, str, str | None, str | None]:
    answer = fields.get("answer")
    if not isinstance(answer, str) or "####" not in answer:
        raise ValueError(
            'the "answer" must end with "#### <final answer>" (GSM8K format); if it holds only '
            "the final answer, pass question_key=question answer_key=answer"
        )
    rationale, final = answer.strip().rsplit("####", 1)
    if not final.strip():
        raise ValueError('nothing follows "####" in the "answer"')
    return _text(fields, "question"), final.strip(), rationale.strip() or None, None


def _math(fields: Row) -> tuple[str, str, str | None, str | None]:
    solution = fields.get("solution")
    solution = solution.strip() if isinstance(solution, str) and solution.strip() else None
    if fields.get("answer") not in (None, ""):
        answer = _answer(fields, "answer")
    elif solution is not None and last_boxed(solution):
        answer = last_boxed(solution).strip()  # type: ignore[union-attr]
    else:
        raise ValueError('expected an "answer" field, or a "solution" with a \\boxed{} answer')
    return _text(fields, "problem"), answer, solution, None


def _svamp(fields: Row) -> tuple[str, str, str | None, str | None]:
    body, question = _text(fields, "Body"), _text(fields, "Question")
    if body[-1] not in ".?!":
        body += "."
    equation = fields.get("equation")
    program = None
    if isinstance(equation, str) and _ARITHMETIC_RE.fullmatch(equation):
        program = f"print({equation.strip()})"
    return f"{body} {question}", _answer(fields, "Answer"), None, program


def _columns_reader(question_key: str, answer_key: str, solution_key: str | None) -> Reader:
    def read(fields: Row) -> tuple[str, str, str | None, str | None]:
        answer = _answer(fields, answer_key)
        boxed = last_boxed(answer)
        if boxed is not None and boxed.strip():
            answer = boxed.strip()
        elif "####" in answer:
            answer = answer.rsplit("####", 1)[1].strip()
        solution = _text(fields, solution_key) if solution_key is not None else None
        return _text(fields, question_key), answer, solution, None

    return read


_READERS: dict[str, Reader] = {"gsm8k": _gsm8k, "math": _math, "aime": _math, "svamp": _svamp}


def _task_id(fields: Row, id_key: str | None, name: str, index: int) -> str:
    keys: Iterable[str] = (id_key,) if id_key is not None else _ID_FIELDS
    for key in keys:
        value = fields.get(key.lower())
        if value is not None and str(value).strip():
            return str(value).strip()
    if id_key is not None:
        raise ValueError(f"no {id_key!r} field (id_key names it)")
    return f"{name}-{index}"
