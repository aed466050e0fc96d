"""Math word problems: the `Problem` record, and seeded generation with the program that solves it.

Data sets (GSM8K, MATH, AIME, SVAMP, ...) are read by `mentorgym.envs.math_tools.datasets`.

A generated problem is a chain: a start quantity, then `steps` operations on it, each told
as one sentence of a story (shopping, a machine's output, a trip, sharing, a sale...). The
same chain is written as a Python program (`x = 12`, `x = x + 5`, ..., `print(x)`), which
is the oracle's tool call, and as worked steps (`12 + 5 = 17`) for privileged-context
distillation. Every intermediate value is a positive integer by construction.

Difficulty knobs: `steps` (operations after the start), `max_value` (largest number in the
text), `fractions` (operations like "gives away 1/4 of them"), `percentages` (like "spends
25% of it", and a sale/tax story). The defaults (2 steps, numbers up to 20, neither) keep
the prompts short and regular enough for a tiny model to learn with the python tool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mentorgym.errors import ConfigError


@dataclass(frozen=True)
class Problem:
    """One task: the question, its final answer, and what is known about solving it."""

    question: str
    answer: str
    """The final answer as text: a number, or LaTeX (`3\\sqrt{13}`, `(3, \\frac{\\pi}{2})`)."""
    task_id: str
    program: str | None = None
    """Python that prints the answer (generated problems; SVAMP's equation)."""
    solution: str | None = None
    """Worked steps (generated) or the dataset's rationale (GSM8K before `####`, MATH's solution)."""


# --- generation ---------------------------------------------------------------------------

# Each operation is (sentence template, kind). Kinds and their code:
#   add n       x = x + n            sub n       x = x - n
#   addmul n m  x = x + n * m        submul n m  x = x - n * m
#   mul n       x = x * n            pct p       x = x - x * p // 100
#   pctup p     x = x + x * p // 100 frac a b    x = x - x * a // b
#   div k       x = x // k (only as the last step, with the theme's `share` question)
# Templates use {name} {he} {his} {unit} {thing} {n} {m} {p} {a} {b} {k}.


@dataclass(frozen=True)
class _Theme:
    name: str
    start: str
    """Opening sentence; `{n}` is the start value, or `{n}` * `{m}` when `start_mul`."""
    question: str
    ops: tuple[tuple[str, str], ...]
    units: tuple[str, ...] = ("",)
    things: tuple[str, ...] = ("",)
    start_mul: bool = False
    share: str | None = None
    """A last sentence that divides the total equally and asks for one part."""
    needs_percentages: bool = False


_THEMES: tuple[_Theme, ...] = (
    _Theme(
        name="items",
        start="{name} has {n} {unit}.",
        question="How many {unit} does {name} have now?",
        ops=(
            ("{He} buys {n} more {unit}.", "add"),
            ("{He} finds {n} more {unit}.", "add"),
            ("{He} gives {n} {unit} to a friend.", "sub"),
            ("{He} loses {n} {unit}.", "sub"),
            ("{He} buys {n} bags with {m} {unit} in each.", "addmul"),
            ("{He} gives {n} friends {m} {unit} each.", "submul"),
            ("A week later {he} has {n} times as many {unit}.", "mul"),
            ("{He} gives away {p}% of {his} {unit}.", "pct"),
            ("{He} gives away {a}/{b} of {his} {unit}.", "frac"),
        ),
        units=("apples", "marbles", "stickers", "cards", "pencils", "cookies", "shells"),
        share="{He} shares the {unit} equally among {k} friends. How many {unit} does each "
        "friend get?",
    ),
    _Theme(
        name="shopping",
        start="{name} has ${n}.",
        question="How many dollars does {name} have now?",
        ops=(
            ("{He} earns ${n}.", "add"),
            ("{He} spends ${n} on a {thing}.", "sub"),
            ("{He} buys {n} {thing}s at ${m} each.", "submul"),
            ("{He} sells {n} {thing}s for ${m} each.", "addmul"),
            ("{He} spends {p}% of {his} money.", "pct"),
            ("{He} gives {a}/{b} of {his} money to {his} sister.", "frac"),
        ),
        things=("book", "pen", "toy", "cake", "ticket", "shirt"),
        share="{He} splits the money equally into {k} jars. How many dollars are in each jar?",
    ),
    _Theme(
        name="rates",
        start="A machine makes {n} {unit} per hour for {m} hours.",
        question="How many {unit} are there now?",
        ops=(
            ("Then it makes {n} more {unit}.", "add"),
            ("{n} of the {unit} are broken and thrown away.", "sub"),
            ("Then it makes {n} {unit} per hour for {m} more hours.", "addmul"),
            ("{n} boxes of {m} {unit} are shipped out.", "submul"),
            ("{p}% of the {unit} fail the check and are thrown away.", "pct"),
            ("{a}/{b} of the {unit} are sold.", "frac"),
        ),
        units=("toys", "cups", "bottles", "chairs", "bricks"),
        start_mul=True,
        share="The {unit} are packed equally into {k} boxes. How many {unit} are in each box?",
    ),
    _Theme(
        name="trip",
        start="{name} rides a bike at {n} km per hour for {m} hours.",
        question="How many km does {name} travel in total?",
        ops=(
            ("Then {he} rides {n} more km.", "add"),
            ("Then {he} rides at {n} km per hour for {m} more hours.", "addmul"),
            ("Then {he} walks {n} km.", "add"),
        ),
        start_mul=True,
    ),
    _Theme(
        name="sale",
        start="{name} wants a {thing} that costs ${n}.",
        question="How many dollars does {name} pay?",
        ops=(
            ("It is on sale for {p}% off.", "pct"),
            ("A tax of {p}% is added.", "pctup"),
            ("{name} uses a ${n} coupon.", "sub"),
            ("Shipping adds ${n}.", "add"),
            ("{name} also buys {n} pens at ${m} each.", "addmul"),
        ),
        things=("jacket", "lamp", "bike", "desk", "watch"),
        needs_percentages=True,
    ),
)

_NAMES: tuple[tuple[str, str, str], ...] = (
    ("Ana", "she", "her"), ("Ben", "he", "his"), ("Mia", "she", "her"), ("Sam", "he", "his"),
    ("Lea", "she", "her"), ("Tom", "he", "his"), ("Ava", "she", "her"), ("Leo", "he", "his"),
)  # fmt: skip

_PERCENTS = (10, 20, 25, 50, 75)
_FRACTIONS = ((1, 2), (1, 3), (2, 3), (1, 4), (3, 4), (1, 5))


@dataclass
class _Step:
    sentence: str
    code: str
    worked: str


def generate_problem(
    seed: int,
    *,
    steps: int = 2,
    max_value: int = 20,
    fractions: bool = False,
    percentages: bool = False,
) -> Problem:
    """The problem for `seed` at this difficulty; the same arguments give the same problem."""
    if steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}")
    if max_value < 4:
        raise ConfigError(
            f"max_value must be at least 4 so that every operation fits, got {max_value}"
        )
    rng = np.random.default_rng(seed)
    themes = [t for t in _THEMES if percentages or not t.needs_percentages]
    theme = themes[int(rng.integers(len(themes)))]
    name, he, his = _NAMES[int(rng.integers(len(_NAMES)))]
    words = {
        "name": name, "he": he, "He": he.capitalize(), "his": his, "His": his.capitalize(),
        "unit": theme.units[int(rng.integers(len(theme.units)))],
        "thing": theme.things[int(rng.integers(len(theme.things)))],
    }  # fmt: skip

    def draw(lo: int, hi: int) -> int:
        return int(rng.integers(lo, max(lo, hi) + 1))

    small = max(2, min(10, max_value // 2))
    if theme.start_mul:
        n, m = draw(2, max_value), draw(2, small)
        x = n * m
        sentences = [theme.start.format(n=n, m=m, **words)]
        code, worked = [f"x = {n} * {m}"], [f"{n} * {m} = {x}"]
    else:
        # Percent and fraction stories read better with round starting amounts.
        n = draw(max_value // 2, max_value) * (4 if (fractions or percentages) else 1)
        x = n
        sentences = [theme.start.format(n=n, **words)]
        code, worked = [f"x = {n}"], [f"Start: {n}"]
    cap = 4 * max_value * max_value
    share_last = theme.share is not None and rng.random() < 0.3
    for i in range(steps):
        if share_last and i == steps - 1:
            k = _divisor(x, small, rng)
            if k is not None:
                sentences.append(theme.share.format(k=k, **words))  # type: ignore[union-attr]
                code.append(f"x = x // {k}")
                worked.append(f"{x} / {k} = {x // k}")
                x //= k
                break
            share_last = False
        step, x = _operation(theme, x, words, rng, max_value, small, cap, fractions, percentages)
        sentences.append(step.sentence)
        code.append(step.code)
        worked.append(step.worked)
    if not share_last:
        sentences.append(theme.question.format(**words))
    program = "\n".join([*code, "print(x)"])
    solution = "\n".join(worked)
    task_id = (
        f"gen-s{steps}-v{max_value}{'-f' if fractions else ''}{'-p' if percentages else ''}-{seed}"
    )
    return Problem(" ".join(sentences), str(x), task_id, program, solution)


def _divisor(x: int, small: int, rng: np.random.Generator) -> int | None:
    options = [k for k in range(2, small + 1) if x % k == 0 and x // k > 1]
    return options[int(rng.integers(len(options)))] if options else None


def _operation(
    theme: _Theme,
    x: int,
    words: dict[str, str],
    rng: np.random.Generator,
    max_value: int,
    small: int,
    cap: int,
    fractions: bool,
    percentages: bool,
) -> tuple[_Step, int]:
    """One sentence, code line and worked line that change `x`, and the new `x` (> 0)."""

    def draw(lo: int, hi: int) -> int:
        return int(rng.integers(lo, max(lo, hi) + 1))

    candidates: list[tuple[_Step, int]] = []
    for template, kind in theme.ops:
        n, m = draw(2, max_value), draw(2, small)
        fill = dict(words, n=n, m=m)
        if kind == "add":
            new, code, worked = x + n, f"x = x + {n}", f"{x} + {n} = {x + n}"
        elif kind == "sub":
            n = draw(1, min(max_value, x - 1))
            fill["n"] = n
            new, code, worked = x - n, f"x = x - {n}", f"{x} - {n} = {x - n}"
        elif kind == "addmul":
            new, code = x + n * m, f"x = x + {n} * {m}"
            worked = f"{n} * {m} = {n * m}; {x} + {n * m} = {new}"
        elif kind == "submul":
            n = draw(1, min(max_value, (x - 1) // m))
            fill["n"] = n
            new, code = x - n * m, f"x = x - {n} * {m}"
            worked = f"{n} * {m} = {n * m}; {x} - {n * m} = {new}"
        elif kind == "mul":
            n = draw(2, min(small, 5))
            fill["n"] = n
            new, code, worked = x * n, f"x = x * {n}", f"{x} * {n} = {x * n}"
        elif kind in ("pct", "pctup"):
            if not percentages:
                continue
            p = int(rng.choice(_PERCENTS))
            if (x * p) % 100 or (kind == "pct" and p * x // 100 >= x):
                continue
            fill["p"] = p
            part = x * p // 100
            sign = "-" if kind == "pct" else "+"
            new = x - part if kind == "pct" else x + part
            code = f"x = x {sign} x * {p} // 100"
            worked = f"{p}% of {x} = {part}; {x} {sign} {part} = {new}"
        elif kind == "frac":
            if not fractions:
                continue
            a, b = _FRACTIONS[int(rng.integers(len(_FRACTIONS)))]
            if x % b or x * a // b >= x:
                continue
            fill.update(a=a, b=b)
            part = x * a // b
            new, code = x - part, f"x = x - x * {a} // {b}"
            worked = f"{a}/{b} of {x} = {part}; {x} - {part} = {new}"
        else:
            raise AssertionError(f"unknown operation kind {kind!r}")
        if 0 < new <= cap and (kind != "sub" or x > 1) and (kind != "submul" or x > m):
            candidates.append((_Step(template.format(**fill), code, worked), new))
    if not candidates:  # nothing else fits (x at the cap): a small addition always does
        n = draw(1, max_value)
        add = next(t for t, k in theme.ops if k == "add")
        step = _Step(add.format(**dict(words, n=n)), f"x = x + {n}", f"{x} + {n} = {x + n}")
        return step, x + n
    return candidates[int(rng.integers(len(candidates)))]
