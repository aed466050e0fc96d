"""Synthesize SWE tasks from any Python repository whose tests run under pytest.

Recipe (SWE-smith style): run the test suite once on the repository's HEAD to learn which
tests pass; collect functions with `ast`; mutate one at a time (flipped comparison, off-by-one
constant, dropped branch, swapped arguments, and/or swapped, wrong return); keep a mutation only
when some of those tests fail with it. The mutated tree is committed (parentless, fixed author
and dates, so its hash is the same wherever it is rebuilt) as the task's ``base_commit``; the
gold ``patch`` reverts the mutation; ``test_patch`` is empty because the repository's own tests
expose the bug. FAIL_TO_PASS and PASS_TO_PASS come from real runs of the full suite at the base.

Tests run in a Docker sandbox by default (the repository copied into an image with
`build_repo_image`). ``sandbox="local"`` runs them with a subprocess in a temporary copy; that is
for trusted code only and is no security boundary.

Base commits are written into the repository under ``refs/mentorgym/synth/<instance_id>``
(objects and refs only: the working tree, index and branches are not touched).
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mentorgym.errors import ConfigError

DEFAULT_TEST_CMD = "python3 -m pytest -rA -p no:cacheprovider"
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "mentorgym",
    "GIT_AUTHOR_EMAIL": "synth@mentorgym.invalid",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+0000",
    "GIT_COMMITTER_NAME": "mentorgym",
    "GIT_COMMITTER_EMAIL": "synth@mentorgym.invalid",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+0000",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}
_SUMMARY_RE = re.compile(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS|SKIPPED)\s+(\S.*?)(?: - (.*))?$")
_SKIP_DIRS = {"tests", "test", "testing", "docs", "doc", "examples", "build", "dist", "benchmarks"}


# ---------------------------------------------------------------------------------------------
# pytest output


def parse_pytest_report(output: str) -> dict[str, str]:
    """Node id -> status ("PASSED", "FAILED", "ERROR", ...) from pytest's ``-rA`` summary lines."""
    results: dict[str, str] = {}
    for line in output.splitlines():
        m = _SUMMARY_RE.match(line.rstrip())
        if m and "::" in m.group(2):
            results[m.group(2)] = m.group(1)
    return results


def failure_excerpts(output: str) -> dict[str, str]:
    """Test name -> the ``E   ...`` lines of its traceback (pytest's long failure report)."""
    excerpts: dict[str, str] = {}
    name: str | None = None
    for line in output.splitlines():
        header = re.match(r"^_{3,} (\S.*?) _{3,}$", line)
        if header:
            name = header.group(1)
            excerpts.setdefault(name, "")
        elif name is not None and line.startswith("E  "):
            excerpts[name] += line[1:].strip() + "\n"
    return {k: v for k, v in excerpts.items() if v}


def passed(results: dict[str, str], node: str) -> bool:
    return results.get(node) in ("PASSED", "XFAIL")


# ---------------------------------------------------------------------------------------------
# mutations


@dataclass(frozen=True)
class Mutation:
    """One text edit of one function: replace ``source[start:end]`` (offsets) with `text`."""

    file: str
    function: str
    kind: str
    line: int
    start: int
    end: int
    text: str

    def apply(self, source: str) -> str:
        return source[: self.start] + self.text + source[self.end :]


_CMP_FLIPS = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "=="}


def _offsets(source: str) -> list[int]:
    """Character offset of the start of each line (1-based line -> index line-1)."""
    out, pos = [], 0
    for line in source.splitlines(keepends=True):
        out.append(pos)
        pos += len(line)
    out.append(pos)
    return out


def _span(node: ast.AST, lines: list[str], starts: list[int]) -> tuple[int, int] | None:
    """Character offsets of a single-line node; None for multi-line nodes (kept out for clean diffs)."""
    if node.lineno != node.end_lineno or node.end_col_offset is None:  # type: ignore[attr-defined]
        return None
    line = lines[node.lineno - 1].encode()  # type: ignore[attr-defined]
    # ast columns are UTF-8 byte offsets.
    col = len(line[: node.col_offset].decode())  # type: ignore[attr-defined]
    end_col = len(line[: node.end_col_offset].decode())  # type: ignore[attr-defined]
    base = starts[node.lineno - 1]  # type: ignore[attr-defined]
    return base + col, base + end_col


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)


def mutations_of_function(
    file: str, func: ast.FunctionDef | ast.AsyncFunctionDef, source: str
) -> list[Mutation]:
    """Every candidate mutation inside `func` (nested functions are collected on their own)."""
    lines = source.splitlines(keepends=True)
    starts = _offsets(source)
    out: list[Mutation] = []

    def add(kind: str, node: ast.AST, start: int, end: int, text: str) -> None:
        out.append(Mutation(file, func.name, kind, node.lineno, start, end, text))  # type: ignore[attr-defined]

    def walk(node: ast.AST) -> Iterator[ast.AST]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                continue
            yield child
            yield from walk(child)

    for node in walk(func):
        for kind, start, end, text in _node_mutations(node, source, lines, starts):
            add(kind, node, start, end, text)
    return out


_Edit = tuple[str, int, int, str]  # (kind, start offset, end offset, replacement)


def _node_mutations(node: ast.AST, source: str, lines: list[str], starts: list[int]) -> list[_Edit]:
    """The candidate edits of one node, by its kind (see `mutations_of_function`)."""
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        return _flip_comparison(node, source, lines, starts)
    if isinstance(node, ast.BoolOp) and len(node.values) == 2:
        return _swap_bool(node, source, lines, starts)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        span = _span(node, lines, starts)
        if span and source[span[0] : span[1]].isdigit():
            return [("off_by_one", span[0], span[1], str(node.value + 1))]
        return []
    if isinstance(node, ast.Call) and len(node.args) >= 2:
        return _swap_arguments(node, source, lines, starts)
    if isinstance(node, ast.Return) and node.value is not None:
        return _wrong_return(node, source, lines, starts)
    if isinstance(node, ast.If) and node.end_lineno is not None:
        return _drop_branch(node, lines, starts)
    return []


def _flip_comparison(
    node: ast.Compare, source: str, lines: list[str], starts: list[int]
) -> list[_Edit]:
    span_l, span_r = _span(node.left, lines, starts), _span(node.comparators[0], lines, starts)
    if not (span_l and span_r and node.left.lineno == node.comparators[0].lineno):
        return []
    gap = source[span_l[1] : span_r[0]]
    op = gap.strip()
    if op not in _CMP_FLIPS:
        return []
    return [("flip_comparison", span_l[1], span_r[0], gap.replace(op, _CMP_FLIPS[op]))]


def _swap_bool(node: ast.BoolOp, source: str, lines: list[str], starts: list[int]) -> list[_Edit]:
    a, b = _span(node.values[0], lines, starts), _span(node.values[1], lines, starts)
    if not (a and b and node.values[0].lineno == node.values[1].lineno):
        return []
    gap = source[a[1] : b[0]]
    new = (
        re.sub(r"\band\b", "or", gap)
        if isinstance(node.op, ast.And)
        else re.sub(r"\bor\b", "and", gap)
    )
    return [("swap_bool_operator", a[1], b[0], new)] if new != gap else []


def _swap_arguments(
    node: ast.Call, source: str, lines: list[str], starts: list[int]
) -> list[_Edit]:
    a0, a1 = node.args[0], node.args[1]
    s0, s1 = _span(a0, lines, starts), _span(a1, lines, starts)
    if not (
        s0
        and s1
        and a0.lineno == a1.lineno
        and not isinstance(a0, ast.Starred)
        and not isinstance(a1, ast.Starred)
        and source[s0[0] : s0[1]] != source[s1[0] : s1[1]]
    ):
        return []
    swapped = source[s1[0] : s1[1]] + source[s0[1] : s1[0]] + source[s0[0] : s0[1]]
    return [("swap_arguments", s0[0], s1[1], swapped)]


def _wrong_return(
    node: ast.Return, source: str, lines: list[str], starts: list[int]
) -> list[_Edit]:
    assert node.value is not None
    span = _span(node.value, lines, starts)
    if span is None:
        return []
    expr = source[span[0] : span[1]]
    if isinstance(node.value, (ast.Compare, ast.BoolOp)) or (
        isinstance(node.value, ast.Constant) and isinstance(node.value.value, bool)
    ):
        return [("wrong_return", span[0], span[1], f"not ({expr})")]
    if not (isinstance(node.value, ast.Constant) and node.value.value is None):
        return [("wrong_return", span[0], span[1], "None")]
    return []


def _drop_branch(node: ast.If, lines: list[str], starts: list[int]) -> list[_Edit]:
    assert node.end_lineno is not None
    first = lines[node.lineno - 1]
    if not first.lstrip().startswith("if "):
        return []  # an `elif`: rewriting it would change the chain's meaning twice
    indent = first[: len(first) - len(first.lstrip())]
    start, end = starts[node.lineno - 1], starts[node.end_lineno]
    if node.orelse and not (
        isinstance(node.orelse[0], ast.If)
        and lines[node.orelse[0].lineno - 1].lstrip().startswith("elif")
    ):
        body = "".join(lines[node.orelse[0].lineno - 1 : node.orelse[-1].end_lineno])
        text = _reindent(body, indent)
        return [("drop_branch_take_else", start, end, text)] if text is not None else []
    if not node.orelse:
        return [("drop_branch", start, end, "")]
    return []


def _reindent(block: str, indent: str) -> str | None:
    """Move `block` (lines of one suite) to `indent`; None when its lines disagree on indent."""
    block_lines = block.splitlines(keepends=True)
    first = block_lines[0]
    old = first[: len(first) - len(first.lstrip())]
    out = []
    for line in block_lines:
        if line.strip() and not line.startswith(old):
            return None
        out.append(indent + line[len(old) :] if line.strip() else line)
    return "".join(out)


def is_test_path(rel: str) -> bool:
    parts = Path(rel).parts
    name = parts[-1]
    return (
        name.startswith("test_")
        or name.endswith("_test.py")
        or name in ("conftest.py", "setup.py", "noxfile.py", "tasks.py")
        or any(p in _SKIP_DIRS or p.startswith(".") for p in parts[:-1])
    )


def collect_mutations(files: dict[str, str]) -> list[Mutation]:
    """All candidate mutations over the given (rel path -> source) non-test files."""
    out: list[Mutation] = []
    for rel, source in sorted(files.items()):
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = [s for s in node.body if not _is_docstring(s)]
                if body:
                    for m in mutations_of_function(rel, node, source):
                        mutated = m.apply(source)
                        # A mutation that does not parse, or parses to the same program, is useless.
                        try:
                            if ast.dump(ast.parse(mutated)) != ast.dump(tree):
                                out.append(m)
                        except SyntaxError:
                            continue
    return out


def order_candidates(mutations: list[Mutation], seed: int) -> list[Mutation]:
    """Shuffle with `seed`, then interleave by function so that early picks are diverse."""
    rng = random.Random(seed)
    by_func: dict[tuple[str, str], list[Mutation]] = {}
    for m in mutations:
        by_func.setdefault((m.file, m.function), []).append(m)
    groups = list(by_func.values())
    for g in groups:
        rng.shuffle(g)
    rng.shuffle(groups)
    out: list[Mutation] = []
    for i in range(max((len(g) for g in groups), default=0)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def fix_patch(rel: str, mutated: str, original: str) -> str:
    """The unified git diff that turns `mutated` back into `original`."""
    diff = difflib.unified_diff(
        mutated.splitlines(keepends=True),
        original.splitlines(keepends=True),
        fromfile=f"a/{rel}",
        tofile=f"b/{rel}",
    )
    body = "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in diff
    )
    return f"diff --git a/{rel} b/{rel}\n{body}"


# ---------------------------------------------------------------------------------------------
# test runners


@dataclass
class RunResult:
    results: dict[str, str]
    output: str
    timed_out: bool


class Runner(Protocol):
    def run(self, overrides: dict[str, str], args: list[str], timeout: float) -> RunResult:
        """Run the test command with `args` on HEAD's tree plus `overrides` (rel path -> text)."""
        ...

    def close(self) -> None: ...


class LocalRunner:
    """Runs tests with a subprocess in a temporary copy of HEAD. Trusted code only."""

    def __init__(self, repo: Path, head: str, test_cmd: str) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="mentorgym-synth-"))
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", head], capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=_BytesReader(archive), mode="r|") as tar:
            tar.extractall(self.work, filter="data")
        cmd = shlex.split(test_cmd)
        if cmd and cmd[0] in ("python", "python3"):
            cmd[0] = sys.executable  # the machine's python3 may lack pytest; this one has it
        self.cmd = cmd

    def run(self, overrides: dict[str, str], args: list[str], timeout: float) -> RunResult:
        saved = {rel: (self.work / rel).read_bytes() for rel in overrides}
        try:
            for rel, text in overrides.items():
                (self.work / rel).write_text(text)
            env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
            try:
                proc = subprocess.run(
                    [*self.cmd, *args],
                    cwd=self.work,
                    env=env,
                    capture_output=True,
                    text=True,
                    errors="replace",
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired as e:
                out = e.stdout if isinstance(e.stdout, str) else ""
                return RunResult({}, out, True)
            output = proc.stdout + proc.stderr
            return RunResult(parse_pytest_report(output), output, False)
        finally:
            for rel, data in saved.items():
                (self.work / rel).write_bytes(data)

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else self.pos + size
        chunk = self.data[self.pos : end]
        self.pos += len(chunk)
        return chunk


class DockerRunner:
    """Runs tests in one container of the repository's image, reset to HEAD before each run."""

    def __init__(self, image: str, head: str, test_cmd: str) -> None:
        from mentorgym.sandboxes.docker import DockerSandbox

        self.image = image
        self.box = DockerSandbox(image, workdir="/testbed")
        self.head = head
        self.test_cmd = test_cmd

    def run(self, overrides: dict[str, str], args: list[str], timeout: float) -> RunResult:
        from mentorgym.errors import SandboxError
        from mentorgym.sandboxes.docker import DockerSandbox

        try:
            return self._run(overrides, args, timeout)
        except SandboxError:
            # The container died or was reaped from outside: start a fresh one and retry once.
            self.box.close()
            self.box = DockerSandbox(self.image, workdir="/testbed")
            return self._run(overrides, args, timeout)

    def _run(self, overrides: dict[str, str], args: list[str], timeout: float) -> RunResult:
        self.box.exec(f"cd /testbed && git checkout -qf {self.head} && git clean -fdxq", 60)
        for rel, text in overrides.items():
            self.box.write_file(f"/testbed/{rel}", text)
        cmd = f"cd /testbed && {self.test_cmd} {' '.join(shlex.quote(a) for a in args)}"
        res = self.box.exec(cmd, timeout)
        return RunResult(parse_pytest_report(res.output), res.output, res.timed_out)

    def close(self) -> None:
        self.box.close()


# ---------------------------------------------------------------------------------------------
# git


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args],
        env={**os.environ, **_GIT_ENV, **(env or {})},
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {proc.stderr.strip()}")
    return proc.stdout


def commit_mutated_tree(repo: Path, head: str, rel: str, text: str, ref: str) -> str:
    """A parentless commit of HEAD's tree with `rel` replaced by `text`, stored under `ref`.

    Uses a throwaway index, so the caller's working tree, index and branches are untouched.
    """
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(repo, "read-tree", head, env=env)
        blob = (
            subprocess.run(
                ["git", "-C", str(repo), "hash-object", "-w", "--stdin"],
                input=text.encode(),
                capture_output=True,
                check=True,
            )
            .stdout.decode()
            .strip()
        )
        mode = _git(repo, "ls-tree", head, "--", rel).split()[0]
        _git(repo, "update-index", "--cacheinfo", f"{mode},{blob},{rel}", env=env)
        tree = _git(repo, "write-tree", env=env).strip()
    commit = _git(repo, "commit-tree", tree, "-m", "snapshot").strip()
    _git(repo, "update-ref", ref, commit)
    return commit


# ---------------------------------------------------------------------------------------------
# problem statements


def problem_statement(
    test_files: list[str],
    failing: list[str],
    output: str,
    total: int,
    test_cmd: str = DEFAULT_TEST_CMD,
) -> str:
    """A user-style report built from the failing tests and their assertion messages."""
    excerpts = failure_excerpts(output)
    shown = failing[:5]
    lines = [
        f"{len(failing)} test{'s' if len(failing) != 1 else ''} fail on a clean checkout",
        "",
        f"I ran `{test_cmd} {' '.join(test_files)}` on a fresh checkout and expected the "
        f"whole suite to pass, but {len(failing)} of {total} tests fail:",
        "",
        *[f"- `{t}`" for t in shown],
    ]
    if len(failing) > len(shown):
        lines.append(f"- ... and {len(failing) - len(shown)} more")
    for t in failing:
        msg = excerpts.get(t.split("::")[-1]) or excerpts.get(".".join(t.split("::")[1:]))
        if msg:
            body = "\n".join(msg.splitlines()[:12])
            lines += ["", f"For example `{t}` says:", "", "```", body, "```"]
            break
    lines += [
        "",
        "These tests look right to me; the library's behaviour seems to have regressed. "
        "Please fix the library so that they pass again (without changing the tests).",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# the entry point


def synthesize(
    repo: Path,
    n: int,
    out: Path,
    seed: int = 0,
    *,
    image: str | None = None,
    sandbox: str = "docker",
    test_cmd: str = DEFAULT_TEST_CMD,
    timeout: float = 600.0,
    max_tries: int | None = None,
) -> list[dict]:
    """Make up to `n` validated SWE tasks from the Python repository at `repo`; write them to `out`.

    `repo` must be a git repository with a commit (HEAD is what is mutated; uncommitted changes are
    ignored). `image`: an image with this repository at /testbed (default: built with
    `build_repo_image`). `sandbox`: "docker" (default) or "local" (subprocess; trusted code only).
    `max_tries` caps the candidate mutations tried (default ``20 * n``). Returns the tasks, which
    are also written as JSONL to `out`; raises `ConfigError` when the repository cannot be used.
    """
    repo = Path(repo).resolve()
    head = _check_repo(repo, sandbox)
    tracked = _git(repo, "ls-files", "-z", "--", "*.py").split("\0")
    sources = {
        rel: _git(repo, "show", f"{head}:{rel}") for rel in tracked if rel and not is_test_path(rel)
    }
    test_files_all = sorted(rel for rel in tracked if rel and Path(rel).name.startswith("test_"))
    runner, image = _make_runner(repo, head, sandbox, image, test_cmd)
    tasks: list[dict] = []
    try:
        baseline = runner.run({}, [], timeout)
        passing = sorted(t for t, s in baseline.results.items() if passed(baseline.results, t))
        if not passing:
            raise ConfigError(
                f"no test passed on HEAD of {repo} with `{test_cmd}`; "
                f"the end of the output was:\n{baseline.output[-2000:]}"
            )
        test_texts = {rel: _git(repo, "show", f"{head}:{rel}") for rel in test_files_all}
        tries = 0
        used_functions: set[tuple[str, str]] = set()
        for m in order_candidates(collect_mutations(sources), seed):
            if len(tasks) >= n or tries >= (max_tries or 20 * n):
                break
            if (m.file, m.function) in used_functions:
                continue
            tries += 1
            task = _try_mutation(
                m, repo, head, sources, test_texts, set(passing), runner, test_cmd, timeout, image
            )
            if task is not None:
                tasks.append(task)
                used_functions.add((m.file, m.function))
    finally:
        runner.close()
    if sandbox == "docker" and tasks:
        _retag_image(repo, head, tasks)
    _write_jsonl(Path(out), tasks)
    return tasks


def _check_repo(repo: Path, sandbox: str) -> str:
    """HEAD of `repo`, or ConfigError saying what to do about the repository or `sandbox`."""
    if sandbox not in ("docker", "local"):
        raise ConfigError(f"sandbox must be 'docker' or 'local', not {sandbox!r}")
    if not (repo / ".git").exists():
        raise ConfigError(
            f"{repo} is not a git repository: run `git init && git add -A && git commit -m init` "
            "there first (synthesized tasks name commits of it)"
        )
    try:
        return _git(repo, "rev-parse", "HEAD").strip()
    except RuntimeError:
        raise ConfigError(f"{repo} has no commit yet: commit the sources first") from None


def _make_runner(
    repo: Path, head: str, sandbox: str, image: str | None, test_cmd: str
) -> tuple[Runner, str | None]:
    """The test runner for `sandbox`, and the image it uses (built when not given)."""
    if sandbox == "local":
        return LocalRunner(repo, head, test_cmd), image
    from mentorgym.sandboxes.docker import engine_available
    from mentorgym.sandboxes.image import build_repo_image

    reason = engine_available()
    if reason is not None:
        raise ConfigError(f"{reason}; or pass sandbox='local' (`--sandbox local`) for trusted code")
    image = image or build_repo_image(repo)
    return DockerRunner(image, head, test_cmd), image


def _retag_image(repo: Path, head: str, tasks: list[dict]) -> None:
    """Build the image that holds the tasks' base commits and name it in each task."""
    from mentorgym.sandboxes.image import build_repo_image

    # The repo now holds the base commits; the default tag hashes only HEAD and the working
    # tree, so name the image after the commits to get one that contains them.
    key = hashlib.sha256(" ".join([head, *(t["base_commit"] for t in tasks)]).encode())
    final = build_repo_image(
        repo, tag=f"mentorgym/testbed:{_slug(repo.name)}-synth-{key.hexdigest()[:16]}"
    )
    for t in tasks:
        t["image"] = final


def _write_jsonl(out: Path, tasks: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for t in tasks:
            f.write(json.dumps(t) + "\n")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9_.-]+", "-", name.lower())[:40] or "repo"


def _try_mutation(
    m: Mutation,
    repo: Path,
    head: str,
    sources: dict[str, str],
    test_texts: dict[str, str],
    passing: set[str],
    runner: Runner,
    test_cmd: str,
    timeout: float,
    image: str | None,
) -> dict | None:
    """Validate one mutation with real runs; the task dict when some passing tests break."""
    original = sources[m.file]
    mutated = m.apply(original)
    module = Path(m.file).stem
    # Only the test files that mention the function or its module, when there are such (speed).
    relevant = sorted(
        rel
        for rel, text in test_texts.items()
        if re.search(rf"\b({re.escape(m.function)}|{re.escape(module)})\b", text)
        and any(t.startswith(rel + "::") for t in passing)
    )
    quick = runner.run({m.file: mutated}, relevant, timeout)
    if quick.timed_out or not any(
        t in passing and not passed(quick.results, t) for t in _nodes_in(passing, relevant)
    ):
        return None
    # The full suite at the mutated state gives FAIL_TO_PASS and PASS_TO_PASS from real runs.
    full = runner.run({m.file: mutated}, [], timeout) if relevant else quick
    if full.timed_out:
        return None
    f2p = sorted(t for t in passing if not passed(full.results, t))
    p2p = sorted(t for t in passing if passed(full.results, t))
    if not f2p:
        return None
    key = hashlib.sha256(f"{head}\0{m.file}\0{m.start}\0{m.end}\0{m.text}".encode()).hexdigest()[
        :10
    ]
    instance_id = f"{_slug(repo.name)}__synth-{key}"
    base = commit_mutated_tree(repo, head, m.file, mutated, f"refs/mentorgym/synth/{instance_id}")
    f2p_files = sorted({t.split("::")[0] for t in f2p})
    task: dict = {
        "instance_id": instance_id,
        "repo": repo.name,
        "base_commit": base,
        "patch": fix_patch(m.file, mutated, original),
        "test_patch": "",
        "FAIL_TO_PASS": f2p,
        "PASS_TO_PASS": p2p,
        "problem_statement": problem_statement(f2p_files, f2p, full.output, len(passing), test_cmd),
        "version": "",
        "created_at": _git(repo, "show", "-s", "--format=%cI", head).strip(),
        "hints_text": "",
        "environment_setup_commit": head,
        "repo_dir": str(repo),
        "synth_mutation": {"file": m.file, "function": m.function, "kind": m.kind, "line": m.line},
    }
    if image:
        task["image"] = image
    if test_cmd != DEFAULT_TEST_CMD:
        task["test_cmd"] = test_cmd
    return task


def _nodes_in(nodes: set[str], files: list[str]) -> list[str]:
    if not files:
        return sorted(nodes)
    return sorted(t for t in nodes if t.split("::")[0] in files)
