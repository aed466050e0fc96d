"""A process that checks answers with math-verify, one JSON line in, one JSON line out.

`mentorgym.envs.math_tools.answers` starts it with `python verify_worker.py` (by path, so
nothing but the standard library and math-verify is imported) and kills it when a check
runs past its time limit. A separate process is what makes that limit hold in every
thread: math-verify's own limit is `signal.alarm`, which works only in the main thread,
and an exception sent into a thread is not seen while CPython multiplies huge integers
(`9^{9^{9}}`), while a killed process always stops.

Protocol: the worker writes `{"ready": true}` once math-verify is imported, then answers
each request line `{"gold": str, "given": str}` with `{"equal": bool}`, or
`{"equal": false, "error": str}` when the comparison raised. It exits at end of input.
The address space is capped (`MEMORY_LIMIT_BYTES`) so that an answer like `10^{10^{10}}`
fails with a MemoryError inside the worker instead of swapping the machine.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys

MEMORY_LIMIT_BYTES = 4 * 1024**3


def _parse(text: str) -> list:
    """The answer read as LaTeX (the whole text, as if boxed), else as a plain expression."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    read = parse(
        "$\\boxed{" + text + "}$",
        extraction_config=[LatexExtractionConfig(boxed_match_priority=0)],
        parsing_timeout=None,
    )
    if not read:
        read = parse(
            text,
            extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
            parsing_timeout=None,
        )
    return read


def equal(gold: str, given: str) -> bool:
    """Whether math-verify finds `given` equal to `gold` (no time limit: the caller has one)."""
    from math_verify import verify

    gold_read, given_read = _parse(gold), _parse(given)
    if not gold_read or not given_read:
        return False
    return bool(verify(gold_read, given_read, timeout_seconds=None, raise_on_error=True))


def main() -> None:
    # The protocol owns the real stdout; anything a library prints goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    except (ValueError, OSError):  # a lower hard limit is already set: keep it
        pass
    # The parent enforces the time limit; math-verify's warning that it has none is noise.
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    import math_verify  # noqa: F401 - import (seconds) before saying ready

    out.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply: dict[str, object] = {"equal": equal(request["gold"], request["given"])}
        except Exception as e:  # MemoryError, RecursionError, a sympy bug: "not equal"
            reply = {"equal": False, "error": f"{type(e).__name__}: {e}"[:500]}
        out.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
