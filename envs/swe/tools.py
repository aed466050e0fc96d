"""The SWE agent's tools over a Sandbox: `bash`, `str_replace_editor` and `submit`.

The tools act on whatever sandbox they are bound to (a Docker container in the env,
any `Sandbox` in tests). A command that fails, times out or prints too much is an
observation for the agent; only a dead sandbox (`SandboxError`) escapes, so the env
can end the episode. Bad arguments raise `ValueError`, which the base contract turns
into a format-error message.
"""

from __future__ import annotations

import posixpath
import shlex
from typing import Any

from mentorgym.envs.base import Tool
from mentorgym.sandboxes.base import Sandbox, truncate_output

DEFAULT_TOOL_OUTPUT_LIMIT = 16_000
"""Characters of one tool result kept for the agent; the rest is cut with a notice."""

SNIPPET_CONTEXT = 4
"""Lines shown around an edit in the editor's reply."""

EDITOR_COMMANDS = ("view", "create", "str_replace", "insert", "undo_edit")


def _numbered(lines: list[str], first: int) -> str:
    """`cat -n` style: the line number, a tab, the line."""
    return "\n".join(f"{i:6}\t{line}" for i, line in enumerate(lines, start=first))


def _lines(text: str) -> list[str]:
    """Lines without their newlines; a final newline does not make an extra empty line."""
    if text == "":
        return []
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")


class BashTool:
    """`bash`: one command in the sandbox's shell, whose state persists between calls."""

    def __init__(
        self, sandbox: Sandbox, timeout: float = 60.0, output_limit: int = DEFAULT_TOOL_OUTPUT_LIMIT
    ):
        self.sandbox = sandbox
        self.timeout = timeout
        self.output_limit = output_limit

    def __call__(self, args: dict[str, Any]) -> str:
        command = args.get("command")
        if not isinstance(command, str) or not command.strip():
            raise ValueError('"command" must be a non-empty string of shell code')
        result = self.sandbox.exec(command, timeout=self.timeout)
        text = result.output.rstrip("\n")
        notes = []
        if result.timed_out:
            notes.append(
                f"[the command timed out after {self.timeout:g} s and was killed; "
                "run long jobs in the background or with a smaller input]"
            )
        elif result.exit_code != 0:
            notes.append(f"[exit code {result.exit_code}]")
        if result.oom_killed:
            notes.append("[the command ran out of memory and was killed]")
        body = text if text else "(no output)"
        return truncate_output("\n".join([body, *notes]), self.output_limit)[0]

    def tool(self) -> Tool:
        return Tool(
            name="bash",
            description=(
                "Run a bash command in the repository's container (cwd, variables and "
                f"exports persist between calls). Commands are killed after {self.timeout:g} s; "
                "long outputs are truncated."
            ),
            parameters={
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "The bash command to run."}
                },
                "required": ["command"],
            },
            run=self,
        )


class EditorTool:
    """`str_replace_editor`: view, create and edit files, with a per-file undo history."""

    def __init__(
        self,
        sandbox: Sandbox,
        workdir: str = "/testbed",
        output_limit: int = DEFAULT_TOOL_OUTPUT_LIMIT,
    ):
        self.sandbox = sandbox
        self.workdir = workdir
        self.output_limit = output_limit
        self.history: dict[str, list[str | None]] = {}
        """Earlier contents of each edited file; None = the file did not exist."""

    # --- sandbox access -------------------------------------------------------------------

    def _kind(self, path: str) -> str:
        q = shlex.quote(path)
        r = self.sandbox.exec(
            f"if [ -d {q} ]; then echo dir; elif [ -f {q} ]; then echo file; else echo none; fi"
        )
        return r.output.strip().splitlines()[-1] if r.output.strip() else "none"

    def _read(self, path: str) -> str:
        return self.sandbox.read_file(path).decode("utf-8", errors="replace")

    def _write(self, path: str, text: str) -> None:
        parent = posixpath.dirname(path)
        if parent:
            self.sandbox.exec(f"mkdir -p {shlex.quote(parent)}")
        self.sandbox.write_file(path, text.encode("utf-8"))

    def _resolve(self, args: dict[str, Any]) -> str:
        path = args.get("path")
        if not isinstance(path, str) or not path.strip():
            raise ValueError(
                '"path" must be a non-empty string (an absolute path such as /testbed/pkg/mod.py)'
            )
        # a relative path is taken from the repository root, where the task lives
        return posixpath.normpath(posixpath.join(self.workdir, path.strip()))

    def _snippet(self, path: str, text: str, line: int, n_new: int) -> str:
        lines = _lines(text)
        start = max(1, line - SNIPPET_CONTEXT)
        end = min(len(lines), line + n_new + SNIPPET_CONTEXT)
        return f"Here is a snippet of {path} (lines {start}-{end}):\n" + _numbered(
            lines[start - 1 : end], start
        )

    # --- commands ------------------------------------------------------------------------

    def __call__(self, args: dict[str, Any]) -> str:
        command = args.get("command")
        if command not in EDITOR_COMMANDS:
            raise ValueError(
                f'"command" must be one of {", ".join(EDITOR_COMMANDS)}; got {command!r}'
            )
        path = self._resolve(args)
        out = getattr(self, f"_{command}")(path, args)
        return truncate_output(out, self.output_limit)[0]

    def _view(self, path: str, args: dict[str, Any]) -> str:
        kind = self._kind(path)
        if kind == "none":
            return f"Error: {path} does not exist."
        view_range = args.get("view_range")
        if kind == "dir":
            if view_range is not None:
                return f"Error: view_range applies to files, and {path} is a directory."
            q = shlex.quote(path)
            r = self.sandbox.exec(f"find {q} -maxdepth 2 -not -path '*/.*' | sort")
            return f"Files and directories up to 2 levels deep in {path}, hidden items excluded:\n{r.output.rstrip()}"
        lines = _lines(self._read(path))
        if view_range is None:
            return _numbered(lines, 1)
        if (
            not isinstance(view_range, list)
            or len(view_range) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in view_range)
        ):
            raise ValueError(
                '"view_range" must be a list of two integers [start, end] (end -1 = to the end)'
            )
        start, end = view_range
        n = len(lines)
        if not 1 <= start <= max(n, 1):
            return f"Error: view_range start {start} is outside the file's lines 1-{n}."
        if end == -1:
            end = n
        if not start <= end <= n:
            return f"Error: view_range end {end} must be -1 or between start {start} and the last line {n}."
        return _numbered(lines[start - 1 : end], start)

    def _create(self, path: str, args: dict[str, Any]) -> str:
        text = args.get("file_text")
        if not isinstance(text, str):
            raise ValueError('"file_text" (the new file\'s content) is required for create')
        kind = self._kind(path)
        if kind != "none":
            return f"Error: {path} already exists; create does not overwrite. Edit it with str_replace or insert."
        self._write(path, text)
        self.history.setdefault(path, []).append(None)
        return f"File created: {path}"

    def _str_replace(self, path: str, args: dict[str, Any]) -> str:
        old, new = args.get("old_str"), args.get("new_str", "")
        if not isinstance(old, str) or old == "":
            raise ValueError('"old_str" must be a non-empty string: the exact text to replace')
        if not isinstance(new, str):
            raise ValueError('"new_str" must be a string (omit it to delete old_str)')
        if self._kind(path) != "file":
            return f"Error: {path} is not a file."
        text = self._read(path)
        count = text.count(old)
        if count == 0:
            return f"Error: no replacement was made: old_str does not appear verbatim in {path}."
        if count > 1:
            at = [text[:i].count("\n") + 1 for i in _find_all(text, old)]
            return (
                f"Error: no replacement was made: old_str occurs {count} times in {path} (lines {at}). "
                "Include more surrounding lines so that it is unique."
            )
        line = text[: text.index(old)].count("\n") + 1
        updated = text.replace(old, new, 1)
        self._write(path, updated)
        self.history.setdefault(path, []).append(text)
        return f"The file {path} has been edited. " + self._snippet(
            path, updated, line, new.count("\n")
        )

    def _insert(self, path: str, args: dict[str, Any]) -> str:
        at, new = args.get("insert_line"), args.get("new_str")
        if not isinstance(at, int) or isinstance(at, bool):
            raise ValueError(
                '"insert_line" must be an integer: the line after which to insert (0 = top)'
            )
        if not isinstance(new, str):
            raise ValueError('"new_str" (the text to insert) is required for insert')
        if self._kind(path) != "file":
            return f"Error: {path} is not a file."
        text = self._read(path)
        lines = _lines(text)
        if not 0 <= at <= len(lines):
            return (
                f"Error: insert_line {at} must be between 0 and {len(lines)}, the file's last line."
            )
        new_lines = _lines(new) if new else [""]
        updated_lines = lines[:at] + new_lines + lines[at:]
        updated = "\n".join(updated_lines) + (
            "\n" if text.endswith("\n") or at == len(lines) else ""
        )
        self._write(path, updated)
        self.history.setdefault(path, []).append(text)
        return f"The file {path} has been edited. " + self._snippet(
            path, updated, at + 1, len(new_lines) - 1
        )

    def _undo_edit(self, path: str, args: dict[str, Any]) -> str:
        stack = self.history.get(path)
        if not stack:
            return f"Error: there is no edit of {path} to undo."
        previous = stack.pop()
        if previous is None:
            self.sandbox.exec(f"rm -f {shlex.quote(path)}")
            return f"Undid the creation of {path}; the file is removed."
        self._write(path, previous)
        return f"Last edit to {path} undone. " + self._snippet(path, previous, 1, 0)

    def tool(self) -> Tool:
        return Tool(
            name="str_replace_editor",
            description=(
                "View, create and edit files. `view` shows a file with line numbers (optionally "
                "view_range [start, end], end -1 = to the end) or lists a directory; `create` writes "
                "a new file; `str_replace` replaces old_str, which must occur exactly once, by new_str; "
                "`insert` adds new_str after line insert_line (0 = top); `undo_edit` reverts the last "
                "edit of a file. Paths are absolute or relative to the repository root."
            ),
            parameters={
                "type": "object",
                "properties": {
                    "command": {"type": "string", "enum": list(EDITOR_COMMANDS)},
                    "path": {
                        "type": "string",
                        "description": "File or directory, e.g. /testbed/pkg/mod.py.",
                    },
                    "file_text": {
                        "type": "string",
                        "description": "Content of the new file (create).",
                    },
                    "old_str": {
                        "type": "string",
                        "description": "Exact text to replace (str_replace).",
                    },
                    "new_str": {
                        "type": "string",
                        "description": "Replacement (str_replace) or text to insert.",
                    },
                    "insert_line": {
                        "type": "integer",
                        "description": "Insert after this line (insert).",
                    },
                    "view_range": {
                        "type": "array",
                        "items": {"type": "integer"},
                        "description": "[start, end] lines to view; end -1 = to the end (view).",
                    },
                },
                "required": ["command", "path"],
            },
            run=self,
        )


def _find_all(text: str, sub: str) -> list[int]:
    out, i = [], text.find(sub)
    while i != -1:
        out.append(i)
        i = text.find(sub, i + 1)
    return out


def submit_tool() -> Tool:
    """`submit`: ends the episode; the env grades the repository as it stands."""

    def run(args: dict[str, Any]) -> str:
        return "Submitted. The repository's changes will now be graded."

    return Tool(
        name="submit",
        description="Submit your changes to the repository for grading. This ends the episode.",
        parameters={"type": "object", "properties": {}, "required": []},
        run=run,
    )
