"""Docker sandboxes created and closed from many threads at once (the async engine and Ray
workers do this): 128 sandboxes from 16 threads, five rounds, no error, nothing left."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import docker.errors
import docker.models.containers
import pytest

from mentorgym.errors import SandboxError
from mentorgym.sandboxes.docker import DockerSandbox, client, engine_available

REASON = engine_available()
IMAGE = "mentorgym/base:latest"
pytestmark = [pytest.mark.docker, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

SANDBOXES = 128
THREADS = 16
ROUNDS = 5


def my_containers() -> set[str]:
    """Containers this test process owns (other processes' are not ours to count; warm
    pools of other tests in this process are, so tests compare before and after)."""
    label = f"mentorgym.owner_pid={os.getpid()}"
    return {c["Id"] for c in client().api.containers(all=True, filters={"label": label})}


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


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(ROUNDS))
def test_128_sandboxes_from_16_threads(round_: int) -> None:
    created.clear()
    before = my_containers()
    with ThreadPoolExecutor(THREADS) as pool:
        outputs = list(pool.map(make_and_use, range(SANDBOXES)))
        assert outputs == [f"sandbox-{i}" for i in range(SANDBOXES)]
        assert len({b.id for b in created}) == SANDBOXES
        list(pool.map(lambda b: b.close(), created))
    assert my_containers() <= before


def test_sandboxes_do_not_share_a_connection_pool() -> None:
    # docker-py keys pools by URL and closes the least recently used one, even under a
    # thread still using it: sandboxes used from many threads must not share one.
    with DockerSandbox(IMAGE) as a, DockerSandbox(IMAGE) as b:
        assert a.container.client is not b.container.client
        assert a.container.client.api.adapters is not b.container.client.api.adapters


def test_a_failed_start_is_a_sandbox_error_and_leaves_no_container(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def create_then_fail(self, image, command=None, **kwargs):  # what a failed start leaves
        kwargs.pop("detach", None)
        self.create(image, command=command, **kwargs)
        raise docker.errors.APIError("start failed (simulated)")

    monkeypatch.setattr(docker.models.containers.ContainerCollection, "run", create_then_fail)
    before = my_containers()
    with pytest.raises(SandboxError, match="start failed \\(simulated\\)"):
        DockerSandbox(IMAGE)
    assert my_containers() <= before


def test_a_shell_that_cannot_start_is_a_sandbox_error_and_leaves_no_container(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self):
        raise docker.errors.APIError("exec_create refused (simulated)")

    monkeypatch.setattr(DockerSandbox, "_start_control", broken)
    before = my_containers()
    with pytest.raises(SandboxError, match="shell did not: APIError"):
        DockerSandbox(IMAGE)
    assert my_containers() <= before


def test_a_broken_shell_stream_resumes_in_a_new_shell() -> None:
    with DockerSandbox(IMAGE) as box:
        box.exec("cd /tmp && export KEPT=5")
        box._shell.sock.close()  # the connection to the shell breaks; the container is fine
        assert box.exec("pwd; echo $KEPT").output == "/tmp\n5\n"
