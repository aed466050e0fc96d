"""The graded patch of an agent's tree: what changed (by content), what the allowlist keeps,
the exact bytes graded, and the static capability check of those bytes.

Three reads from the agent's container, none through its `.git` index or an output cap:
the tree's listing with blob hashes (`allowlist.manifest_command`), then one tar of the
kept files plus the original blobs (`git cat-file --batch`), each original checked on the
host against the blob hash of the pristine listing, so an altered object store cannot
pass other bytes off as the base. The review then reads the bytes that are graded: the
grading container receives these files themselves, not a patch re-parsed elsewhere.
"""

from __future__ import annotations

import io
import shlex
import tarfile
import threading
from dataclasses import dataclass, field

from mentorgym.envs.swe.allowlist import (
    Entry,
    blob_sha,
    content_reason,
    make_patch,
    manifest_command,
    parse_manifest,
    select,
)
from mentorgym.envs.swe.capabilities import capability_set, review
from mentorgym.sandboxes.base import Sandbox

RUNNER_REPOS = {"pytest-dev/pytest", "pytest-dev/pluggy"}
"""Repositories whose own code is pytest's: using pytest there is the job, not a capability."""
_MANIFEST = "/tmp/.mentorgym_manifest"
_BUNDLE = "/tmp/.mentorgym_files.tar"
_ORIGINALS = ".mentorgym_originals"
_pristine: dict[tuple[str, str], dict[str, Entry]] = {}
_pristine_lock = threading.Lock()


@dataclass
class TreeReview:
    """The graded change of a tree, what was left out of it, and the static check's findings."""

    files: dict[str, bytes] = field(default_factory=dict)
    """Graded path -> its new bytes (exactly what the grading container receives)."""
    originals: dict[str, bytes | None] = field(default_factory=dict)
    """Graded path -> its bytes at the base commit (None: a new file)."""
    excluded: dict[str, str] = field(default_factory=dict)
    """Left-out path -> why."""
    findings: list[str] = field(default_factory=list)
    """Capabilities the graded files add, each `path:line: what`; any finding fails the grade."""
    policy: dict[str, list[str]] = field(default_factory=dict)
    """Graded .py path -> the capabilities its original used (the audit hook's allowance)."""
    patch: str = ""
    """The graded change as a git diff (for info, predictions and the grade cache)."""


def manifest(sb: Sandbox, root: str) -> dict[str, Entry]:
    """The listing of `root` in `sb` (every non-directory, blob hashes of regular files)."""
    r = sb.exec(manifest_command(root, _MANIFEST), timeout=300)
    if r.exit_code != 0:
        raise ValueError(f"listing the tree failed: {r.output.strip()[-300:]}")
    return parse_manifest(sb.read_file(_MANIFEST))


def pristine(sb: Sandbox, root: str, key: tuple[str, str]) -> dict[str, Entry]:
    """The listing of a fresh checkout, kept per (image, base commit)."""
    with _pristine_lock:
        if key in _pristine:
            return _pristine[key]
    tree = manifest(sb, root)
    with _pristine_lock:
        _pristine[key] = tree
    return tree


def _parse_batch(data: bytes) -> dict[str, bytes]:
    """{sha: bytes} from `git cat-file --batch` output, each checked against its hash."""
    out: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            break
        header = data[pos:end].split()
        pos = end + 1
        if len(header) != 3:
            continue  # `<sha> missing`
        size = int(header[2])
        blob = data[pos : pos + size]
        pos += size + 1
        if blob_sha(blob) == header[0].decode():
            out[header[0].decode()] = blob
    return out


def fetch(
    sb: Sandbox, root: str, paths: list[str], shas: list[str]
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """({path: bytes now} for regular files among `paths}, {sha: verified original bytes})."""
    git = f"git -c safe.directory='*' -C {shlex.quote(root)} cat-file --batch"
    listed = " ".join(shlex.quote(p) for p in paths)
    cmd = (
        f"rm -f {_BUNDLE} && printf '%s\\n' {' '.join(shas)} | {git} > /tmp/{_ORIGINALS} 2>/dev/null; "
        f"tar -cf {_BUNDLE} -C /tmp {_ORIGINALS} && "
        + (f"tar -rf {_BUNDLE} -C {shlex.quote(root)} -- {listed}" if paths else "true")
    )
    r = sb.exec(cmd, timeout=300)
    if r.exit_code != 0:
        raise ValueError(f"reading the changed files failed: {r.output.strip()[-300:]}")
    now: dict[str, bytes] = {}
    originals: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(sb.read_file(_BUNDLE))) as tar:
        for member in tar:
            f = tar.extractfile(member) if member.isfile() else None
            if f is None:
                continue
            if member.name == _ORIGINALS:
                originals = _parse_batch(f.read())
            elif member.name in paths:
                now[member.name] = f.read()
    return now, originals


def review_tree(
    sb: Sandbox, root: str, base: dict[str, Entry], test_files: set[str], repo: str = ""
) -> TreeReview:
    """Compare `sb`'s tree at `root` with its pristine listing `base`, apply the allowlist,
    read the kept files' bytes and originals, and check their capabilities."""
    current = manifest(sb, root)
    allowed, excluded = select(base, current, test_files)
    shas = [base[p].sha for p in allowed if p in base]
    now, blobs = fetch(sb, root, allowed, shas)
    result = TreeReview(excluded=excluded)
    allowance = {"pytest"} if repo in RUNNER_REPOS else set()
    for path in allowed:
        data = now.get(path)
        reason = "it changed while it was read" if data is None else content_reason(data)
        old = blobs.get(base[path].sha) if path in base else None
        if reason is None and path in base and old is None:
            reason = "its original is not in the repository's objects (.git was altered)"
        if reason is not None:
            result.excluded[path] = reason
            continue
        assert data is not None
        if old == data:
            continue
        result.files[path], result.originals[path] = data, old
        if path.endswith(".py"):
            old_text = old.decode("utf-8", "replace") if old is not None else None
            before = capability_set(old_text) | allowance
            result.policy[path] = sorted(before)
            result.findings += review(path, old_text, data.decode("utf-8"), frozenset(allowance))
    result.patch = make_patch({p: (result.originals[p], d) for p, d in result.files.items()})
    return result
