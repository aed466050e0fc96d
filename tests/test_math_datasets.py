"""Math data sets: GSM8K, MATH, AIME, SVAMP and column-mapped files, through load_problems,
gymnasium.make and `mentorgym eval`, and the Hugging Face `datasets` loading path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium
import pytest

pytest.importorskip("math_verify", reason="the grader needs math-verify: pip install math-verify")

from mentorgym.envs.math_tools import load_problems  # noqa: E402
from mentorgym.envs.registry import register_builtin  # noqa: E402
from mentorgym.errors import ConfigError  # noqa: E402
from mentorgym.sandboxes.local import LocalSandbox  # noqa: E402

DATA = Path(__file__).parent / "data"
SAMPLES = {
    "gsm8k": DATA / "gsm8k_sample.jsonl",
    "math": DATA / "math_sample.jsonl",
    "aime": DATA / "aime_sample.jsonl",
    "svamp": DATA / "svamp_sample.json",
}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make(**kwargs) -> gymnasium.Env:
    register_builtin()
    return gymnasium.make("mentorgym/MathTools-v0", sandbox_factory=LocalSandbox, **kwargs)


def expert_score(env: gymnasium.Env) -> float:
    """The expert's success rate over every task (what `mentorgym eval --all` plays)."""
    u = env.unwrapped
    wins = 0
    for k in range(u.num_tasks):
        env.reset(options={"index": k})
        while True:
            _, _, term, trunc, info = env.step(u.expert_action())
            if term or trunc:
                wins += info["success"]
                break
    return wins / u.num_tasks


# --- the formats -----------------------------------------------------------------------------------


def test_math_format_reads_answer_or_the_solutions_last_boxed() -> None:
    problems = load_problems(SAMPLES["math"])
    assert len(problems) == 14
    first = problems[0]
    assert (first.answer, first.task_id) == ("3\\sqrt{13}", "sample/prealgebra/1.json")
    assert "9 \\cdot 13" in first.solution and first.program is None
    hendrycks = problems[12]  # no answer field, no id field
    assert (hendrycks.answer, hendrycks.task_id) == ("10", "math_sample-12")
    assert problems[13].answer == "\\frac{\\sqrt{2}}{2}"


def test_aime_svamp_and_gsm8k_formats() -> None:
    aime = load_problems(SAMPLES["aime"])
    assert [p.answer for p in aime] == ["130", "111", "376", "24"]  # numbers become text
    assert aime[0].task_id == "sample-aime-1" and aime[0].solution is None
    svamp = load_problems(SAMPLES["svamp"])
    assert svamp[0].question == (
        "Jack had 8 pens and Mary had 5 pens. Jack gave 3 pens to Mary. "
        "How many pens does Jack have now?"
    )
    assert [p.answer for p in svamp] == ["5", "6", "26", "42", "2.5"]
    assert svamp[0].program == "print(( 8.0 - 3.0 ))" and svamp[0].task_id == "chal-1"
    gsm8k = load_problems(SAMPLES["gsm8k"])
    assert gsm8k[1].answer == "620,500" and "850 * 730" in gsm8k[1].solution


def test_format_can_be_named_and_fields_match_ignoring_case(tmp_path: Path) -> None:
    rows = [{"ID": 7, "Problem": "What is $2^{10}$?", "Solution": "", "Answer": 1024}]
    path = write_jsonl(tmp_path / "aime24.jsonl", rows)
    (p,) = load_problems(path)
    assert (p.answer, p.task_id, p.solution) == ("1024", "7", None)
    (p,) = load_problems(path, format="aime")
    assert p.question == "What is $2^{10}$?"
    with pytest.raises(ConfigError, match="no 'number' field"):
        load_problems(path, id_key="number")


def test_column_mapping_reads_any_set(tmp_path: Path) -> None:
    rows = [
        {"prompt": "Half of 7?", "target": "So it is \\boxed{\\frac{7}{2}}.", "uid": "a"},
        {"prompt": "Twice 4?", "target": "8", "uid": "b", "notes": "worked: 2*4"},
    ]
    path = write_jsonl(tmp_path / "custom.jsonl", rows)
    problems = load_problems(path, question_key="prompt", answer_key="target", id_key="uid")
    assert [(p.question, p.answer, p.task_id) for p in problems] == [
        ("Half of 7?", "\\frac{7}{2}", "a"),
        ("Twice 4?", "8", "b"),
    ]
    env = make(dataset=str(path), question_key="prompt", answer_key="target", id_key="uid")
    assert env.unwrapped.num_tasks == 2 and expert_score(env) == 1.0
    env.reset(options={"index": 0})
    _, r, *_, info = env.step("<answer>3.5</answer>")
    assert r == 1.0 and info["grade"] == "number"
    env.close()
    with pytest.raises(ConfigError, match="custom.jsonl:1.*'notes'"):
        load_problems(path, question_key="prompt", answer_key="target", solution_key="notes")
    with pytest.raises(ConfigError, match="both question_key and answer_key"):
        load_problems(path, question_key="prompt")


def test_unclear_formats_are_named_in_the_error(tmp_path: Path) -> None:
    both = write_jsonl(tmp_path / "both.jsonl", [{"question": "q", "problem": "p", "answer": "1"}])
    with pytest.raises(ConfigError, match=r"several formats \(gsm8k, aime\).*format=<name>"):
        load_problems(both)
    assert load_problems(both, format="aime")[0].question == "p"
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"prompt": "p", "target": "1"}])
    with pytest.raises(ConfigError, match="fits none.*svamp.*question_key"):
        load_problems(odd)
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"question": "1+1?", "answer": "2"}])
    with pytest.raises(ConfigError, match="plain.jsonl:1.*####.*question_key=question"):
        load_problems(plain)
    assert load_problems(plain, question_key="question", answer_key="answer")[0].answer == "2"
    no_answer = write_jsonl(tmp_path / "na.jsonl", [{"problem": "p", "solution": "no box"}])
    with pytest.raises(ConfigError, match="na.jsonl:1.*boxed"):
        load_problems(no_answer)
    with pytest.raises(ConfigError, match="unknown dataset format 'mmlu'"):
        load_problems(plain, format="mmlu")
    with pytest.raises(ConfigError, match="not found"):
        load_problems(tmp_path / "missing.parquet")


# --- every format through gymnasium.make and the expert -------------------------------------------


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_expert_scores_one_on_every_format(fmt: str) -> None:
    env = make(dataset=str(SAMPLES[fmt]))
    assert env.unwrapped.num_tasks == len(load_problems(SAMPLES[fmt]))
    assert expert_score(env) == 1.0
    env.close()


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_mentorgym_eval_expert_all_scores_one(fmt: str) -> None:
    """The issue's acceptance command. The SVAMP expert answers directly here
    (max_tool_calls=0), so no sandbox is needed for its python call."""
    args = ["--env-arg", f"dataset={SAMPLES[fmt]}", "--agent", "expert", "--all", "--json"]
    if fmt == "svamp":
        args += ["--env-arg", "max_tool_calls=0"]
    r = subprocess.run(
        [sys.executable, "-m", "mentorgym.cli", "eval", "mentorgym/MathTools-v0", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout.strip().splitlines()[-1])
    assert stats["success_rate"] == 1.0 and stats["episodes"] == len(load_problems(SAMPLES[fmt]))


# --- the Hugging Face datasets path ------------------------------------------------------------------


MATH_ROWS = [
    {
        "problem": "Simplify $\\sqrt{117}$.",
        "solution": "$\\boxed{3\\sqrt{13}}$",
        "answer": "3\\sqrt{13}",
    },
    {"problem": "Expand $(x+1)^2$.", "solution": "$\\boxed{x^2+2x+1}$", "answer": "x^2+2x+1"},
]


def test_datasets_save_to_disk_and_parquet(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    saved = tmp_path / "saved"
    datasets.Dataset.from_list(MATH_ROWS).save_to_disk(str(saved))
    env = make(dataset=str(saved))
    assert env.unwrapped.num_tasks == 2 and expert_score(env) == 1.0
    env.reset(options={"index": 0})
    _, r, *_, info = env.step("<answer>\\sqrt{117}</answer>")
    assert r == 1.0 and info["grade"] == "symbolic"
    env.close()

    splits = tmp_path / "splits"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(MATH_ROWS[:1]),
            "test": datasets.Dataset.from_list(MATH_ROWS),
        }
    ).save_to_disk(str(splits))
    with pytest.raises(ConfigError, match=r"has splits \['train', 'test'\]: pass split="):
        load_problems(splits)
    assert len(load_problems(splits, split="test")) == 2

    parquet = tmp_path / "math500.parquet"
    datasets.Dataset.from_list(MATH_ROWS).to_parquet(str(parquet))
    assert [p.answer for p in load_problems(parquet)] == ["3\\sqrt{13}", "x^2+2x+1"]
    assert [p.task_id for p in load_problems(parquet)] == ["math500-0", "math500-1"]


def test_a_hub_name_goes_to_load_dataset_with_subset_and_split(monkeypatch) -> None:
    """No hub here: `datasets.load_dataset` is replaced by one that serves local rows."""
    datasets = pytest.importorskip("datasets")
    calls = []

    def load_dataset(name, subset=None, split=None):
        calls.append((name, subset, split))
        data = datasets.DatasetDict({"test": datasets.Dataset.from_list(MATH_ROWS)})
        if split is not None and split not in data:
            raise ValueError(f'Unknown split "{split}". Should be one of {list(data)}.')
        return data[split] if split is not None else data

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    problems = load_problems("HuggingFaceH4/MATH-500", split="test", subset="default")
    assert calls == [("HuggingFaceH4/MATH-500", "default", "test")]
    assert [p.task_id for p in problems] == ["MATH-500-0", "MATH-500-1"]
    assert len(load_problems("HuggingFaceH4/MATH-500")) == 2  # one split: no need to name it
    with pytest.raises(ConfigError, match="could not load dataset 'HuggingFaceH4/MATH-500'.*train"):
        load_problems("HuggingFaceH4/MATH-500", split="train")
