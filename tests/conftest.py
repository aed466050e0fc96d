"""Shared test set-up: the toy plugin package in tests/plugins is importable and discoverable
through its `mentorgym.envs` entry point, as an installed third-party package would be."""

import os
import sys
from pathlib import Path

PLUGINS = Path(__file__).parent / "plugins"
sys.path.insert(0, str(PLUGINS))
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")])
)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
