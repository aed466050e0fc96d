"""`mentorgym/SWE-v0`: resolve a SWE-bench-style issue in a real repository inside Docker.

Each episode takes one container from a warm pool, with the task's repository at
/testbed checked out at `base_commit`. The agent calls `bash`, `str_replace_editor`
and `submit` (Qwen/Hermes tool calls; `<answer>` also submits). One turn may carry
several calls; they run in order, and calls after `submit` are not run.

Grading (on submit): the files of /testbed that differ by content from the pristine
checkout (listed before the agent's first action) are split by an allowlist
(`allowlist.py`: modifications of existing package files and new modules in existing
package folders; everything else is left out and listed in `info["excluded"]`), and the
kept files are checked for capabilities a fix has no business with (`capabilities.py`).
In a *fresh* container from the same image the kept files' bytes are written over the
starting commit, then the test patch is applied and FAIL_TO_PASS and PASS_TO_PASS run (the
task's SWE-bench `eval_script` when it has one, else `test_cmd` on the tests' files) under
a supervisor that reads each outcome from the guard plugin as it happens (`supervisor.py`,
`guard_plugin.py`, `guard.py`). Reward is 1.0 exactly when all pass by swebench 5.x's rules
(`grading.py`), the record shows each of them run and pass, and no capability was added
(`info["tampering"]` says why otherwise). Grading in a fresh container means nothing the
agent did outside the graded files (installed packages, killed processes) can change the
verdict; the agent's own container has a read-only root besides /testbed and /tmp.

Truncation: the turn limit is Gymnasium's `TimeLimit`, which the env cannot see
coming, so an episode cut by it is *not graded*: its last step's info still holds
`model_patch` (recorded after every step), which `preds.export_predictions` turns into
a SWE-bench prediction, and a rollout loop that wants the reward can call
`env.unwrapped.grade()` before `close()`. A container that dies mid-episode ends the
episode truncated with the reason in `info["error"]`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shlex
import tarfile
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mentorgym.envs.base import (
    TOOL_CALL_FORMAT,
    Message,
    StepResult,
    TextEnv,
    Tool,
    format_tool_call,
    parse_action,
    run_tool_calls,
    system,
    tool,
    tools_prompt,
    user,
)
from mentorgym.envs.swe.allowlist import Entry
from mentorgym.envs.swe.capabilities import RUNTIME_EVENTS
from mentorgym.envs.swe.grading import GradeResult, grade_log
from mentorgym.envs.swe.guard import (
    GUARD_DIR,
    GUARD_MODULE,
    RECORD,
    env_exports,
    judge_record,
    supervisor_source,
    unseen_or_failed,
)
from mentorgym.envs.swe.guard import plugin_source as guard_plugin_source
from mentorgym.envs.swe.review import TreeReview, pristine, review_tree
from mentorgym.envs.swe.tasks import ensure_image, load_tasks
from mentorgym.envs.swe.tools import DEFAULT_TOOL_OUTPUT_LIMIT, BashTool, EditorTool, submit_tool
from mentorgym.errors import ConfigError, SandboxError
from mentorgym.sandboxes.base import Sandbox
from mentorgym.sandboxes.docker import DockerSandbox
from mentorgym.sandboxes.pool import get_pool

TESTBED = "/testbed"


class _GradeCache:
    """Grades by (instance_id, image, hash of test command + graded patch), shared by the
    process's envs; bounded, oldest first out. Single flight: while one env grades a key,
    others asking for it wait for that grade instead of running the same tests at once
    (an RL batch submits the same patch for a task many times at the same moment)."""

    def __init__(self, size: int = 4096):
        self.size = size
        self._grades: dict[tuple[str, str, str], GradeResult] = {}
        self._inflight: dict[tuple[str, str, str], threading.Event] = {}
        self._lock = threading.Lock()

    def get_or_grade(
        self, key: tuple[str, str, str], grade: Callable[[], GradeResult]
    ) -> GradeResult:
        """The cached grade (marked `cached`), else `grade()`, kept unless it timed out."""
        with self._lock:
            if key in self._grades:
                hit = self._grades[key]
                return dataclasses.replace(hit, tampering=list(hit.tampering), cached=True)
            waiting = self._inflight.get(key)
            if waiting is None:
                self._inflight[key] = threading.Event()
        if waiting is not None:
            waiting.wait()
            return self.get_or_grade(key, grade)  # the grade, or our turn if the first one failed
        try:
            result = grade()
            if result.error is None or "Timed Out" not in result.error:
                with self._lock:
                    self._grades[key] = dataclasses.replace(result)
                    while len(self._grades) > self.size:
                        self._grades.pop(next(iter(self._grades)))
            return result
        finally:
            with self._lock:
                self._inflight.pop(key).set()

    def clear(self) -> None:
        with self._lock:
            self._grades.clear()


_GRADES = _GradeCache()
DEFAULT_TEST_CMD = "python3 -m pytest -rA -p no:cacheprovider"
_DIFF_FILE_RE = re.compile(r"^diff --git a/(\S+) b/(\S+)$", re.MULTILINE)
_EXPERT_EOF = "MENTORGYM_GOLD_PATCH_EOF"

SYSTEM_PROMPT = """\
You are a software engineer working in a Linux container. A Python repository is \
checked out at /testbed (a git repository). Resolve the issue the user describes by \
editing the repository's non-test files, so that its tests pass. Explore the code, \
reproduce the problem, make a minimal fix and check it. Do not edit the existing tests.
Call one or more tools per turn. When you are done, call the `submit` tool (writing \
an <answer> also submits); your changes (`git diff` of /testbed) are then graded by \
running the repository's tests.
"""


def patch_files(patch: str) -> list[str]:
    """The paths a unified git diff touches (both sides of renames)."""
    out: list[str] = []
    for a, b in _DIFF_FILE_RE.findall(patch or ""):
        for p in (a, b):
            if p not in out:
                out.append(p)
    return out


def graded_test_files(task: dict[str, Any]) -> list[str]:
    """Test files to run: the file part of each FAIL_TO_PASS / PASS_TO_PASS pytest node id."""
    files: list[str] = []
    for node in [*task["FAIL_TO_PASS"], *task["PASS_TO_PASS"]]:
        f = node.split("::", 1)[0]
        if f and f not in files:
            files.append(f)
    return files


class SWEEnv(TextEnv):
    """Resolve a SWE-bench-style issue in a repository inside Docker (bash, editor, submit).

    Args:
        tasks: "builtin" (the shipped task set), a JSONL path of SWE-bench instances, a
            Hugging Face dataset name, or a list of task dicts.
        split: the dataset split for a hub dataset.
        pool_size: warm containers kept per image.
        command_timeout: seconds a `bash` call may run.
        test_timeout: seconds the grading test run may take.
        output_limit: characters of one tool result shown to the agent.
        mem_limit, cpus: container limits.
        grade_cache: reuse the grade of a patch already graded for the same task and image
            in this process instead of running its tests again (see `grade`).
    """

    def __init__(
        self,
        tasks: str | list[dict[str, Any]] = "builtin",
        split: str | None = None,
        pool_size: int = 2,
        command_timeout: float = 60.0,
        test_timeout: float = 300.0,
        output_limit: int = DEFAULT_TOOL_OUTPUT_LIMIT,
        mem_limit: str = "2g",
        cpus: float = 1.0,
        grade_cache: bool = True,
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode)
        from mentorgym.envs.swe.tasks import normalize_task

        self.tasks = (
            load_tasks(tasks, split)
            if isinstance(tasks, str)
            else [normalize_task(t) for t in tasks]
        )
        if not self.tasks:
            raise ConfigError("SWEEnv needs at least one task")
        self.num_tasks = len(self.tasks)
        self._index = {t["instance_id"]: i for i, t in enumerate(self.tasks)}
        self.pool_size = pool_size
        self.command_timeout = command_timeout
        self.test_timeout = test_timeout
        self.output_limit = output_limit
        self.container_kwargs: dict[str, Any] = {"mem_limit": mem_limit, "cpus": cpus}
        self.grade_cache = grade_cache
        self.task: dict[str, Any] | None = None
        self.sandbox: Sandbox | None = None
        self._tools: list[Tool] = []
        self._result: GradeResult | None = None
        self._patch: str | None = None
        self._done = False
        self._base = ""
        self._pristine: dict[str, Entry] | None = None

    # --- containers ------------------------------------------------------------------------

    def _acquire(self, image: str, agent: bool = True) -> DockerSandbox:
        """A warm container of `image`. The agent's has a read-only root: it writes only in
        /testbed and the scratch /tmp (volumes). The grading container's root stays
        writable, as the harness runs tests (some write under $HOME)."""
        kwargs: dict[str, Any] = dict(self.container_kwargs)
        if agent:
            kwargs.update(read_only=True, volumes=[TESTBED, "/tmp"])
        return get_pool(image, self.pool_size, workdir=TESTBED, **kwargs).acquire()

    @staticmethod
    def _start_command(task: dict[str, Any], bug_patch_path: str) -> str:
        """Shell that puts /testbed at the task's starting state (see `_checkout`)."""
        if task.get("base_commit"):
            base = shlex.quote(task["base_commit"])
            return (
                f"cd {TESTBED} && git -c safe.directory='*' checkout -qf {base} && git clean -fdxq"
            )
        branch = shlex.quote(f"refs/heads/{task['bug_branch']}")
        return (
            f"cd {TESTBED} && git -c safe.directory='*' checkout -qf HEAD && git clean -fdxq && "
            f"( if git rev-parse -q --verify {branch} >/dev/null; then git checkout -qf {branch}; "
            f"else git apply {bug_patch_path}; fi ) && git add -A && "
            "tree=$(git write-tree) && base=$(GIT_AUTHOR_NAME=mentorgym GIT_AUTHOR_EMAIL=m@g "
            "GIT_COMMITTER_NAME=mentorgym GIT_COMMITTER_EMAIL=m@g GIT_AUTHOR_DATE=2000-01-01T00:00:00Z "
            "GIT_COMMITTER_DATE=2000-01-01T00:00:00Z git commit-tree $tree -m task) && "
            "git checkout -qf $base"
        )

    def _checkout(self, sb: Sandbox, task: dict[str, Any]) -> str:
        """Put /testbed at the task's starting state and return that commit.

        SWE-bench / SWE-Gym: `base_commit`. SWE-smith: the bug branch when the image has
        it, else the image's HEAD with `bug_patch` applied; either way committed again as
        a parentless commit with fixed dates, so the fix is in no history the agent can
        read and every container of the task gets the same hash.
        """
        if not task.get("base_commit"):
            sb.write_file("/tmp/.mentorgym_bug.patch", task.get("bug_patch", ""))
        r = sb.exec(
            self._start_command(task, "/tmp/.mentorgym_bug.patch")
            # One image serves every task of a repository: drop the other refs and reflogs so
            # `git log --all` or `git diff main` cannot show the agent the fixed code.
            + " && git for-each-ref --format='%(refname)' | xargs -r -n1 git update-ref -d"
            " && rm -rf .git/logs && git rev-parse HEAD",
            timeout=120,
        )
        if r.exit_code != 0:
            raise ConfigError(self._checkout_error(task, r.output))
        return r.output.strip().splitlines()[-1]

    @staticmethod
    def _checkout_error(task: dict[str, Any], output: str) -> str:
        what = (
            f"base_commit {task['base_commit']}"
            if task.get("base_commit")
            else f"the SWE-smith bug (branch {task.get('bug_branch')} or bug_patch)"
        )
        return (
            f"could not check out {what} of task {task['instance_id']} in {TESTBED}: "
            f"{output.strip()[-500:]}. The task's image must hold that commit."
        )

    def _release(self) -> None:
        if self.sandbox is not None:
            sb, self.sandbox = self.sandbox, None
            # Removal happens in the background (~250 ms of engine time off each reset);
            # exit and the next reap() collect any that a hard kill interrupted.
            sb.close(wait=False)

    # --- Gymnasium API -------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[list[Message], dict[str, Any]]:
        """Start an episode on `options["task"]` (an instance_id), `options["index"]`, or a seeded random task."""
        super().reset(seed=seed)
        self._release()
        options = options or {}
        if "task" in options:
            if options["task"] not in self._index:
                raise ConfigError(
                    f"unknown SWE task {options['task']!r}; known: {sorted(self._index)[:10]} ..."
                )
            k = self._index[options["task"]]
        elif "index" in options:
            k = int(options["index"])
            if not 0 <= k < self.num_tasks:
                raise ConfigError(f"task index {k} is outside 0..{self.num_tasks - 1}")
        else:
            k = int(self.np_random.integers(self.num_tasks))
        task = self.tasks[k]
        image = ensure_image(task)
        sb = self._acquire(image)
        try:
            self._base = self._checkout(sb, task)
            # listed before the agent's first action: the content every change is judged against
            self._pristine = pristine(sb, TESTBED, (image, self._base))
        except BaseException:
            sb.close()
            raise
        self.task, self.sandbox = task, sb
        self._result, self._patch, self._done = None, None, False
        self._tools = [
            BashTool(sb, self.command_timeout, self.output_limit).tool(),
            EditorTool(sb, TESTBED, self.output_limit).tool(),
            submit_tool(),
        ]
        messages = [
            system(SYSTEM_PROMPT + "\n" + tools_prompt(self._tools)),
            user(
                f"<issue>\n{task['problem_statement'].strip()}\n</issue>\n\nThe repository is at {TESTBED}."
            ),
        ]
        return messages, self._info()

    def _info(self, **extra: Any) -> dict[str, Any]:
        assert self.task is not None
        return {"task_id": self.task["instance_id"], **extra}

    def step(self, action: str) -> StepResult:
        if self.task is None:
            raise self.step_before_reset()
        if self._done:
            return (
                [tool("The episode is over; call reset() to start another.")],
                0.0,
                True,
                False,
                self._info(success=False),
            )
        parsed = parse_action(action)
        if parsed.error is not None:
            msgs, reward, term, trunc, info = self.format_error(parsed.error, TOOL_CALL_FORMAT)
            return msgs, reward, term, trunc, self._info(**info)
        calls = parsed.tool_calls
        submit_at = next((i for i, c in enumerate(calls) if c.name == "submit"), None)
        submitted = submit_at is not None or parsed.answer is not None
        if not calls and not submitted:
            msgs, reward, term, trunc, info = self.format_error(
                "the turn has no tool call; call a tool (bash, str_replace_editor) or submit",
                TOOL_CALL_FORMAT,
            )
            return msgs, reward, term, trunc, self._info(**info)
        to_run = calls if submit_at is None else calls[:submit_at]
        try:
            messages, bad = run_tool_calls(to_run, self._tools)
            info = self._info(format_error=bad)
            if not submitted:
                info["model_patch"] = self.model_patch()
                return messages, 0.0, False, False, info
            skipped = len(calls) - len(to_run) - 1 if submit_at is not None else 0
            note = f" ({skipped} tool call(s) after submit were not run)" if skipped > 0 else ""
            result = self.grade()
        except SandboxError as e:
            self._done = True
            self._release()
            reason = f"the sandbox died: {e}"
            return (
                [tool(f"Error: {reason}. The episode ends.")],
                0.0,
                False,
                True,
                self._info(error=reason, success=False),
            )
        self._done = True
        self._release()
        verdict = "resolved" if result.resolved else "not resolved"
        messages.append(tool(f"Submitted{note}. Graded: {verdict}."))
        info.update(
            success=result.resolved,
            resolved=result.resolved,
            tests=result.tests,
            model_patch=self._patch or "",
        )
        info.update(result.integrity_info())
        return messages, float(result.resolved), True, False, info

    def on_truncation(self) -> tuple[float, dict[str, Any]]:
        """The turn limit ended the episode before a submit: grade the tree as it stands."""
        if self._done or self.task is None:
            return 0.0, {}
        try:
            result = self.grade()
        except SandboxError as e:
            return 0.0, self._info(error=f"the sandbox died while grading: {e}", success=False)
        finally:
            self._done = True
            self._release()
        info = self._info(
            success=result.resolved,
            resolved=result.resolved,
            tests=result.tests,
            model_patch=self._patch or "",
            graded_at="turn_limit",
        )
        info.update(result.integrity_info())
        return float(result.resolved), info

    def close(self) -> None:
        self._release()

    # --- the patch and the grade -----------------------------------------------------------------

    def model_patch(self) -> str:
        """The graded patch of /testbed now (a git diff of the files the allowlist keeps).

        See `allowlist.py` for the rule; `review_tree()` also says what was left out and
        what the static check found.
        """
        return self.review_tree().patch

    def review_tree(self) -> TreeReview:
        """The change of /testbed against the pristine checkout, by content (`review.py`).

        A tree that cannot be listed or read (the agent removed git, filled the disk, ...)
        has no graded change; the reason is in `excluded`.
        """
        if self.sandbox is None or self.task is None or self._pristine is None:
            raise RuntimeError("no episode is running; call reset() first")
        try:
            return review_tree(
                self.sandbox,
                TESTBED,
                self._pristine,
                set(patch_files(self.task.get("test_patch", ""))),
                repo=self.task.get("repo", ""),
            )
        except (ValueError, FileNotFoundError, tarfile.TarError) as e:
            return TreeReview(excluded={TESTBED: f"the tree could not be read: {e}"})

    def eval_script(self, task: dict[str, Any]) -> str:
        """The shell script that applies the test patch and runs the graded tests, with SWE-bench's markers."""
        if task.get("eval_script"):
            from swebench.harness.utils import parse_eval_script, record_test_exit_code

            return "\n".join(
                [
                    "#!/bin/bash",
                    "set -uxo pipefail",
                    *record_test_exit_code(parse_eval_script(task["eval_script"])),
                ]
            )
        cmd = task.get("test_cmd") or DEFAULT_TEST_CMD
        files = " ".join(shlex.quote(f) for f in graded_test_files(task))
        lines = [f"cd {TESTBED}"]
        if task.get("test_patch", "").strip():
            lines.append(
                f"git -c safe.directory='*' apply -v {GUARD_DIR}/test.patch "
                "|| { echo '>>>>> Patch Apply Failed'; exit 1; }"
            )
        lines += [
            "echo '>>>>> Start Test Output'",
            f"{cmd} {files}",
            "rc=$?",
            "echo '>>>>> End Test Output'",
            'echo ">>>>> Test Exit Code: $rc"',
        ]
        return "\n".join(lines) + "\n"

    def grade(self) -> GradeResult:
        """Grade the repository as it stands: the files the allowlist keeps, written over a
        fresh checkout of `base_commit` in a fresh container, the tests run under the
        supervisor and the guard plugin, graded by swebench's rules and by the record.

        Left-out files are listed in `result.excluded`; a capability the graded files add
        (static check, or the audit hook at run time) or a record that contradicts the log
        makes the grade 0 (`result.tampering`). Cached for the episode;
        `info["model_patch"]` of the submit step is the patch graded. With `grade_cache`, a
        graded change identical to one already graded for the same task, image and test
        command in this process reuses that grade: the verdict is a function of exactly
        those (a fresh container each time), so only a flaky test could tell the
        difference, and it is frozen at its first outcome. Raises `SandboxError` when a
        container dies.
        """
        if self._result is not None:
            return self._result
        if self.task is None or self.sandbox is None:
            raise RuntimeError("no episode is running; call reset() first")
        task = self.task
        review = self.review_tree()
        self._patch = review.patch
        key = (
            task["instance_id"],
            ensure_image(task),
            hashlib.sha256(f"{self._test_command(task)}\0{review.patch}".encode()).hexdigest(),
        )
        if review.findings:
            # No test run: the graded files add a capability a fix has no business with.
            result = GradeResult(resolved=False, error="the static check rejected the patch")
            result.tampering = [f"static check: {f}" for f in review.findings]
        elif self.grade_cache:
            result = _GRADES.get_or_grade(key, lambda: self._grade_review(task, review))
        else:
            result = self._grade_review(task, review)
        result.excluded = review.excluded
        if result.tampering:
            result.resolved = False
        self._result = result
        return result

    def _grade_review(self, task: dict[str, Any], review: TreeReview) -> GradeResult:
        """Run the tests on the reviewed files under the supervisor and grade log and record."""
        log, record = self._run_tests(task, review)
        # The env's reward uses the strictest rules (5.x's: a skipped or missing
        # FAIL_TO_PASS test fails) whatever project the task is from; SWE-smith's
        # "missing counts as passed" would pay a patch that stops tests from running.
        result = grade_log(task, log, harness="mentorgym")
        graded = [*task["FAIL_TO_PASS"], *task["PASS_TO_PASS"]]
        pytest_expected = "pytest" in self._test_command(task)
        verdict = judge_record(record, graded, pytest_expected and result.error is None)
        result.tampering = verdict.tampering + [f"run time: {f}" for f in verdict.findings]
        if verdict.timed_out and result.error is None:
            result.error = "the tests timed out"
            result.resolved = False
        unseen = unseen_or_failed(verdict, graded) if pytest_expected else []
        if result.resolved and unseen:
            # the log says resolved, the record (written as tests ran) says otherwise
            shown = "; ".join(unseen[:5]) + (
                f" (+{len(unseen) - 5} more)" if len(unseen) > 5 else ""
            )
            result.tampering.append(
                f"the log reports passes the test record does not show: {shown}"
            )
        return result

    def _test_command(self, task: dict[str, Any]) -> str:
        return str(task.get("eval_script") or task.get("test_cmd") or DEFAULT_TEST_CMD)

    def _run_script(self, task: dict[str, Any], review: TreeReview) -> str:
        """The grading container's script: checkout, write the graded files, supervised tests."""
        d = GUARD_DIR
        run = [
            "set -u",
            f"{self._start_command(task, d + '/bug.patch')} > {d}/start.log 2>&1 "
            f"|| {{ cat {d}/start.log; exit 97; }}",
            f"rm -rf {RECORD}; : > {d}/eval.log",
        ]
        if review.files:
            run.append(
                f"cp -r {d}/model/. {TESTBED}/ >> {d}/eval.log 2>&1 "
                f"|| {{ echo '>>>>> Patch Apply Failed' >> {d}/eval.log; exit 0; }}"
            )
            run.append(f"echo '>>>>> Applied Patch' >> {d}/eval.log")
        run += [
            env_exports().rstrip("\n"),
            "PY=$(command -v python3 || command -v python || ls /opt/miniconda3/bin/python3)",
            f'"$PY" {d}/supervisor.py {RECORD} {d}/eval.log {self.test_timeout:.0f} '
            f"--contained -- bash {d}/eval.sh",
        ]
        return "\n".join(run) + "\n"

    def _run_tests(self, task: dict[str, Any], review: TreeReview) -> tuple[str, str | None]:
        """The grading log, and the supervisor's record (None if it wrote none), from a fresh
        container.

        One copy into the container (files, scripts, the guard), one command (checkout,
        files, tests), two reads (log, record): each Docker API call costs the engine CPU
        that concurrent episodes share.
        """
        sb = self._acquire(ensure_image(task), agent=False)
        policy = {"root": TESTBED, "files": review.policy, "events": RUNTIME_EVENTS}
        try:
            with tempfile.TemporaryDirectory() as tmp:
                texts = {
                    "test.patch": task.get("test_patch", ""),
                    "bug.patch": task.get("bug_patch", ""),
                    f"{GUARD_MODULE}.py": guard_plugin_source(),
                    "supervisor.py": supervisor_source(),
                    "policy.json": json.dumps(policy),
                    "eval.sh": self.eval_script(task),
                    "run.sh": self._run_script(task, review),
                }
                for name, text in texts.items():
                    (Path(tmp) / name).write_text(text, encoding="utf-8")
                for path, data in review.files.items():
                    target = Path(tmp) / "model" / path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
                sb.put_dir(tmp, GUARD_DIR)
            r = sb.exec(f"bash {GUARD_DIR}/run.sh", timeout=self.test_timeout + 120)
            if r.exit_code == 97:
                raise ConfigError(self._checkout_error(task, r.output))
            try:
                log = sb.read_file(f"{GUARD_DIR}/eval.log").decode("utf-8", errors="replace")
            except FileNotFoundError:
                log = r.output
            if r.timed_out:
                return log + "\n>>>>> Tests Timed Out\n", None
            try:
                record: str | None = sb.read_file(RECORD).decode("utf-8", errors="replace")
            except (FileNotFoundError, IsADirectoryError):
                record = None
            return log, record
        finally:
            sb.close(wait=False)

    # --- the oracle ----------------------------------------------------------------------------

    def expert_action(self) -> str | None:
        """The gold fix: one bash call that resets /testbed to the start and `git apply`s the
        gold patch (a SWE-smith task: reverts its bug patch), then submit."""
        if self.task is None or self._done:
            return None
        reverse = not self.task.get("patch", "").strip()
        patch = self.task.get("bug_patch", "") if reverse else self.task["patch"]
        if not patch.strip():
            return None
        patch = patch if patch.endswith("\n") else patch + "\n"
        base = shlex.quote(self._base)
        command = (
            f"cd {TESTBED} && git checkout -qf {base} && git clean -fdq && "
            f"git apply {'-R ' if reverse else ''}-v <<'{_EXPERT_EOF}'\n{patch}{_EXPERT_EOF}"
        )
        return (
            format_tool_call("bash", {"command": command}) + "\n" + format_tool_call("submit", {})
        )
