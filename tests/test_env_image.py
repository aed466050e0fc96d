"""The env server image (Dockerfile, built by scripts/build_env_image.sh): it answers on port
8000 with its health check and the token, and Remote-v0 plays in it as in process. Skips
when the image has not been built (building it fetches ~110 MB of wheels)."""

from __future__ import annotations

import secrets
import socket
import time

import httpx
import pytest

import mentorgym
from mentorgym.envs.remote import RemoteEnv

IMAGE = "mentorgym/env-server:latest"
pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def container():
    from mentorgym.sandboxes.docker import client, engine_available, owner_labels

    reason = engine_available()
    if reason:
        pytest.skip(reason)
    import docker.errors

    try:
        client().images.get(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.skip(f"{IMAGE} is not built: bash scripts/build_env_image.sh")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(16)
    env = {"MENTORGYM_SERVE_TOKEN": token, "MENTORGYM_SERVE_ENVS": "mentorgym/Sokoban-v0"}
    c = client().containers.run(
        IMAGE,
        detach=True,
        environment=env,
        ports={"8000/tcp": ("127.0.0.1", port)},
        labels=owner_labels(),
    )
    try:
        yield f"http://127.0.0.1:{port}", token, c
    finally:
        c.remove(force=True)


def test_image_serves_with_health_check_and_token(container):
    url, token, c = container
    deadline = time.monotonic() + 90
    while True:
        c.reload()
        health = c.attrs["State"].get("Health", {}).get("Status")
        if health == "healthy" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert health == "healthy", c.logs()[-2000:]
    assert httpx.get(url + "/health").status_code == 401
    assert httpx.get(url + "/health", headers={"X-API-Key": token}).json() == {"status": "healthy"}
    remote = RemoteEnv(url, token=token)
    local = mentorgym.make("mentorgym/Sokoban-v0")
    try:
        assert remote.reset(seed=3) == local.reset(seed=3)
        for move in ["<answer>Up</answer>", "<answer>Left</answer>"]:
            assert remote.step(move) == local.step(move)
    finally:
        remote.close()
