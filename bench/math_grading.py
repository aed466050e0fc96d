"""Time per answer check and how often the time limit is hit, against two baselines.

    python bench/math_grading.py [--timeout 5] [--data tests/data]

Cases, built from the gold answers of the sample files in `--data` (GSM8K, MATH, AIME,
SVAMP; `load_problems` reads each) and the issue's pairs:
  (a) each gold as a model writes it, "The answer is $\\boxed{GOLD}$.", against itself;
  (b) every other gold of the same file against it (all ordered pairs; distinct problems,
      so the label is "not equal" unless the two golds are the same text);
  (c) the issue's equivalent pairs (label equal) and near-misses (label not equal).
Three graders check every case, in this order, in one process:
  1. `check_answer` (what the env uses: plain numbers, text, else math-verify in a worker
     process with a time limit that holds in any thread);
  2. math-verify alone in this main thread (`parse` + `verify` with its own signal time
     limit: TRL's and open-r1's way), the baseline for the cost of the worker;
  3. the last-number rule the env used before (`extract_number` on both sides).
Prints per grader: median and p99 time per check, timeouts, wrong verdicts; and the
ratio of medians against math-verify in-process. A worker's start (importing sympy) is
timed apart, once, before the cases. Last, two answers that would make sympy compute
for minutes are checked from a thread with a 1 s limit, to show the limit holds there.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from math_verify import LatexExtractionConfig, parse, verify
from math_verify.errors import TimeoutException
from math_verify.utils import timeout as signal_timeout

from mentorgym.envs.math_tools import check_answer, extract_number, load_problems

EQUIVALENT = [
    ("3\\sqrt{13}", "\\sqrt{117}"),
    ("\\dfrac{14}{3}", "14/3"),
    ("\\dfrac{14}{3}", "4\\frac{2}{3}"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\frac{\\pi}{2})"),
    ("90^\\circ", "90"),
    ("[2, 5)", "[2,5)"),
    ("x^2+2x+1", "(x+1)^2"),
]
NEAR_MISSES = [
    ("6+5i", "6-5i"),
    ("(4, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("1+1", "1"),
    ("p-q", "q-p"),
    ("[2,5]", "[2,5)"),
]

PATHOLOGICAL = ["9^{9^{9}}", "10^{10^{10}}"]
"""Integers of hundreds of millions of digits (the next check pays a worker's restart)."""

Case = tuple[str, str, bool]  # (given, gold, label: equal)
Grade = Callable[[str, str], bool | None]  # None: the time limit was hit


def cases_from(data: Path) -> list[Case]:
    cases: list[Case] = []
    for path in sorted(data.glob("*_sample.json*")):
        golds = [p.answer for p in load_problems(path)]
        cases += [(f"The answer is $\\boxed{{{g}}}$.", g, True) for g in golds]
        cases += [
            (other, g, other == g)
            for i, g in enumerate(golds)
            for j, other in enumerate(golds)
            if i != j
        ]
    cases += [(b, a, True) for a, b in EQUIVALENT] + [(a, b, False) for a, b in NEAR_MISSES]
    return cases


def grader_env(timeout: float, methods: list[str] | None = None) -> Grade:
    """`check_answer`; appends each verdict's method to `methods` when given."""

    def grade(given: str, gold: str) -> bool | None:
        verdict = check_answer(given, gold, timeout=timeout)
        if methods is not None:
            methods.append(verdict.method)
        return None if verdict.method == "timeout" else verdict.correct

    return grade


def grader_math_verify(timeout: float) -> Grade:
    seconds = max(1, math.ceil(timeout))  # signal.alarm takes whole seconds

    def read(text: str) -> list:
        return parse(
            text if "\\boxed" in text else f"$\\boxed{{{text}}}$",
            extraction_config=[LatexExtractionConfig(boxed_match_priority=0)],
            parsing_timeout=None,
        )

    @signal_timeout(seconds)
    def both(given: str, gold: str) -> bool:
        return bool(verify(read(gold), read(given), timeout_seconds=None, raise_on_error=True))

    def grade(given: str, gold: str) -> bool | None:
        try:
            return both(given, gold)
        except TimeoutException:
            return None
        except Exception:
            return False

    return grade


def grader_last_number(given: str, gold: str) -> bool:
    g, w = extract_number(given), extract_number(gold)
    if g is None or w is None:
        return " ".join(given.lower().split()) == " ".join(gold.lower().split())
    return math.isclose(g, w, rel_tol=1e-6, abs_tol=1e-9)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def run(name: str, grade: Grade, cases: list[Case]) -> float:
    times, timeouts, wrong = [], 0, []
    for given, gold, label in cases:
        t = time.perf_counter()
        verdict = grade(given, gold)
        times.append((time.perf_counter() - t) * 1000)
        if verdict is None:
            timeouts += 1
        elif verdict != label:
            wrong.append((given, gold))
    p50 = statistics.median(times)
    print(
        f"  {name:<40} p50 {p50:8.3f} ms   p99 {pct(times, 0.99):8.2f} ms   "
        f"timeouts {timeouts}/{len(cases)} ({100 * timeouts / len(cases):.1f}%)   "
        f"wrong {len(wrong)}"
    )
    for given, gold in wrong[:4]:
        print(f"      wrong: {given!r} vs gold {gold!r}")
    return p50


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per check")
    ap.add_argument("--data", type=Path, default=Path(__file__).parents[1] / "tests" / "data")
    args = ap.parse_args()
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled": we set one
    cases = cases_from(args.data)
    print(
        f"{len(cases)} checks from {args.data} and the issue's pairs, time limit {args.timeout:g} s"
    )
    t = time.perf_counter()
    check_answer("\\sqrt{4}", "2")  # starts one worker
    print(f"  worker start (once per worker): {time.perf_counter() - t:.2f} s")
    grader_math_verify(args.timeout)("\\sqrt{4}", "2")  # the same imports and caches warmed here
    methods: list[str] = []
    env = run("check_answer (env; worker process)", grader_env(args.timeout, methods), cases)
    mv = run("math-verify in the main thread", grader_math_verify(args.timeout), cases)
    last = run("last number (the old rule)", grader_last_number, cases)
    print(
        f"  median vs math-verify in-process: check_answer {env / mv:.2f}x, last {last / mv:.3f}x"
    )
    decided = ", ".join(f"{m} {methods.count(m)}" for m in sorted(set(methods)))
    print(f"  check_answer decided by: {decided}")
    hard = [c for c, m in zip(cases, methods) if m in ("symbolic", "timeout", "error")]
    print(f"only the {len(hard)} checks that check_answer sends to math-verify:")
    env_hard = run("check_answer (worker process)", grader_env(args.timeout), hard)
    mv_hard = run("math-verify in the main thread", grader_math_verify(args.timeout), hard)
    print(f"  median, worker vs in-process: {env_hard / mv_hard:.2f}x")
    print("answers that make sympy compute for minutes, limit 1 s, checked from a thread:")
    for given in PATHOLOGICAL:
        t = time.perf_counter()
        with ThreadPoolExecutor(1) as pool:
            verdict = pool.submit(check_answer, given, "1", timeout=1).result()
        print(f"  {given:<14} {verdict.method:<8} after {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
