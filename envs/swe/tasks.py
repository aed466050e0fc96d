"""Loading SWE tasks (SWE-bench instance dicts) and finding the Docker image for each.

A task is a SWE-bench instance (`instance_id`, `repo`, `base_commit`, `patch`,
`test_patch`, `FAIL_TO_PASS`, `PASS_TO_PASS`, `problem_statement`, ...) plus, for
mentorgym, where its repository lives: `image` (a Docker image with the repository
at /testbed) or `repo_dir` (a local git repository turned into such an image), and an
optional `test_cmd`.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from mentorgym.envs.swe.grading import tests_of
from mentorgym.errors import ConfigError, SandboxError

REQUIRED_KEYS = ("instance_id", "base_commit", "FAIL_TO_PASS", "PASS_TO_PASS")

_images: dict[str, str] = {}
_images_lock = threading.Lock()


def normalize_task(
    task: dict[str, Any], base_dir: Path | None = None, where: str = ""
) -> dict[str, Any]:
    """Check the required keys, decode JSON-string test lists, resolve a relative `repo_dir`."""
    missing = [k for k in REQUIRED_KEYS if k not in task]
    if missing:
        raise ConfigError(
            f"SWE task {where or task.get('instance_id', '?')} lacks {missing}; every task needs {list(REQUIRED_KEYS)}"
        )
    out = dict(task)
    try:
        out["FAIL_TO_PASS"] = tests_of(task, "FAIL_TO_PASS")
        out["PASS_TO_PASS"] = tests_of(task, "PASS_TO_PASS")
    except (ValueError, json.JSONDecodeError) as e:
        raise ConfigError(f"SWE task {where or task['instance_id']}: {e}") from None
    for key in ("patch", "test_patch", "problem_statement", "repo"):
        out[key] = out.get(key) or ""
    if out.get("repo_dir") and base_dir is not None and not Path(out["repo_dir"]).is_absolute():
        out["repo_dir"] = str((base_dir / out["repo_dir"]).resolve())
    return out


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data if isinstance(data, list) else list(data.values())
        return [normalize_task(r, path.parent, f"{path}[{i}]") for i, r in enumerate(rows)]
    tasks = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"{path}:{n} is not valid JSON ({e.msg}); each line must be one task object"
            ) from None
        tasks.append(normalize_task(row, path.parent, f"{path}:{n}"))
    return tasks


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
    """SWE tasks from "builtin", a JSONL (or JSON list) file, or a Hugging Face dataset name.

    FAIL_TO_PASS / PASS_TO_PASS come back as lists; a relative `repo_dir` is resolved
    against the file's folder. `split` selects the dataset split (hub only; default "test").
    """
    if source == "builtin":
        tasks = _builtin_tasks()
    elif Path(source).expanduser().is_file():
        tasks = _read_jsonl(Path(source).expanduser())
    elif source.endswith((".jsonl", ".json")):
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


def hub_image_names(instance_id: str) -> list[str]:
    """The image names SWE-bench and SWE-Gym publish for an instance."""
    slug = instance_id.replace("__", "_1776_").lower()
    return [
        f"swebench/sweb.eval.x86_64.{slug}:latest",
        f"xingyaoww/sweb.eval.x86_64.{slug}:latest",
        f"sweb.eval.x86_64.{instance_id.lower()}:latest",
    ]


def ensure_image(task: dict[str, Any]) -> str:
    """The Docker image holding the task's repository at /testbed, built once per repo_dir."""
    if task.get("image"):
        return str(task["image"])
    from mentorgym.sandboxes import image as images

    if task.get("repo_dir"):
        repo_dir = str(task["repo_dir"])
        with _images_lock:
            if repo_dir not in _images:
                images.ensure_base()
                _images[repo_dir] = images.build_repo_image(repo_dir)
            return _images[repo_dir]
    names = hub_image_names(task["instance_id"])
    for name in names:
        if images.image_exists(name):
            return name
    raise SandboxError(
        f"no Docker image for SWE task {task['instance_id']}: none of {names} exists locally and no "
        "registry is reachable to pull one. Load the image (`docker load -i FILE`), or give the task "
        'an "image" (a local image with the repo at /testbed) or a "repo_dir" (a local git checkout).'
    )
