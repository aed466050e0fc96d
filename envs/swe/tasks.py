"""Loading SWE tasks of every kind and finding the Docker image for each.

One loader reads three kinds of instance, told apart by their fields (`task_kind`):
- **SWE-bench** (`instance_id`, `repo`, `base_commit`, `patch`, `test_patch`,
  `FAIL_TO_PASS`, `PASS_TO_PASS` as lists or JSON strings, ...). Image:
  `swebench/sweb.eval.x86_64.<id with __ as _1776_>:latest`.
- **SWE-Gym** (the same schema; its repositories are in `grading.SWE_GYM_REPOS`). Image,
  as OpenHands named them: `xingyaoww/sweb.eval.x86_64.<id with __ as _s_>:latest`.
- **SWE-smith** (`image_name`, no `test_patch`, `version` or `environment_setup_commit`).
  Its `patch` *introduces* the bug; the bugged state is a git branch named after the
  instance. The loader keeps that patch as `bug_patch`, sets `bug_branch`, and leaves
  `patch` (the gold fix) empty: the env checks out the branch when the image has it, else
  applies `bug_patch` and commits it, and the expert reverts `bug_patch`.

Besides, for mentorgym: `image` (any local image with the repository at /testbed) or
`repo_dir` (a local git repository turned into such an image), an optional `test_cmd`,
and `harness` (whose grading rules apply, see `grading.py`).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from mentorgym.envs.swe.grading import SWE_GYM_REPOS, tests_of
from mentorgym.envs.swe.task_files import read_records
from mentorgym.errors import ConfigError, SandboxError

REQUIRED_KEYS = ("instance_id", "base_commit", "FAIL_TO_PASS", "PASS_TO_PASS")
SWESMITH_REQUIRED_KEYS = ("instance_id", "image_name", "patch", "FAIL_TO_PASS", "PASS_TO_PASS")

_images: dict[str, str] = {}
_images_lock = threading.Lock()


def task_kind(task: dict[str, Any]) -> str:
    """ "swesmith", "swegym" or "swebench": which project's schema and image names apply."""
    if task.get("task_kind") in ("swesmith", "swegym", "swebench"):
        return str(task["task_kind"])
    if task.get("image_name") and not task.get("test_patch"):
        return "swesmith"
    if task.get("repo") in SWE_GYM_REPOS or str(task.get("image", "")).startswith("xingyaoww/"):
        return "swegym"
    return "swebench"


def normalize_task(
    task: dict[str, Any], base_dir: Path | None = None, where: str = ""
) -> dict[str, Any]:
    """Check the required keys, decode JSON-string test lists, resolve a relative `repo_dir`,
    and turn a SWE-smith instance's inverted patch into `bug_patch` / `bug_branch`."""
    kind = task_kind(task)
    required = SWESMITH_REQUIRED_KEYS if kind == "swesmith" else REQUIRED_KEYS
    missing = [k for k in required if k not in task]
    if missing:
        raise ConfigError(
            f"{kind} task {where or task.get('instance_id', '?')} lacks {missing}; every {kind} task needs {list(required)}"
        )
    out = dict(task)
    out["task_kind"] = kind
    try:
        out["FAIL_TO_PASS"] = tests_of(task, "FAIL_TO_PASS")
        out["PASS_TO_PASS"] = tests_of(task, "PASS_TO_PASS")
    except (ValueError, json.JSONDecodeError) as e:
        raise ConfigError(f"SWE task {where or task['instance_id']}: {e}") from None
    if kind == "swesmith" and "bug_patch" not in out:
        out["bug_patch"] = out.get("patch") or ""
        out["patch"] = ""
        out.setdefault("bug_branch", out["instance_id"])
        out.setdefault(
            "base_commit", ""
        )  # the bug branch / bug_patch commit, made in the container
        out.setdefault("harness", "swesmith")
    for key in ("patch", "test_patch", "problem_statement", "repo"):
        out[key] = out.get(key) or ""
    if out.get("repo_dir") and base_dir is not None and not Path(out["repo_dir"]).is_absolute():
        out["repo_dir"] = str((base_dir / out["repo_dir"]).resolve())
    return out


def _read_jsonl(path: Path, split: str | None = None) -> list[dict[str, Any]]:
    """Every task in a task file or `datasets` folder (see `task_files`), normalized."""
    base = path if path.is_dir() else path.parent
    return [normalize_task(row, base, where) for where, row in read_records(path, split)]


def _builtin_tasks() -> list[dict[str, Any]]:
    from mentorgym.envs.swe import builtin

    tasks_path = Path(builtin.__file__).parent / "tasks.jsonl"
    if not tasks_path.exists():
        raise ConfigError(f"the builtin SWE task file {tasks_path} is missing; reinstall mentorgym")
    repos = builtin.prepare_repos()
    tasks = _read_jsonl(tasks_path)
    for task in tasks:
        # the shipped tasks name their library by the repo_dir folder or the repo's name
        keys = [
            Path(task.get("repo_dir") or "").name,
            task.get("lib", ""),
            task["repo"],
            task["repo"].split("/")[-1],
        ]
        lib = next((k for k in keys if k in repos), None)
        if lib is None:
            raise ConfigError(
                f"builtin task {task['instance_id']} names no shipped library (tried {keys}; have {sorted(repos)})"
            )
        task["repo_dir"] = str(repos[lib])
    return tasks


def _hub_tasks(name: str, split: str | None) -> list[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            f"loading {name!r} from the Hugging Face hub needs `pip install datasets`"
        ) from None
    try:
        ds = datasets.load_dataset(name, split=split or "test")
    except Exception as e:  # offline, unknown name, missing split: all say the same thing to a user
        raise ConfigError(
            f"could not load SWE tasks {name!r} (split {split or 'test'!r}) from the Hugging Face hub: {e}. "
            "Offline, pass a JSONL file of SWE-bench instances instead (tasks=PATH) or tasks='builtin'."
        ) from None
    return [normalize_task(dict(row), None, f"{name}[{i}]") for i, row in enumerate(ds)]


def load_tasks(source: str, split: str | None = None) -> list[dict[str, Any]]:
    """SWE tasks from "builtin", a task file or `datasets` folder (any shape `task_files`
    reads), or a Hugging Face dataset name.

    FAIL_TO_PASS / PASS_TO_PASS come back as lists; a relative `repo_dir` is resolved
    against the file's folder. `split` selects the dataset split (hub and `datasets` folders).
    """
    if source == "builtin":
        tasks = _builtin_tasks()
    elif Path(source).expanduser().exists():
        tasks = _read_jsonl(Path(source).expanduser(), split)
    elif (
        source.endswith((".jsonl", ".json"))
        or source.startswith(("/", ".", "~"))
        or "/" not in source
    ):
        raise ConfigError(f"SWE task file {source} does not exist")
    else:
        tasks = _hub_tasks(source, split)
    if not tasks:
        raise ConfigError(f"no SWE tasks in {source!r}")
    ids = [t["instance_id"] for t in tasks]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(
            f"SWE tasks in {source!r} repeat instance ids {dupes[:5]}; ids must be unique"
        )
    return tasks


def image_name(task: dict[str, Any]) -> str:
    """The Docker image a task runs in, as its project names it."""
    if task.get("image"):
        return str(task["image"])
    kind = task.get("task_kind") or task_kind(task)
    iid = str(task["instance_id"])
    if kind == "swesmith":
        name = str(task["image_name"])
    elif kind == "swegym":
        name = f"xingyaoww/sweb.eval.x86_64.{iid.replace('__', '_s_').lower()}"
    else:
        name = f"swebench/sweb.eval.x86_64.{iid.replace('__', '_1776_').lower()}"
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def image_hint(task: dict[str, Any]) -> str:
    """The command that would fetch or build the task's image."""
    name = image_name(task)
    kind = task.get("task_kind") or task_kind(task)
    if kind == "swebench" and not task.get("image"):
        return (
            f"`docker pull {name}` (or build it: `python -m swebench.harness.run_evaluation "
            f"--predictions_path gold --instance_ids {task['instance_id']} --run_id build`)"
        )
    return f"`docker pull {name}`"


def ensure_image(task: dict[str, Any]) -> str:
    """The Docker image holding the task's repository at /testbed, built once per repo_dir."""
    from mentorgym.sandboxes import image as images

    if task.get("repo_dir") and not task.get("image"):
        repo_dir = str(task["repo_dir"])
        with _images_lock:
            if repo_dir not in _images:
                images.ensure_base()
                _images[repo_dir] = images.build_repo_image(repo_dir)
            return _images[repo_dir]
    name = image_name(task)
    if images.image_exists(name):
        return name
    raise SandboxError(
        f"the Docker image {name} of SWE task {task['instance_id']} is not on the local engine. "
        f"Fetch it with {image_hint(task)}, load a saved copy (`docker load -i FILE`), or give "
        'the task an "image" (a local image with the repo at /testbed) or a "repo_dir" (a local git checkout).'
    )


def read_instance(path: str, instance_id: str | None = None) -> dict[str, Any]:
    """One instance from any task file shape (`instance_id` picks one of several)."""
    file = Path(path).expanduser()
    if not file.exists():
        raise ConfigError(f"instance file {path} does not exist")
    rows = read_records(file)
    if instance_id is not None:
        rows = [(w, r) for w, r in rows if r.get("instance_id") == instance_id]
    if len(rows) != 1:
        ids = [r.get("instance_id") for _, r in rows][:10]
        raise ConfigError(
            f"{path} holds {len(rows)} matching instances ({ids}); pass --id INSTANCE_ID to pick one"
        )
    where, row = rows[0]
    return normalize_task(row, file if file.is_dir() else file.parent, where)


def check_tasks(source: str, images: bool = True) -> tuple[list[str], int]:
    """Validate a task source; one line per task (kind, grading rules, image, present or not).

    Returns the lines and how many images are missing from the local engine.
    """
    from mentorgym.envs.swe.grading import pick_harness

    tasks = load_tasks(source)
    lines = [f"{len(tasks)} task(s) in {source}: valid"]
    missing = 0
    present: dict[str, bool] = {}
    for task in tasks:
        if task.get("repo_dir") and not task.get("image"):
            where, status = f"built from {task['repo_dir']}", "local"
        else:
            where = image_name(task)
            if images:
                from mentorgym.sandboxes import image as image_api

                if where not in present:
                    present[where] = image_api.image_exists(where)
                status = "present" if present[where] else "MISSING: " + image_hint(task)
                missing += not present[where]
            else:
                status = "not checked"
        lines.append(
            f"  {task['instance_id']}  kind={task['task_kind']}  rules={pick_harness(task)}  image={where}  {status}"
        )
    return lines, missing
