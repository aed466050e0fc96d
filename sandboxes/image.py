"""Build the images sandboxes run: a base image offline, and one image per repository.

The base image is a Debian bookworm root filesystem made by `debootstrap` from the
machine's own apt mirror and imported with `docker import`, so it needs no registry;
where a registry answers, it is built `FROM python:3.11-slim` instead. Either way it
holds python3, pytest, git and patch. Both builds are cached by tag: a second call
returns at once.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from mentorgym.errors import SandboxError
from mentorgym.sandboxes.docker import client

BASE_TAG = "mentorgym/base:latest"
SUITE = "bookworm"
PACKAGES = "python3,python3-pytest,git,patch,ca-certificates"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
REGISTRY_PROBE = ("registry-1.docker.io", 443)

# Fixed identity and dates so that `git init` + commit of the same files gives the same hash.
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "mentorgym",
    "GIT_AUTHOR_EMAIL": "mentorgym@localhost",
    "GIT_COMMITTER_NAME": "mentorgym",
    "GIT_COMMITTER_EMAIL": "mentorgym@localhost",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00+0000",
    "GIT_COMMITTER_DATE": "2000-01-01T00:00:00+0000",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
}

_IMPORT_CHANGES = [
    'CMD ["/bin/bash"]',
    "ENV LANG=C.UTF-8",
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV PYTHONDONTWRITEBYTECODE=1",
    "WORKDIR /",
]

_SLIM_DOCKERFILE = """\
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends git patch \\
    && rm -rf /var/lib/apt/lists/* && pip install --no-cache-dir pytest
ENV LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1
CMD ["/bin/bash"]
"""


@dataclass(frozen=True)
class BuiltImage:
    """An image tag and how it came to be: `cached` is True when it already existed."""

    tag: str
    cached: bool
    method: str
    """"cached", "debootstrap", "dockerfile" or "commit"."""


def image_exists(tag: str) -> bool:
    try:
        client().images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_base(tag: str = BASE_TAG, force: bool = False) -> BuiltImage:
    """Build the base image unless `tag` exists (or `force`); say whether it was cached."""
    if not force and image_exists(tag):
        return BuiltImage(tag, cached=True, method="cached")
    if _registry_answers():
        try:
            _build_from_dockerfile(tag)
            return BuiltImage(tag, cached=False, method="dockerfile")
        except (docker.errors.BuildError, docker.errors.APIError):
            pass  # the registry answered a TCP probe but not the pull: build offline instead
    _build_with_debootstrap(tag)
    return BuiltImage(tag, cached=False, method="debootstrap")


def build_base(tag: str = BASE_TAG, force: bool = False) -> str:
    """Build the base image offline (debootstrap + `docker import`) and return its tag.

    Cached: when `tag` exists and `force` is False this returns at once. Needs root and
    debootstrap on the machine that runs the engine; raises `SandboxError` saying so.
    """
    return ensure_base(tag, force).tag


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (sources.list or deb822 .sources files)."""
    files = ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*"))]
    for path in files:
        if not path.endswith((".list", ".sources")) or not os.path.isfile(path):
            continue
        text = Path(path).read_text(errors="replace")
        if path.endswith(".sources"):
            mirror = _mirror_from_deb822(text)
        else:
            mirror = _mirror_from_list(text)
        if mirror:
            return mirror
    return DEFAULT_MIRROR


def _mirror_from_list(text: str) -> str | None:
    for line in text.splitlines():
        parts = [p for p in line.split() if not p.startswith("[")]
        if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
            return parts[1]
    return None


def _mirror_from_deb822(text: str) -> str | None:
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith(("#", " ")):
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
        if SUITE in fields.get("suites", "").split() and "deb" in fields.get("types", "").split():
            return fields.get("uris", "").split()[0] if fields.get("uris") else None
    return None


def _registry_answers(timeout: float = 2.0) -> bool:
    """A quick TCP probe of Docker Hub; DNS can hang offline, so it runs under a deadline."""
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(REGISTRY_PROBE, timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(ok)


def _build_from_dockerfile(tag: str) -> None:
    ctx = io.BytesIO()
    with tarfile.open(fileobj=ctx, mode="w") as tar:
        data = _SLIM_DOCKERFILE.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    ctx.seek(0)
    client().images.build(fileobj=ctx, custom_context=True, tag=tag, rm=True, timeout=600)


def _build_with_debootstrap(tag: str) -> None:
    if os.geteuid() != 0:
        raise SandboxError(
            "building the base image needs root (debootstrap makes a root filesystem): "
            "run `sudo scripts/docker_up.sh` or `sudo mentorgym sandbox build-base`"
        )
    if shutil.which("debootstrap") is None:
        raise SandboxError(
            "debootstrap is not installed: `apt-get install -y debootstrap` "
            "(or run scripts/docker_up.sh), then build the base image again"
        )
    mirror = apt_mirror()
    with tempfile.TemporaryDirectory(prefix="mentorgym-rootfs-", dir="/var/tmp") as tmp:
        rootfs = os.path.join(tmp, "rootfs")
        cmd = ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, rootfs, mirror]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        finally:
            _unmount_under(rootfs)
        if proc.returncode != 0:
            log = (proc.stdout + proc.stderr)[-2000:]
            raise SandboxError(
                f"debootstrap from {mirror} failed (exit {proc.returncode}); check that the "
                f"mirror answers (apt-get update) and try again:\n{log}"
            )
        # Package caches are only weight in an image that never runs apt.
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in glob.glob(os.path.join(rootfs, sub, "*")):
                if os.path.isfile(entry):
                    os.remove(entry)
        archive = os.path.join(tmp, "rootfs.tar")
        subprocess.run(["tar", "-C", rootfs, "-cf", archive, "."], check=True)
        repo, _, version = tag.rpartition(":") if ":" in tag.split("/")[-1] else (tag, "", "latest")
        client().api.import_image_from_file(
            archive, repository=repo, tag=version, changes=_IMPORT_CHANGES
        )
    if not image_exists(tag):
        raise SandboxError(f"`docker import` reported no error but image {tag} does not exist")


def _unmount_under(rootfs: str) -> None:
    """Unmount what debootstrap mounted (proc, sys, dev/pts) if it stopped half-way.

    Otherwise deleting the temporary directory would walk into the host's /proc.
    """
    prefix = os.path.realpath(rootfs) + "/"
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    for point in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


# --- one image per repository -----------------------------------------------------------------


def build_repo_image(repo_dir: str | Path, *, base: str = BASE_TAG, tag: str | None = None) -> str:
    """An image holding `repo_dir` at /testbed (with its .git), built once per content.

    A directory that is not a git repository is committed into a fresh one with a fixed
    author, committer and dates, so the same files always give the same commit hash.
    The tag is derived from the base image id, the HEAD commit and the working-tree
    content; when it exists already it is returned at once.
    """
    src = Path(repo_dir).resolve()
    if not src.is_dir():
        raise SandboxError(f"build_repo_image: {src} is not a directory")
    try:
        base_id = client().images.get(base).id
    except docker.errors.ImageNotFound:
        raise SandboxError(
            f"base image {base} does not exist: build it with `mentorgym sandbox build-base`"
        ) from None
    with tempfile.TemporaryDirectory(prefix="mentorgym-repo-") as tmp:
        work = src
        if not (src / ".git").exists():
            # Never write into the caller's directory: commit a copy.
            work = Path(tmp) / "testbed"
            shutil.copytree(src, work, symlinks=True)
            _git(work, "init", "-q", "-b", "main")
            _git(work, "add", "-A")
            _git(work, "commit", "-q", "--allow-empty", "-m", "mentorgym testbed")
        head = _git(work, "rev-parse", "HEAD", check=False).strip()
        # Every ref, not only HEAD: tasks add base commits on refs of their own (swe synth).
        refs = _git(work, "show-ref", check=False).strip()
        digest = hashlib.sha256(f"{base_id}\n{head}\n{refs}\n".encode())
        _hash_tree(work, digest)
        tag = (
            tag or f"mentorgym/testbed:{src.name.lower()[:40] or 'repo'}-{digest.hexdigest()[:16]}"
        )
        if image_exists(tag):
            return tag
        _commit_image(work, base, tag)
    return tag


def _git(cwd: Path, *args: str, check: bool = True) -> str:
    env = {**os.environ, **_GIT_ENV}
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SandboxError(f"git {' '.join(args)} failed in {cwd}: {proc.stderr.strip()}")
    return proc.stdout


def _hash_tree(root: Path, digest: hashlib._Hash) -> None:
    """Fold every file outside .git (path, mode, bytes) into `digest`, in sorted order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            digest.update(f"{rel}\0{st.st_mode:o}\0".encode())
            if os.path.islink(path):
                digest.update(os.readlink(path).encode())
            else:
                with open(path, "rb") as f:
                    for block in iter(lambda f=f: f.read(1 << 20), b""):
                        digest.update(block)


def _commit_image(work: Path, base: str, tag: str) -> None:
    """Copy `work` into a created (never started) container of `base`, then commit it."""
    c = client()
    container = c.containers.create(base, command=["true"], labels=_build_labels())
    try:
        with tempfile.TemporaryFile() as f:
            with tarfile.open(fileobj=f, mode="w") as tar:
                tar.add(str(work), arcname="testbed", filter=_root_owned)
            f.seek(0)
            if not container.put_archive("/", f):
                raise SandboxError(f"copying {work} into the image for {tag} failed")
        repo, _, version = tag.rpartition(":")
        container.commit(
            repository=repo,
            tag=version,
            changes=["WORKDIR /testbed", 'CMD ["/bin/bash"]'],
        )
    finally:
        container.remove(force=True)


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # Sandboxes run as root with every capability dropped (no CAP_DAC_OVERRIDE), so files
    # owned by anyone else could not be edited inside the container.
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _build_labels() -> dict[str, str]:
    from mentorgym.sandboxes.docker import owner_labels

    return owner_labels()
