"""A two-node Ray cluster on this machine (`ray start --head` plus `ray start --address` on
loopback, each with its own temp dir and ports): `--executor ray --address` spreads the
episodes over both nodes and gets the same trajectories as a local run. The nodes are
stopped by pid (never `ray stop`, which would stop every Ray on the machine)."""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mentorgym.agents.rollout import run
from mentorgym.agents.scripted import ExpertPolicy
from mentorgym.agents.trajectory import read_trajectories

pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = str(Path(sys.executable).parent / "ray")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(k: int) -> list[int]:
    """k free ports in a row (a worker port range needs a contiguous block)."""
    while True:
        start = random.randint(20000, 59000)
        if all(_free(p) for p in range(start, start + k)):
            return list(range(start, start + k))


def _node_args(ports: list[int], temp_dir: str) -> list[str]:
    return [
        "--num-cpus=2",
        f"--object-store-memory={80 * 1024 * 1024}",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        "--node-ip-address=127.0.0.1",
        f"--node-manager-port={ports[0]}",
        f"--object-manager-port={ports[1]}",
        f"--dashboard-agent-listen-port={ports[2]}",
        f"--dashboard-agent-grpc-port={ports[3]}",
        f"--metrics-export-port={ports[4]}",
        f"--runtime-env-agent-port={ports[5]}",
        f"--min-worker-port={ports[10]}",
        f"--max-worker-port={ports[-1]}",
    ]


def _pids_under(marker: str) -> list[int]:
    """Processes whose command line names `marker` (our temp dirs): this cluster's, only."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def cluster():
    root = tempfile.mkdtemp(prefix="mgray", dir="/tmp")
    head_ports, node_ports = _ports(40), _ports(40)
    gcs_port, client_port = head_ports[6], head_ports[7]
    head = [RAY, "start", "--head", f"--port={gcs_port}", f"--ray-client-server-port={client_port}"]
    head += ["--include-dashboard=false"]
    worker = [RAY, "start", f"--address=127.0.0.1:{gcs_port}"]
    # Ray's token auth, with a token of this cluster's own (not ~/.ray's shared file).
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    try:
        for cmd in (
            head + _node_args(head_ports, f"{root}/head"),
            worker + _node_args(node_ports, f"{root}/node"),
        ):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        yield f"127.0.0.1:{gcs_port}", env
    finally:
        pids = _pids_under(root)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 15
        while _pids_under(root) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in _pids_under(root):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(root, ignore_errors=True)


def test_two_node_cluster_spreads_episodes_and_matches_local(cluster, tmp_path):
    address, env = cluster
    out = tmp_path / "out.jsonl"
    cli = [sys.executable, "-m", "mentorgym.cli", "rollout", "mentorgym/Sokoban-v0"]
    # Four workers of one CPU each on two nodes of two: both nodes must play (Ray's SPREAD
    # alone is best effort, and would put them all on the head if the other is late).
    cli += ["--agent", "expert", "-n", "8", "--seed", "40", "--concurrency", "4"]
    cli += ["--cpus-per-worker", "1"]
    cli += ["--executor", "ray", "--address", address, "--out", str(out)]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "lost" not in done.stderr
    got = sorted(read_trajectories(out), key=lambda t: t.seed)
    local = run("mentorgym/Sokoban-v0", ExpertPolicy(), n=8, seed=40)

    def comparable(traj) -> dict:
        d = traj.to_dict()
        d["meta"] = {k: v for k, v in d["meta"].items() if k not in ("reset_s", "executor", "node")}
        for turn in d["turns"]:
            turn.pop("timing")
        return d

    assert [comparable(t) for t in got] == [comparable(t) for t in local]
    assert len({t.meta["node"] for t in got}) == 2  # both nodes played
