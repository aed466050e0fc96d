"""Docker sandboxes created and closed from many threads at once (the async engine and Ray
workers do this): 128 sandboxes from 16 threads, five rounds, no error, nothing left."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from mentorgym.sandboxes.docker import DockerSandbox, client, engine_available

REASON = engine_available()
IMAGE = "mentorgym/base:latest"
pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(REASON is not None, reason=REASON or ""),
]

SANDBOXES = 128
THREADS = 16
ROUNDS = 5


def my_containers() -> list[str]:
    """Containers this test process owns (other processes' are not ours to count)."""
    label = f"mentorgym.owner_pid={os.getpid()}"
    return [c.id for c in client().containers.list(all=True, filters={"label": label})]


def make_and_use(i: int) -> str:
    box = DockerSandbox(IMAGE, mem_limit="64m", pids_limit=32, cpus=0.25)
    try:
        return box.exec(f"echo sandbox-{i}", timeout=60).output.strip()
    except BaseException:
        box.close()
        raise
    finally:
        created.append(box)


created: list[DockerSandbox] = []


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_128_sandboxes_from_16_threads(round_: int) -> None:
    created.clear()
    with ThreadPoolExecutor(THREADS) as pool:
        outputs = list(pool.map(make_and_use, range(SANDBOXES)))
        assert outputs == [f"sandbox-{i}" for i in range(SANDBOXES)]
        assert len({b.id for b in created}) == SANDBOXES
        list(pool.map(lambda b: b.close(), created))
    assert my_containers() == []
