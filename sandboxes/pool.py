"""A pool of started containers, so an episode's reset does not wait for a cold start.

Background threads (`fillers`, default up to 4) keep `size` sandboxes started and idle.
`acquire()` hands one out (or starts one when none is ready) and the pool starts a
replacement; a sandbox that was handed out is never handed out again: its `close()`
destroys it. Several fillers start containers in parallel, so that episodes that each take
a fresh container (MathTools' default) wait less on the engine.
"""

from __future__ import annotations

import atexit
import queue
import threading
from typing import Any

from mentorgym.errors import SandboxError
from mentorgym.sandboxes.docker import DockerSandbox, drain_removals


class SandboxPool:
    """Keeps `size` started DockerSandbox(image, **sandbox_kwargs) warm for `acquire()`."""

    def __init__(
        self, image: str, size: int = 2, *, fillers: int | None = None, **sandbox_kwargs: Any
    ):
        if size < 0:
            raise ValueError(f"SandboxPool size must be >= 0, got {size}")
        fillers = fillers if fillers is not None else max(1, min(size, 4))
        self.image = image
        self.size = size
        self.sandbox_kwargs = sandbox_kwargs
        self._ready: queue.Queue[DockerSandbox] = queue.Queue()
        self._wanted = threading.Semaphore(0)  # one release per sandbox to start
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self.last_error: Exception | None = None
        """The last failure of the background filler (acquire then starts one itself)."""
        for _ in range(size):
            self._wanted.release()
        self._threads = [
            threading.Thread(target=self._fill, name=f"mentorgym-pool-{i}", daemon=True)
            for i in range(fillers)
        ]
        for thread in self._threads:
            thread.start()

    def _fill(self) -> None:
        while True:
            self._wanted.acquire()
            if self._closed.is_set():
                return
            try:
                sandbox = DockerSandbox(self.image, **self.sandbox_kwargs)
            except Exception as e:  # a filler that died would leave the pool cold for good
                # Leave the slot empty: acquire() starts a sandbox itself and raises
                # the error to the caller if the problem persists.
                self.last_error = e
                continue
            with self._lock:
                if self._closed.is_set():
                    sandbox.close()
                    return
                self._ready.put(sandbox)

    def acquire(self) -> DockerSandbox:
        """A started sandbox nobody has used; the caller owns it and must close it."""
        if self._closed.is_set():
            raise SandboxError("this SandboxPool is closed; create a new one")
        while True:
            try:
                sandbox = self._ready.get_nowait()
            except queue.Empty:
                # The fillers already owe the idle sandboxes that are missing; asking them
                # for one more here would pile up a container per caller after a burst
                # (128 acquires at once left 128 idle containers behind).
                return DockerSandbox(self.image, **self.sandbox_kwargs)
            self._wanted.release()
            # A warm container can die while it waits (removed by hand, engine restart).
            if sandbox.alive():
                return sandbox
            sandbox.close()

    def idle(self) -> int:
        """How many started sandboxes are waiting to be acquired."""
        return self._ready.qsize()

    def close(self) -> None:
        """Stop refilling and destroy the idle sandboxes; ones handed out stay the caller's."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
        for _ in self._threads:
            self._wanted.release()  # wake each filler so it sees the pool is closed
        for thread in self._threads:
            thread.join(timeout=30)
        while True:
            try:
                self._ready.get_nowait().close()
            except queue.Empty:
                break

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_pools: dict[tuple[str, int, tuple[tuple[str, str], ...]], SandboxPool] = {}
_pools_lock = threading.Lock()


def get_pool(image: str, size: int = 2, **sandbox_kwargs: Any) -> SandboxPool:
    """The process's shared pool for (image, size, kwargs); all are closed at exit."""
    key = (image, size, tuple(sorted((k, repr(v)) for k, v in sandbox_kwargs.items())))
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None or pool._closed.is_set():
            pool = _pools[key] = SandboxPool(image, size, **sandbox_kwargs)
        return pool


@atexit.register
def close_all_pools() -> None:
    """Destroy every shared pool's idle sandboxes (registered with atexit)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


def release_all() -> None:
    """Remove this process's warm containers now and wait for pending removals: for a process
    that may end without running atexit (a Ray worker, a server shutting down)."""
    close_all_pools()
    drain_removals()
