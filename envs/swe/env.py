"""`mentorgym/SWE-v0`: resolve a SWE-bench-style issue in a real repository inside Docker.

Each episode takes one container from a warm pool, with the task's repository at
/testbed checked out at `base_commit`. The agent calls `bash`, `str_replace_editor`
and `submit` (Qwen/Hermes tool calls; `<answer>` also submits). One turn may carry
several calls; they run in order, and calls after `submit` are not run.

Grading (on submit): the model patch is `git diff BASE` of /testbed, new files
included and files that `test_patch` touches excluded. In a *fresh* container from
the same image the model patch is applied to `base_commit`, then the test patch,
then FAIL_TO_PASS and PASS_TO_PASS run (the task's SWE-bench `eval_script` when it
has one, else `test_cmd` on the tests' files); reward is 1.0 exactly when all pass
(swebench's parsers and rules, see `grading.py`). Grading in a fresh container means
nothing the agent did outside the diff (installed packages, edited conftest outside
the repo, killed processes) can change the verdict.

Truncation: the turn limit is Gymnasium's `TimeLimit`, which the env cannot see
coming, so an episode cut by it is *not graded*: its last step's info still holds
`model_patch` (recorded after every step), which `preds.export_predictions` turns into
a SWE-bench prediction, and a rollout loop that wants the reward can call
`env.unwrapped.grade()` before `close()`. A container that dies mid-episode ends the
episode truncated with the reason in `info["error"]`.
"""

from __future__ import annotations

import re
import shlex
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
from mentorgym.envs.swe.grading import GradeResult, grade_log
from mentorgym.envs.swe.tasks import ensure_image, load_tasks
from mentorgym.envs.swe.tools import DEFAULT_TOOL_OUTPUT_LIMIT, BashTool, EditorTool, submit_tool
from mentorgym.errors import ConfigError, SandboxError
from mentorgym.sandboxes.base import Sandbox
from mentorgym.sandboxes.docker import DockerSandbox
from mentorgym.sandboxes.pool import get_pool

TESTBED = "/testbed"
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
        self.task: dict[str, Any] | None = None
        self.sandbox: Sandbox | None = None
        self._tools: list[Tool] = []
        self._result: GradeResult | None = None
        self._patch: str | None = None
        self._done = False

    # --- containers ------------------------------------------------------------------------

    def _acquire(self, image: str) -> DockerSandbox:
        return get_pool(image, self.pool_size, workdir=TESTBED, **self.container_kwargs).acquire()

    def _checkout(self, sb: Sandbox, task: dict[str, Any]) -> None:
        base = shlex.quote(task["base_commit"])
        r = sb.exec(
            f"cd {TESTBED} && git -c safe.directory='*' checkout -qf {base} && git clean -fdxq"
            # One image serves every task of a repository: drop the other refs and reflogs so
            # `git log --all` or `git diff main` cannot show the agent the fixed code.
            " && git for-each-ref --format='%(refname)' | xargs -r -n1 git update-ref -d"
            " && rm -rf .git/logs",
            timeout=120,
        )
        if r.exit_code != 0:
            raise ConfigError(
                f"could not check out base_commit {task['base_commit']} of task {task['instance_id']} "
                f"in {TESTBED}: {r.output.strip()[-500:]}. The task's image must hold that commit."
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
        sb = self._acquire(ensure_image(task))
        try:
            self._checkout(sb, task)
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
        if result.error:
            info["grade_error"] = result.error
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
        if result.error:
            info["grade_error"] = result.error
        return float(result.resolved), info

    def close(self) -> None:
        self._release()

    # --- the patch and the grade -----------------------------------------------------------------

    def model_patch(self) -> str:
        """`git diff BASE` of /testbed now: new files included, `test_patch`'s files excluded.

        A scratch index keeps the agent's own `git status` untouched.
        """
        if self.sandbox is None or self.task is None:
            raise RuntimeError("no episode is running; call reset() first")
        base = shlex.quote(self.task["base_commit"])
        excludes = " ".join(
            shlex.quote(f":(exclude){p}") for p in patch_files(self.task.get("test_patch", ""))
        )
        out = "/tmp/.mentorgym_model.patch"
        idx = "/tmp/.mentorgym_index"
        git = "git -c safe.directory='*' -c core.quotepath=false"
        cmd = (
            f"( cd {TESTBED} && rm -f {idx} && (cp .git/index {idx} 2>/dev/null; true) && "
            f"GIT_INDEX_FILE={idx} {git} add -A && "
            f"GIT_INDEX_FILE={idx} {git} diff --cached --binary --no-color --no-ext-diff {base} -- . {excludes} > {out}; "
            f"rc=$?; rm -f {idx}; exit $rc )"
        )
        r = self.sandbox.exec(cmd, timeout=120)
        if r.exit_code != 0:
            # the agent broke the repository (removed .git, ...): there is no patch to grade
            return ""
        return self.sandbox.read_file(out).decode("utf-8", errors="replace")

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
                "git -c safe.directory='*' apply -v /tmp/.mentorgym_test.patch "
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
        """Grade the repository as it stands: apply its model patch and the test patch in a
        fresh container at `base_commit`, run the tests, grade with swebench's rules.

        Cached for the episode; `info["model_patch"]` of the submit step is the patch graded.
        Raises `SandboxError` when a container dies.
        """
        if self._result is not None:
            return self._result
        if self.task is None or self.sandbox is None:
            raise RuntimeError("no episode is running; call reset() first")
        task = self.task
        self._patch = self.model_patch()
        log = self._run_tests(task, self._patch)
        self._result = grade_log(task, log)
        return self._result

    def _run_tests(self, task: dict[str, Any], model_patch: str) -> str:
        sb = self._acquire(ensure_image(task))
        try:
            self._checkout(sb, task)
            log = ""
            if model_patch.strip():
                sb.write_file("/tmp/.mentorgym_model.patch", model_patch)
                r = sb.exec(
                    f"cd {TESTBED} && git -c safe.directory='*' apply -v /tmp/.mentorgym_model.patch",
                    timeout=120,
                )
                if r.exit_code != 0:
                    return r.output + "\n>>>>> Patch Apply Failed\n"
                log += r.output + "\n>>>>> Applied Patch\n"
            if task.get("test_patch", "").strip():
                sb.write_file("/tmp/.mentorgym_test.patch", task["test_patch"])
            sb.write_file("/tmp/.mentorgym_eval.sh", self.eval_script(task))
            # the log goes to a file: exec's output is cut, and a -rA summary sits at the end
            r = sb.exec(
                "bash /tmp/.mentorgym_eval.sh > /tmp/.mentorgym_eval.log 2>&1",
                timeout=self.test_timeout,
            )
            try:
                log += sb.read_file("/tmp/.mentorgym_eval.log").decode("utf-8", errors="replace")
            except FileNotFoundError:
                log += r.output
            if r.timed_out:
                log += "\n>>>>> Tests Timed Out\n"
            return log
        finally:
            sb.close(wait=False)

    # --- the oracle ----------------------------------------------------------------------------

    def expert_action(self) -> str | None:
        """The gold patch: one bash call that resets /testbed to base and `git apply`s it, then submit."""
        if self.task is None or self._done or not self.task.get("patch", "").strip():
            return None
        patch = (
            self.task["patch"] if self.task["patch"].endswith("\n") else self.task["patch"] + "\n"
        )
        base = shlex.quote(self.task["base_commit"])
        command = (
            f"cd {TESTBED} && git checkout -qf {base} && git clean -fdq && "
            f"git apply -v <<'{_EXPERT_EOF}'\n{patch}{_EXPERT_EOF}"
        )
        return (
            format_tool_call("bash", {"command": command}) + "\n" + format_tool_call("submit", {})
        )
