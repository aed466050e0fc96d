"""The config core and the loader: flat dataclasses from YAML with `--set key=value` overrides.

The fields every algorithm has (model, optimizer, schedule, run, evaluation) are defined
once, in `CoreConfig`. Two families add what they share: `SupervisedConfig` (SFT and
DAgger: cross-entropy on labeled examples) and `OnPolicyConfig` (GRPO, OPD, SOD, OPSD,
Skill-SD: the student samples groups of episodes every step). Each algorithm's `Config`
adds only its own fields; all fields carry their own docstrings. A YAML file names its algorithm
(`algorithm: dagger`) and sets any fields; `--set key=value` overrides win over the
file, and values are coerced to the field's declared type. Unknown keys are a
`ConfigError` naming the key and the valid ones. Nothing here rewrites what the user
asked for.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mentorgym.errors import ConfigError

# --- the config core ------------------------------------------------------------------------


@dataclass
class CoreConfig:
    """Fields of every algorithm: env, student, optimizer, schedule, run and evaluation."""

    env_id: str = "mentorgym/Sokoban-v0"
    """The registered env to train on and evaluate in."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for `mentorgym.make(env_id, **env_kwargs)`."""
    student: str = "tiny"
    """`tiny` (a Qwen3-shaped model built from scratch in RUN/init), or a local path / hub id."""
    tiny_size: str = "tiny"
    """Size of a from-scratch tiny student: `tiny` or `small`."""
    seed: int = 0
    """Seeds the model init, data order, sampling and the first training env seed."""
    deterministic: bool = False
    """torch.use_deterministic_algorithms: the GPU kernels without a deterministic version
    raise instead of running (the CPU is deterministic without it; see the README)."""
    max_seq_len: int = 1024
    """Longest training sequence in tokens; a turn whose context and target do not fit is
    left out of the loss and counted (see data.py)."""
    context_turns: int = 0
    """The student sees only the last N observations (1: the current one; 0: all), in
    training, in rollouts and at evaluation alike."""
    system_prompt: bool = True
    """Keep the env's system prompt in the student's context."""
    lr: float = 1e-3
    """Peak AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay on matrices."""
    warmup_steps: int = 20
    """Linear warmup steps before the cosine decay."""
    min_lr_ratio: float = 0.1
    """Cosine decay floor as a fraction of `lr`."""
    grad_clip: float = 1.0
    """Gradient norm clip."""
    precision: str = "auto"
    """`auto` (bf16 autocast on CUDA, fp32 on CPU), `bf16` or `fp32`."""
    model_dtype: str = "float32"
    """Dtype of the student's weights: `float32` or `bfloat16` (large models)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    lora: dict[str, Any] = field(default_factory=dict)
    """LoRA through peft instead of full fine-tuning, e.g. `{rank: 16, alpha: 32, dropout: 0.05,
    target_modules: all-linear}` (see training/lora.py); empty trains every weight. Checkpoints
    then hold the adapter, `final/` the merged model."""
    device: str = "auto"
    """`auto`, `cpu`, `cuda`, `cuda:1`, ..."""
    save_every: int = 100
    """Checkpoint every N optimizer steps (0: only at the end)."""
    eval_episodes: int = 100
    """Held-out episodes per evaluation of the pure student (0: skip)."""
    eval_seed: int = 1_000_000
    """First held-out seed; keep it above the last training seed."""
    eval_temperature: float = 0.0
    """Student sampling temperature at evaluation (0: greedy)."""
    max_new_tokens: int = 64
    """Longest assistant turn the student may write."""
    concurrency: int = 32
    """Episodes stepped at once by the rollout engine (policy calls are batched)."""
    sampler: str = "hf"
    """What samples the student's rollouts: `hf` (the live model in this process) or `vllm`
    (a vLLM engine beside the trainer that receives the weights in memory before each
    sampling, i.e. after every optimizer step; single process only)."""
    progress: bool = True
    """Show progress: tqdm bars on a terminal, a line per phase in a log file."""
    report_to: list[str] = field(default_factory=list)
    """Experiment trackers that also get every metrics record and this config, as TRL names
    them: `tensorboard`, `wandb`, `trackio` (each an optional extra; see trackers.py)."""
    env_placement: str = "local"
    """Where the episodes' envs and sandboxes live: `local` (this process) or `ray` (one Ray
    actor per env, spread over the cluster's nodes; the student still acts here, batched).
    Was `executor` (still read, with a deprecation message): the CLI's `--executor ray` is
    another mechanism, whole rollouts on Ray workers."""
    ray_address: str | None = None
    """With `env_placement: ray`: the cluster (HOST:PORT of `ray start --head`, or `auto`);
    None starts a small local Ray."""

    def rollout_env(self) -> tuple[str, dict[str, Any]]:
        """The env id and kwargs the rollout engine makes: the env itself, or it in Ray."""
        if self.env_placement == "ray":
            kwargs = {"env_id": self.env_id, "env_kwargs": self.env_kwargs}
            return "mentorgym/Ray-v0", {**kwargs, "address": self.ray_address}
        return self.env_id, self.env_kwargs

    def validate(self) -> None:
        from mentorgym.training.trackers import check_report_to

        check_report_to(self.report_to)
        if self.env_placement not in ("local", "ray"):
            raise ConfigError(f"env_placement {self.env_placement!r}: use local or ray")
        for name in ("max_seq_len", "max_new_tokens", "concurrency"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.context_turns < 0:
            raise ConfigError(f"context_turns must be >= 0 (0: all), got {self.context_turns}")
        if self.sampler not in ("hf", "vllm"):
            raise ConfigError(f"sampler {self.sampler!r}: use hf or vllm")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"precision {self.precision!r}: use auto, bf16 or fp32")
        from mentorgym.training.lora import settings as lora_settings

        lora_settings(self.lora)
        if self.model_dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"model_dtype {self.model_dtype!r}: use float32 or bfloat16")
        from mentorgym.agents.tiny import SIZES

        if self.tiny_size not in SIZES:
            raise ConfigError(f"tiny_size {self.tiny_size!r}: use one of {sorted(SIZES)}")
        from mentorgym.agents.spec import parse_agent_spec

        if not parse_agent_spec(self.student).trainable:
            raise ConfigError(
                f"student {self.student!r} is not trainable; use tiny, a local path or a hub id"
            )

    def check_eval_seed(self, n_train_seeds: int) -> None:
        """Held-out seeds must not overlap the `n_train_seeds` training seeds from `seed`."""
        if self.eval_seed < self.seed + n_train_seeds:
            raise ConfigError(
                f"eval_seed {self.eval_seed} overlaps the training seeds "
                f"{self.seed}..{self.seed + n_train_seeds - 1}; raise eval_seed"
            )


@dataclass
class SupervisedConfig(CoreConfig):
    """SFT and DAgger: cross-entropy on a teacher's labels, optionally under torchrun."""

    teacher: str = "expert"
    """Agent spec of the teacher: `expert` (the env's oracle), `openai:URL#MODEL`, `hf:PATH`."""
    batch_size: int = 32
    """Examples (labeled turns) per micro-batch, global across processes."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    strategy: str = "ddp"
    """Under torchrun: `ddp` or `fsdp` (FSDP2 fully_shard)."""
    bad_lines: str = "raise"
    """A trajectory line that is not UTF-8, JSON or a trajectory: `raise` stops with the file
    and line; `skip` leaves it out, counted in the metrics (`bad_lines`) and logged."""

    def validate(self) -> None:
        super().validate()
        from mentorgym.agents.spec import parse_agent_spec

        parse_agent_spec(self.teacher)  # a ConfigError names the forms
        if self.bad_lines not in ("raise", "skip"):
            raise ConfigError(f"bad_lines {self.bad_lines!r}: use raise or skip")
        for name in ("batch_size", "grad_accum"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.strategy not in ("ddp", "fsdp"):
            raise ConfigError(f"strategy {self.strategy!r}: use ddp or fsdp")


@dataclass
class OnPolicyConfig(CoreConfig):
    """GRPO, OPD, SOD, OPSD, Skill-SD: each step the student samples fresh episode groups.

    Single process: these loops sample on the training process."""

    steps: int = 50
    """Optimizer steps; each samples a fresh batch of episodes."""
    tasks_per_step: int = 8
    """Distinct tasks (env seeds) per step; step k uses seeds seed + k*tasks_per_step + [0, n)."""
    group_size: int = 4
    """Episodes per task (GRPO's G); episodes per step = tasks_per_step * group_size."""
    micro_batch_episodes: int = 16
    """Episodes per micro-batch of the loss forward (a memory knob; a step always covers all
    its episodes, so the gradient does not depend on it)."""
    reward: str = "return"
    """Episode reward for group advantages and logs: `return` (sum of env rewards) or `success`."""
    rollout_temperature: float = 1.0
    """Student sampling temperature; logprobs of the new policy use the same temperature."""
    # Defaults that differ from the core's for sampled training.
    max_seq_len: int = 2048
    lr: float = 2e-4
    warmup_steps: int = 0
    save_every: int = 10
    eval_every: int = 0
    """Held-out evaluation every N steps (0: only at the end)."""
    eval_episodes: int = 64
    progress: bool = False
    tis_cap: float | None = None
    """Truncated importance sampling against the sampler/trainer mismatch (off when unset).
    The sampler's logprobs are the behaviour policy: each sampled token's loss term is
    multiplied by w_t = min(exp(lp_trainer_old - lp_sampler), tis_cap), with no gradient, and
    the loss's ratio is taken against the trainer's own pre-update logprobs instead of the
    sampler's. Worth setting with `sampler: vllm` (e.g. 2.0); must be >= 1."""

    def validate(self) -> None:
        super().validate()
        if self.tis_cap is not None and self.tis_cap < 1.0:
            raise ConfigError(f"tis_cap must be >= 1 (or unset), got {self.tis_cap}")
        for name in ("steps", "tasks_per_step", "group_size", "micro_batch_episodes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.reward not in ("return", "success"):
            raise ConfigError(f"reward {self.reward!r}: use return or success")
        if self.rollout_temperature <= 0:
            raise ConfigError("rollout_temperature must be > 0 (on-policy losses need sampling)")
        self.check_eval_seed(self.steps * self.tasks_per_step)

    @property
    def episodes_per_step(self) -> int:
        return self.tasks_per_step * self.group_size


# --- the loader -------------------------------------------------------------------------------

ALGORITHMS: dict[str, str] = {
    "sft": "mentorgym.training.sft",
    "bc": "mentorgym.training.sft",
    "dagger": "mentorgym.training.dagger",
    "opd": "mentorgym.training.opd",
    "sod": "mentorgym.training.sod",
    "skill_sd": "mentorgym.training.skill_sd",
    "opsd": "mentorgym.training.opsd",
    "grpo": "mentorgym.training.grpo",
}
"""`algorithm:` name -> the module that holds its `Config`, `train` and `dry_run`."""


def algorithm_module(name: str) -> types.ModuleType:
    """The module of an algorithm named in a config, or a ConfigError listing the known ones."""
    if name not in ALGORITHMS:
        raise ConfigError(
            f"unknown algorithm {name!r}; set `algorithm:` to one of {sorted(ALGORITHMS)}"
        )
    return importlib.import_module(ALGORITHMS[name])


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist; pass the path to a YAML file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from e
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(p)!r} is not text; pass a YAML config") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(p)!r} must hold a mapping of key: value, not {type(data).__name__}"
        )
    return data


def parse_sets(sets: list[str]) -> dict[str, str]:
    """`["lr=1e-3", "teacher=expert"]` -> {"lr": "1e-3", ...} (values still strings)."""
    out: dict[str, str] = {}
    for s in sets:
        key, sep, value = s.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {s!r} is not key=value; write e.g. --set lr=1e-4")
        out[key.strip()] = value.strip()
    return out


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML or command-line value to the declared type `tp` of field `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: cannot read {value!r} as {tp}: {'; '.join(errors)}")
    if origin is typing.Literal:
        for a in args:
            if value == a or (isinstance(value, str) and str(a) == value):
                return a
        raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
    if origin in (list, tuple):
        if isinstance(value, str):
            try:
                value = (
                    ast.literal_eval(value)
                    if value.strip().startswith(("[", "("))
                    else value.split(",")
                )
            except (ValueError, SyntaxError) as e:
                raise ConfigError(f"{key}: cannot read {value!r} as a list: {e}") from e
            if isinstance(value, list) and value == [""]:
                value = []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError as e:
                raise ConfigError(f"{key}: cannot read {value!r} as a mapping: {e}") from e
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return yaml.safe_load(value) if isinstance(value, str) else value
    if tp in (bool, int, float, str):
        return coerce_scalar(value, tp, key)
    raise ConfigError(f"{key}: field type {tp} is not supported by the config loader")


def coerce_scalar(value: Any, tp: type, key: str) -> Any:
    """`value` as a bool, int, float or str (YAML values, or strings from `--set`)."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value.replace("_", ""))
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: field type {tp} is not supported by the config loader")


RENAMED_KEYS: dict[str, str] = {"executor": "env_placement"}
"""Old config key -> its new name; the old one is still read, with a deprecation message."""


def renamed_keys(values: dict[str, Any]) -> dict[str, Any]:
    """`values` with renamed keys under their new names (each old one warned about once)."""
    out = dict(values)
    for old, new in RENAMED_KEYS.items():
        if old not in out:
            continue
        if new in out:
            raise ConfigError(f"config sets both {old!r} and {new!r}; keep only {new!r}")
        warnings.warn(
            f"config key {old!r} is deprecated and will be removed; write {new!r} instead",
            FutureWarning,
            stacklevel=3,
        )
        out[new] = out.pop(old)
    return out


def build_config(cls: type, values: dict[str, Any]) -> Any:
    """An instance of dataclass `cls` from a mapping; unknown keys are a ConfigError."""
    types_ = _field_types(cls)
    values = renamed_keys(values)
    unknown = [k for k in values if k not in types_]
    if unknown:
        raise ConfigError(
            f"unknown config key {unknown[0]!r} for {cls.__module__}.{cls.__name__}; "
            f"valid keys: {', '.join(sorted(types_))}"
        )
    kwargs = {k: coerce(v, types_[k], k) for k, v in values.items()}
    cfg = cls(**kwargs)
    check = getattr(cfg, "validate", None)
    if callable(check):
        check()
    return cfg


def load_config(path: str | Path, sets: list[str] | None = None) -> tuple[str, Any]:
    """(algorithm name, Config instance) from a YAML file plus `--set` overrides."""
    data = read_yaml(path)
    overrides = parse_sets(sets or [])
    algo = str(overrides.pop("algorithm", data.pop("algorithm", "") or ""))
    data.pop("algorithm", None)
    if not algo:
        raise ConfigError(
            f"config {str(path)!r} does not name its algorithm; add a line `algorithm: dagger` "
            f"(one of {sorted(ALGORITHMS)})"
        )
    module = algorithm_module(algo)
    values = {**data, **overrides}
    return algo, build_config(module.Config, values)


def config_to_dict(cfg: Any, algorithm: str | None = None) -> dict[str, Any]:
    """A plain mapping of a config (with `algorithm` first when given), ready for YAML."""
    d = dataclasses.asdict(cfg)
    return {"algorithm": algorithm, **d} if algorithm else d


def dump_config(cfg: Any, path: str | Path, algorithm: str | None = None) -> None:
    """Write `config.yaml` so the run can be repeated with `mentorgym train PATH`."""
    Path(path).write_text(
        yaml.safe_dump(config_to_dict(cfg, algorithm), sort_keys=False), encoding="utf-8"
    )


def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal under it in the class body)."""
    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def echo_config(cfg: Any, algorithm: str, width: int = 100) -> str:
    """The config printed at the start of a run: every `key: value`, packed into lines of
    `width` columns so the echo takes a few lines of a log (RUN/config.yaml has the YAML)."""
    lines, line = [], f"# {algorithm} config:"
    for key, value in config_to_dict(cfg).items():
        flow = yaml.safe_dump(value, default_flow_style=True, width=10**6)
        item = f"{key}: {flow.strip().removesuffix('...').strip()}"  # scalars end with "..."
        if len(line) + 2 + len(item) > width:
            lines.append(line)
            line = " " * 2 + item
        else:
            line += ("  " if line.strip() else "") + item
    return "\n".join([*lines, line]) + "\n"
