"""The math grader: equivalence through math-verify, near-misses, text, plain numbers, time limits."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("math_verify", reason="the grader needs math-verify: pip install math-verify")

from mentorgym.envs.math_tools import check_answer, last_boxed, load_problems  # noqa: E402

# Pairs that are the same answer written two ways; each must match in both directions.
EQUIVALENT = [
    ("3\\sqrt{13}", "\\sqrt{117}"),
    ("\\dfrac{14}{3}", "14/3"),
    ("\\dfrac{14}{3}", "4\\frac{2}{3}"),
    ("14/3", "4\\frac{2}{3}"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\frac{\\pi}{2})"),
    ("90^\\circ", "90"),
    ("[2, 5)", "[2,5)"),
    ("x^2+2x+1", "(x+1)^2"),
    ("6-5i", "6 - 5i"),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
    ("\\{1, 2\\}", "\\{2, 1\\}"),
    ("-2, 2", "2, -2"),
    ("25\\%", "25"),
    ("p - q", "-q + p"),
]
# Answers that agree in their last number, or look alike, but are not the same.
NEAR_MISSES = [
    ("6+5i", "6-5i"),
    ("(4, \\frac{\\pi}{2})", "(3, \\frac{\\pi}{2})"),
    ("(4, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("1+1", "1"),
    ("p-q", "q-p"),
    ("[2,5]", "[2,5)"),
    ("3\\sqrt{13}", "\\sqrt{113}"),
    ("x^2+2x+1", "(x-1)^2"),
    ("\\frac{14}{3}", "\\frac{13}{3}"),
]


@pytest.mark.parametrize(("a", "b"), EQUIVALENT)
def test_equivalent_answers_match_both_ways(a: str, b: str) -> None:
    for given, gold in ((a, b), (b, a)):
        verdict = check_answer(given, gold)
        assert verdict.correct, (given, gold, verdict)
        assert verdict.method in ("identical", "number", "symbolic")


@pytest.mark.parametrize(("given", "gold"), NEAR_MISSES)
def test_near_misses_do_not_match(given: str, gold: str) -> None:
    for g, w in ((given, gold), (gold, given)):
        verdict = check_answer(g, w)
        assert not verdict.correct, (g, w, verdict)


@pytest.mark.parametrize(
    "hedge", ["3\\sqrt{13}, 5, 6", "5 \\text{ or } 3\\sqrt{13}", "\\sqrt{117} \\text{ or } 4"]
)
def test_hedged_answers_do_not_match(hedge: str) -> None:
    """Listing candidates is a reward an RL student would learn to exploit."""
    assert not check_answer(hedge, "3\\sqrt{13}").correct


@pytest.mark.parametrize(
    ("given", "gold", "ok"),
    [
        ("Evelyn", "\\text{Evelyn}", True),
        ("\\text{evelyn}", "\\text{Evelyn}", True),
        ("\\textbf{Evelyn}.", "\\text{Evelyn}", True),
        ("Eve", "\\text{Evelyn}", False),
        ("lynEve", "\\text{Evelyn}", False),  # as algebra these letters would commute
        ("(C)", "\\text{(C)}", True),
        ("C", "\\text{(C)}", True),
        ("D", "\\text{(C)}", False),
        ("Paris", "paris", True),
    ],
)
def test_text_answers_are_compared_as_text(given: str, gold: str, ok: bool) -> None:
    verdict = check_answer(given, gold)
    assert (verdict.correct, verdict.method) == (ok, "text")


@pytest.mark.parametrize(
    ("given", "gold", "ok"),
    [
        ("1000000.4", "1000000", True),  # the GSM8K tolerance; math-verify rounds to 6 places
        ("$1,000", "1000", True),
        ("1000 dollars", "1,000", True),
        ("\\text{18 apples}", "18", True),
        ("5", "\\text{5 cm}", True),  # digits inside \text{}: a number with a unit, not text
        ("12", "1,2", False),  # only groups of three digits are thousands
        ("50%", "0.5", True),
        ("90°", "90", True),
        ("5 pi", "5", False),  # `pi` is no unit: this goes to math-verify
    ],
)
def test_plain_numbers_stay_plain(given: str, gold: str, ok: bool) -> None:
    assert check_answer(given, gold).correct is ok


def test_boxed_and_delimiters_are_unwrapped() -> None:
    assert check_answer("so it is $\\boxed{3\\sqrt{13}}$.", "\\sqrt{117}").correct
    assert check_answer("\\(\\frac{14}{3}\\)", "$4\\frac{2}{3}$").correct
    assert check_answer("\\boxed{1} then \\boxed{2}", "2").correct  # the last one counts
    assert last_boxed("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{1") is None
    for empty in ("", "   ", "\\boxed{}", None, 7):
        assert check_answer(empty, "1").method == "empty"


def test_a_check_that_runs_too_long_times_out_in_a_worker_thread() -> None:
    """`9^{9^{9}}` makes sympy build a 370-million-digit integer; the limit must still hold."""
    verdicts = []
    thread = threading.Thread(
        target=lambda: verdicts.append(check_answer("9^{9^{9}}", "1", timeout=1.0))
    )
    thread.start()
    thread.join(timeout=180)
    assert not thread.is_alive()
    assert (verdicts[0].correct, verdicts[0].method) == (False, "timeout")
    # The killed worker is replaced: the next check is decided as usual.
    assert check_answer("\\sqrt{117}", "3\\sqrt{13}").method == "symbolic"


def test_a_worker_that_dies_or_cannot_start_is_reported(tmp_path: Path, monkeypatch) -> None:
    from mentorgym.envs.math_tools import answers
    from mentorgym.errors import MentorgymError

    dies = tmp_path / "dies.py"
    dies.write_text("import sys\nprint('{\"ready\": true}', flush=True)\nsys.stdin.readline()\n")
    monkeypatch.setattr(answers, "WORKER_SCRIPT", dies)
    pool = answers._WorkerPool(max_workers=1)
    assert pool.check(gold="1", given="1+0", timeout=30) == answers.Verdict(False, "error")
    broken = tmp_path / "broken.py"
    broken.write_text("raise ImportError('no module named math_verify')\n")
    monkeypatch.setattr(answers, "WORKER_SCRIPT", broken)
    with pytest.raises(MentorgymError, match="(?s)did not start.*no module named math_verify.*pip"):
        pool.check(gold="1", given="1+0", timeout=30)


def _check_in_child(queue) -> None:
    from mentorgym.envs.math_tools import answers

    queue.put((len(answers._WORKERS._idle), check_answer("\\sqrt{117}", "3\\sqrt{13}").method))


def test_a_forked_child_starts_its_own_workers() -> None:
    import multiprocessing

    from mentorgym.envs.math_tools import answers

    assert check_answer("\\sqrt{117}", "3\\sqrt{13}").method == "symbolic"
    assert answers._WORKERS._idle  # the parent now holds a worker the child must not use
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_check_in_child, args=(queue,))
    child.start()
    assert queue.get(timeout=120) == (0, "symbolic")
    child.join(timeout=60)
    assert child.exitcode == 0
    assert check_answer("\\sqrt{117}", "3\\sqrt{13}").method == "symbolic"


def test_checks_from_many_threads_get_their_own_verdicts() -> None:
    cases = [(a, b, True) for a, b in EQUIVALENT] + [(a, b, False) for a, b in NEAR_MISSES]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda c: check_answer(c[0], c[1]).correct, cases))
    assert got == [ok for _, _, ok in cases]


# --- a whole MATH-format file --------------------------------------------------------------------

# (problem, solution, answer or None for a Hendrycks-style row without an `answer` field)
MATH_ROWS = [
    ("Simplify $\\sqrt{117}$.", "It is $\\boxed{3\\sqrt{13}}$.", "3\\sqrt{13}"),
    ("Reduce $\\frac{28}{6}$.", "It is $\\boxed{\\dfrac{14}{3}}$.", "\\dfrac{14}{3}"),
    ("Convert $(0,3)$ to polar.", "$\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$", None),
    ("Convert $(0,4)$ to polar.", "$\\boxed{\\left( 4, \\frac{\\pi}{2} \\right)}$", None),
    ("Write $2 \\le x < 5$ as an interval.", "$\\boxed{[2,5)}$", "[2,5)"),
    ("Write $2 \\le x \\le 5$ as an interval.", "$\\boxed{[2,5]}$", "[2,5]"),
    ("Simplify $(2-3i)+(4-2i)$.", "$\\boxed{6-5i}$", "6-5i"),
    ("Simplify $(2+3i)+(4+2i)$.", "$\\boxed{6+5i}$", "6+5i"),
    ("Expand $(x+1)^2$.", "$\\boxed{x^2+2x+1}$", "x^2+2x+1"),
    ("Who won?", "$\\boxed{\\text{Evelyn}}$", "\\text{Evelyn}"),
    ("Each angle of a square?", "$\\boxed{90^\\circ}$", "90^\\circ"),
    ("Simplify $(3p-2q)-(2p-q)$.", "$\\boxed{p-q}$", "p-q"),
    ("Simplify $(3q-2p)-(2q-p)$.", "$\\boxed{q-p}$", "q-p"),
    ("What is $7-6$?", "$\\boxed{1}$", "1"),
    ("What is $1+1$?", "$\\boxed{2}$", "2"),
    ("Half of 1?", "$\\boxed{\\frac{1}{2}}$", None),
    ("One divided by two, as a decimal?", "$\\boxed{0.5}$", "0.5"),
    ("Solve $x^2=4$.", "$\\boxed{-2, 2}$", "-2, 2"),
    ("What percent of 80 is 20?", "$\\boxed{25\\%}$", "25\\%"),
]
EQUAL_GOLDS = {(15, 16), (16, 15)}
"""Problems whose gold answers are the same value written differently (1/2 and 0.5)."""


@pytest.mark.slow
def test_grading_over_a_math_format_file(tmp_path: Path) -> None:
    path = tmp_path / "math.jsonl"
    with path.open("w") as f:
        for k, (problem, solution, answer) in enumerate(MATH_ROWS):
            row = {"problem": problem, "solution": solution, "unique_id": f"p{k}"}
            if answer is not None:
                row["answer"] = answer
            f.write(json.dumps(row) + "\n")
    problems = load_problems(path)
    assert [p.task_id for p in problems] == [f"p{k}" for k in range(len(MATH_ROWS))]
    golds = [p.answer for p in problems]
    assert golds[2] == "\\left( 3, \\frac{\\pi}{2} \\right)"  # from the solution's \boxed{}

    def accepted(i: int, j: int) -> bool:
        return check_answer(golds[j], golds[i]).correct

    for gold in golds:
        assert check_answer(gold, gold).correct
        assert check_answer(f"The answer is $\\boxed{{{gold}}}$.", gold).correct
    n = len(golds)
    with ThreadPoolExecutor(2) as pool:
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
        results = list(pool.map(lambda ij: accepted(*ij), pairs))
    wrongly = [
        (golds[i], golds[j]) for (i, j), ok in zip(pairs, results) if ok != ((i, j) in EQUAL_GOLDS)
    ]
    assert wrongly == []
