"""mentorgym's envs in Gymnasium's own registry, plus plugin discovery.

Built-in ids are registered with lazy string entry points when `mentorgym` is
imported, so importing costs nothing until an env is made. Third parties
register theirs the Gymnasium way (`gymnasium.register`); an installed package
can also announce them through the `mentorgym.envs` entry-point group, whose
targets are loaded (and called, if callable) before the CLI lists or makes envs.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import warnings
from typing import Any

import gymnasium
from gymnasium.envs.registration import EnvSpec, load_env_creator

PLUGIN_GROUP = "mentorgym.envs"

_BUILTIN: list[dict[str, Any]] = [
    dict(
        id="mentorgym/Sokoban-v0",
        entry_point="mentorgym.envs.sokoban:SokobanEnv",
        max_episode_steps=20,
        kwargs={"dim_room": (6, 6), "num_boxes": 1},
    ),
    dict(
        id="mentorgym/Sokoban2-v0",
        entry_point="mentorgym.envs.sokoban:SokobanEnv",
        max_episode_steps=40,
        kwargs={"dim_room": (7, 7), "num_boxes": 2},
    ),
    dict(
        id="mentorgym/Sokoban3-v0",
        entry_point="mentorgym.envs.sokoban:SokobanEnv",
        max_episode_steps=60,
        kwargs={"dim_room": (8, 8), "num_boxes": 3},
    ),
    dict(
        id="mentorgym/Boxoban-v0",
        entry_point="mentorgym.envs.sokoban:SokobanEnv",
        max_episode_steps=120,
        kwargs={"dim_room": (10, 10), "num_boxes": 4},
    ),
    dict(
        id="mentorgym/MathTools-v0",
        entry_point="mentorgym.envs.math_tools:MathToolsEnv",
        max_episode_steps=8,
    ),
    dict(id="mentorgym/SWE-v0", entry_point="mentorgym.envs.swe:SWEEnv", max_episode_steps=50),
    # No turn limit here: the server applies the served env's own.
    dict(id="mentorgym/Remote-v0", entry_point="mentorgym.envs.remote:RemoteEnv"),
    dict(id="mentorgym/Ray-v0", entry_point="mentorgym.envs.ray_env:RayEnv"),
]

_plugins_loaded = False


def register_builtin() -> None:
    for spec in _BUILTIN:
        if spec["id"] not in gymnasium.registry:
            gymnasium.register(**spec)


def load_plugins() -> None:
    """Load every `mentorgym.envs` entry point once; a broken plugin warns instead of failing."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        try:
            target = ep.load()
            if callable(target) and not inspect.isclass(target):
                target()
        except Exception as e:  # a third-party bug must not break `mentorgym envs`
            warnings.warn(
                f"mentorgym.envs plugin {ep.name!r} ({ep.value}) failed to load: {e}", stacklevel=2
            )


def describe(spec: EnvSpec) -> str:
    """One line about an env: the first line of its entry point's docstring."""
    try:
        creator = (
            load_env_creator(spec.entry_point)
            if isinstance(spec.entry_point, str)
            else spec.entry_point
        )
    except Exception as e:
        return f"(entry point {spec.entry_point!r} failed to import: {e})"
    doc = inspect.getdoc(creator) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def list_envs(include_all: bool = False) -> list[EnvSpec]:
    """Registered text envs: mentorgym's, plugins', and any third-party id whose env is a TextEnv.

    With `include_all`, every id in Gymnasium's registry (CartPole and friends too).
    """
    load_plugins()
    specs = sorted(gymnasium.registry.values(), key=lambda s: s.id)
    if include_all:
        return specs
    return [s for s in specs if s.id.startswith("mentorgym/") or _is_text_env(s)]


def _is_text_env(spec: EnvSpec) -> bool:
    from mentorgym.envs.base import TextEnv

    creator = spec.entry_point
    if isinstance(creator, str):
        if creator.startswith(("gymnasium.", "shimmy.", "ale_py")):
            return (
                False  # Gymnasium's own control and Atari envs: not text envs, and slow to import
            )
        try:
            creator = load_env_creator(creator)
        except Exception:
            return False
    return inspect.isclass(creator) and issubclass(creator, TextEnv)


def make(env_id: str, /, **kwargs: Any) -> gymnasium.Env:
    """`gymnasium.make` after plugins are loaded, wrapped in `TruncationRules` (the env's
    `on_truncation` hook on a turn-limit truncation); an unknown id gets a "did you mean"."""
    from mentorgym.envs.base import TruncationRules

    load_plugins()
    try:
        return TruncationRules(gymnasium.make(env_id, **kwargs))
    except (gymnasium.error.NameNotFound, gymnasium.error.NamespaceNotFound) as e:
        # Gymnasium suggests within a namespace; also suggest across namespaces ("Sokoban-v0").
        close = difflib.get_close_matches(env_id, list(gymnasium.registry), n=3, cutoff=0.5)
        if close and "Did you mean" not in str(e):
            raise type(e)(f"{e} Did you mean: {', '.join(f'`{c}`' for c in close)}?") from None
        raise
