"""The hub's seams: the env server's session service stands without its transport, and the
old import paths keep working."""

from __future__ import annotations

import subprocess
import sys


def test_env_session_service_imports_without_fastapi() -> None:
    code = (
        "import sys; sys.modules['fastapi'] = None; sys.modules['uvicorn'] = None\n"
        "from mentorgym.env_server import EnvService, ServeSettings\n"
        "s = EnvService(['mentorgym/Sokoban-v0'], ServeSettings())\n"
        "print(sorted(s.env_ids))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "mentorgym/Sokoban-v0" in r.stdout
    # and the control: the transport does need FastAPI
    r = subprocess.run(
        [sys.executable, "-c", code + "from mentorgym.env_server import create_app\n"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0 and "fastapi" in r.stderr


def test_old_import_paths(monkeypatch) -> None:
    from fastapi import FastAPI

    import mentorgym.env_server as env_server
    from mentorgym import model_server, server

    assert server.create_app is model_server.create_app
    assert server.BackgroundServer is model_server.BackgroundServer
    assert server.serve_model is model_server.serve_model
    for name in ("BackgroundEnvServer", "ServeSettings", "check_bind", "create_app", "serve"):
        assert getattr(env_server, name) is not None
    # `uvicorn mentorgym.env_server:app`, as openenv.yaml runs it
    monkeypatch.setenv("MENTORGYM_SERVE_ENVS", "mentorgym/Sokoban-v0")
    assert isinstance(env_server.app, FastAPI)


def test_one_list_of_command_groups() -> None:
    """A new command group is one module with `register(subparsers)` and one entry here."""
    from mentorgym import cli

    names = {m.__name__.rsplit(".", 1)[-1] for m in cli.COMMAND_GROUPS}
    assert {"episodes", "train", "serve", "model", "sandbox", "swe"} <= names
    assert all(callable(getattr(m, "register", None)) for m in cli.COMMAND_GROUPS)
