"""Which sandbox runs agent code when the caller does not say: an isolated one, or none.

`choose("auto")` picks, in order:

1. the Docker pool, when a Docker engine answers and the base image is built (a warm
   container per episode, a persistent shell in it);
2. bubblewrap, when `bwrap` can make namespaces on this machine;
3. nothing: it raises `SandboxError` naming both ways to get one.

`choose("local")` runs commands as this process's user (no isolation); it must be asked
for by name, and the first LocalSandbox warns. See SECURITY.md for what each guarantees.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from mentorgym.errors import ConfigError, SandboxError
from mentorgym.sandboxes.base import Sandbox

BACKENDS = ("auto", "docker", "bwrap", "local")
BASE_IMAGE = "mentorgym/base:latest"
DOCKER_WORKDIR = "/sandbox"
DOCKER_USER = "1000:1000"

log = logging.getLogger("mentorgym.sandbox")


@dataclass(frozen=True)
class SandboxChoice:
    backend: str
    """"docker", "bwrap" or "local"."""
    detail: str
    """One line saying what runs the code, for logs and episode info."""
    factory: Callable[[], Sandbox]
    """Makes one episode's sandbox."""


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 1024
    max_processes: int = 64
    pool_size: int = 4
    """Docker only: started containers kept warm for the next episode."""


_cache: dict[tuple[str, str, Limits], SandboxChoice] = {}
_cache_lock = threading.Lock()


def choose(
    backend: str | None = "auto", *, image: str = BASE_IMAGE, limits: Limits | None = None
) -> SandboxChoice:
    """The sandbox for agent code; see the module docstring. Remembered per process."""
    backend = backend or "auto"
    if backend not in BACKENDS:
        raise ConfigError(f"sandbox must be one of {', '.join(BACKENDS)}; got {backend!r}")
    limits = limits or Limits()
    key = (backend, image, limits)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = _choose(backend, image, limits)
            log.info("agent code runs in: %s", _cache[key].detail)
        return _cache[key]


def _choose(backend: str, image: str, limits: Limits) -> SandboxChoice:
    if backend == "local":
        return _local(limits)
    if backend == "docker":
        reason = _docker_reason(image)
        if reason is not None:
            raise SandboxError(f"sandbox=docker: {reason}")
        return _docker(image, limits)
    if backend == "bwrap":
        return _bwrap(limits)
    docker_reason = _docker_reason(image)
    if docker_reason is None:
        return _docker(image, limits)
    from mentorgym.sandboxes.bwrap import bwrap_available

    bwrap_reason = bwrap_available()
    if bwrap_reason is None:
        log.info("not using Docker (%s)", docker_reason)
        return _bwrap(limits)
    raise SandboxError(
        "no isolated sandbox is available for agent code, and it will not run unisolated "
        "unless you ask: "
        f"(1) Docker: {docker_reason}; "
        f"(2) bubblewrap: {bwrap_reason}. "
        "Set up either one, or pass sandbox=local to run trusted code as this user "
        "(no isolation; see SECURITY.md)"
    )


def _docker_reason(image: str) -> str | None:
    """None when the Docker pool can run `image`, else why not."""
    from mentorgym.sandboxes.docker import client, engine_available

    reason = engine_available()
    if reason is not None:
        return reason
    import docker.errors

    try:
        client().images.get(image)
    except docker.errors.ImageNotFound:
        return (
            f"the engine answers but image {image} is not built: run "
            "`mentorgym sandbox build-base` (or scripts/docker_up.sh)"
        )
    except docker.errors.APIError as e:
        return f"the engine did not say whether {image} exists ({e})"
    return None


def _docker(image: str, limits: Limits) -> SandboxChoice:
    from mentorgym.sandboxes.pool import get_pool

    uid, gid = DOCKER_USER.split(":")
    # A read-only root, a non-root user and tmpfs work dirs: commands can write only to
    # /sandbox and /tmp, both gone with the container.
    settings = dict(
        workdir=DOCKER_WORKDIR,
        user=DOCKER_USER,
        read_only=True,
        # uid/gid, not mode: the engine resets the mode of the working directory.
        tmpfs={
            DOCKER_WORKDIR: f"size=256m,uid={uid},gid={gid},mode=0700",
            "/tmp": "size=64m,mode=1777",
        },
        mem_limit=f"{limits.memory_mb}m",
        pids_limit=limits.max_processes,
        env={"HOME": DOCKER_WORKDIR},
        background_close=True,  # an episode's reset need not wait for the engine's removal
    )

    def make() -> Sandbox:
        # Looked up at each call: the process's shared pool, made again if it was closed.
        return get_pool(image, limits.pool_size, **settings).acquire()

    get_pool(image, limits.pool_size, **settings)  # start warming now
    return SandboxChoice("docker", f"docker (pool of {image}, no network)", make)


def _bwrap(limits: Limits) -> SandboxChoice:
    from mentorgym.sandboxes.bwrap import BwrapSandbox, bwrap_available

    reason = bwrap_available()
    if reason is not None:
        raise SandboxError(f"sandbox=bwrap: {reason}")

    def make() -> Sandbox:
        return BwrapSandbox(memory_mb=limits.memory_mb, max_processes=limits.max_processes)

    return SandboxChoice("bwrap", "bwrap (user, pid, net and mount namespaces)", make)


def _local(limits: Limits) -> SandboxChoice:
    from mentorgym.sandboxes.local import LocalSandbox

    def make() -> Sandbox:
        return LocalSandbox(memory_mb=limits.memory_mb, max_processes=limits.max_processes)

    return SandboxChoice("local", "local (no isolation: runs as this user)", make)
