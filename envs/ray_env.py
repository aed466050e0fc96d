"""`mentorgym/Ray-v0`: an env that lives in a Ray actor, on any node, driven from this process.

    env = mentorgym.make("mentorgym/Ray-v0", env_id="mentorgym/SWE-v0", address="HEAD:6379")

The actor makes `env_id` (with its own turn limit) on the node Ray places it on (SPREAD), so
the env's sandbox runs on that node's Docker engine, while the policy stays here: this is
how a trainer keeps its student in process and its envs on CPU nodes (`env_placement: ray`
in training configs). `reset`, `step`, `expert_action` and `random_action` are forwarded
(the hosted env applies its own `on_truncation`: `make` wraps it in `TruncationRules`
there); `close` removes the env, its containers and the actor. Without `address` (and no
Ray yet in this process) a small local Ray is started. Needs the `ray` extra.
"""

from __future__ import annotations

from typing import Any

from mentorgym.envs.base import Message, StepResult, TextEnv
from mentorgym.errors import ConfigError
from mentorgym.sandboxes.pool import release_all


class _EnvHost:
    """The actor side: one env, called from the driver."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any]):
        import mentorgym

        self.env = mentorgym.make(env_id, **env_kwargs)

    def num_tasks(self) -> int | None:
        return getattr(self.env.unwrapped, "num_tasks", None)

    def reset(self, seed: int | None, options: dict[str, Any] | None) -> tuple:
        return self.env.reset(seed=seed, options=options)

    def step(self, action: str) -> StepResult:
        return self.env.step(action)

    def call(self, hook: str) -> Any:
        method = getattr(self.env.unwrapped, hook, None)
        return None if method is None else method()

    def close(self) -> None:
        self.env.close()
        release_all()


class RayEnv(TextEnv):
    """An env hosted in a Ray actor (any registered id), driven from this process."""

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any] | None = None,
        address: str | None = None,
        cpus: float = 0.0,
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode)
        try:
            import ray
        except ImportError:
            raise ConfigError("mentorgym/Ray-v0 needs Ray: pip install 'mentorgym[ray]'") from None
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(
                    object_store_memory=200 * 1024 * 1024,
                    include_dashboard=False,
                    log_to_driver=False,
                )
        self._ray = ray
        host = ray.remote(num_cpus=cpus, max_restarts=0)(_EnvHost)
        self._host: Any = host.options(scheduling_strategy="SPREAD").remote(
            env_id, dict(env_kwargs or {})
        )
        self.env_id = env_id
        self.num_tasks = self._get(self._host.num_tasks.remote())

    def _get(self, ref: Any) -> Any:
        return self._ray.get(ref)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[list[Message], dict[str, Any]]:
        super().reset(seed=seed)
        return self._get(self._host.reset.remote(seed, options))

    def step(self, action: str) -> StepResult:
        return self._get(self._host.step.remote(action))

    def expert_action(self) -> str | None:
        return self._get(self._host.call.remote("expert_action"))

    def random_action(self) -> str:
        return self._get(self._host.call.remote("random_action"))

    def close(self) -> None:
        if self._host is not None:
            host, self._host = self._host, None
            try:
                self._ray.get(host.close.remote(), timeout=120)
            except Exception:  # a dead actor: its containers are reaped by owner pid
                pass
            self._ray.kill(host)
        super().close()
