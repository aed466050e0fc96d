"""The rollout engine with scripted agents: trajectories, mixture and relabeling, resume, failures."""

import json
import threading
import time

import gymnasium
import pytest

from mentorgym.agents.base import Action, BatchedPolicy
from mentorgym.agents.mixture import MixturePolicy
from mentorgym.agents.rollout import episode_order, run, summarize
from mentorgym.agents.scripted import ExpertPolicy, RandomPolicy, ReplayPolicy
from mentorgym.agents.specs import load_policy
from mentorgym.agents.trajectory import Trajectory, context, read_trajectories
from mentorgym.envs.base import TextEnv, parse_action, system, user
from mentorgym.errors import ConfigError, RequestError, SandboxError

TOY = "toy/ReverseWord-v0"


class CountEnv(TextEnv):
    """Say the next number, three times; seed 13 makes step() raise SandboxError (a dead
    container), seed 66 a RuntimeError (a bug in the env)."""

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.n, self.seed_ = 0, seed
        return [system("Count up."), user("0")], {"task_id": f"count-{seed}"}

    def step(self, action):
        if self.seed_ == 13:
            raise SandboxError("container vanished")
        if self.seed_ == 66:
            raise RuntimeError("a bug in the env")
        parsed = parse_action(action)
        if parsed.answer != str(self.n + 1):
            return self.format_error(f"expected <answer>{self.n + 1}</answer>")
        self.n += 1
        return [user(str(self.n))], 1.0, self.n == 3, False, {"success": self.n == 3}

    def expert_action(self):
        return f"<answer>{self.n + 1}</answer>"

    def on_truncation(self):
        return 0.5, {"graded_at": "turn_limit", "counted": self.n}


gymnasium.register("test/Count-v0", entry_point=CountEnv, max_episode_steps=5)


class Recorder(BatchedPolicy):
    """Answers wrongly and records batch sizes, to see that calls are batched."""

    name = "recorder"

    def __init__(self):
        self.batches = []

    def act_batch(self, histories):
        self.batches.append(len(histories))
        return [
            Action("<answer>0</answer>", token_ids=[1, 2], logprobs=[-0.1, -0.2]) for _ in histories
        ]


def test_expert_trajectories_follow_the_schema(tmp_path):
    out = tmp_path / "t.jsonl"
    trajs = run("test/Count-v0", ExpertPolicy(), n=3, seed=0, out=out)
    assert [t.success for t in trajs] == [True] * 3
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 3
    d = lines[0]
    assert d["schema"] == 1 and d["env_id"] == "test/Count-v0" and d["return"] == 3.0
    turn = d["turns"][0]
    assert set(turn) >= {
        "observation",
        "actor",
        "action",
        "token_ids",
        "logprobs",
        "teacher_action",
        "reward",
        "timing",
        "info",
    }
    assert set(turn["timing"]) == {"policy_s", "env_s"}
    t = Trajectory.from_dict(d)
    assert context(t, 2)[-1] == {"role": "user", "content": "2"}
    assert [m["role"] for m in context(t, 1)] == ["system", "user", "assistant", "user"]


class SlowFirstCall(Recorder):
    """Its first batch takes a second: the other episodes' requests queue up meanwhile."""

    def act_batch(self, histories):
        if not self.batches:
            time.sleep(1.0)
        return super().act_batch(histories)


def test_requests_that_wait_together_are_batched():
    rec = SlowFirstCall()
    run("test/Count-v0", rec, n=6, concurrency=6)
    assert rec.batches[1] >= 6 - rec.batches[0]  # all who waited went in one call
    assert sum(rec.batches) == 6 * 5


def test_policy_calls_are_batched_across_episodes():
    rec = Recorder()
    trajs = run("test/Count-v0", rec, n=6, concurrency=6, engine="lockstep")
    assert rec.batches[0] == 6
    assert all(t.truncated and not t.success for t in trajs)
    assert trajs[0].turns[0].token_ids == [1, 2] and trajs[0].turns[0].info["format_error"]
    assert summarize(trajs)["format_error_rate"] == 1.0
    last = trajs[0].turns[-1]  # the turn limit cut the episode: the env graded the final state
    assert last.info["graded_at"] == "turn_limit" and last.reward == 0.5
    assert all("graded_at" not in t.info for t in trajs[0].turns[:-1])


def test_mixture_records_actor_and_teacher_label_every_turn():
    trajs = run("test/Count-v0", Recorder(), n=8, teacher=ExpertPolicy(), beta=0.5, mixture_seed=1)
    actors = {turn.actor for t in trajs for turn in t.turns}
    assert actors == {"student", "teacher"}
    for t in trajs:
        for turn in t.turns:
            assert turn.teacher_action is not None
            if turn.actor == "teacher":
                assert turn.teacher_action == turn.action
    # the teacher's label is right for the state the student was in
    t = trajs[0]
    for turn in t.turns:
        assert turn.teacher_action.startswith("<answer>")


def test_no_relabel_leaves_labels_empty():
    trajs = run("test/Count-v0", Recorder(), n=2, teacher=ExpertPolicy(), beta=0.5, relabel=False)
    assert all(
        turn.teacher_action is None or turn.actor == "teacher" for t in trajs for turn in t.turns
    )


def test_mixture_beta_bounds_and_frequency():
    with pytest.raises(ValueError):
        MixturePolicy(Recorder(), Recorder(), beta=1.5)
    m = MixturePolicy(Recorder(), Recorder(), beta=0.25, seed=0)
    picks = [m.choose() for _ in range(4000)]
    assert 0.2 < picks.count("teacher") / 4000 < 0.3


def test_resume_skips_finished_episodes(tmp_path):
    out = tmp_path / "r.jsonl"
    run(TOY, ExpertPolicy(), n=3, out=out)
    first = out.read_text().splitlines()
    rec = Recorder()
    trajs = run(TOY, rec, n=5, out=out, resume=True)
    lines = out.read_text().splitlines()
    assert lines[:3] == first and len(lines) == 5
    assert sum(rec.batches) == 2  # only the two new episodes were played
    assert [t.seed for t in trajs] == [0, 1, 2, 3, 4]


def test_torn_last_line_is_skipped(tmp_path):
    out = tmp_path / "torn.jsonl"
    run(TOY, ExpertPolicy(), n=2, out=out)
    with open(out, "a") as f:
        f.write('{"schema": 1, "env_id": "toy/Rev')
    assert len(list(read_trajectories(out))) == 2


@pytest.mark.parametrize("engine", ["async", "lockstep"])
def test_a_dead_sandbox_ends_only_its_episode(engine):
    trajs = run("test/Count-v0", ExpertPolicy(), n=3, seeds=[12, 13, 14], engine=engine)
    assert [t.success for t in trajs] == [True, False, True]
    bad = trajs[1]
    assert bad.truncated and "container vanished" in bad.turns[-1].info["error"]
    assert summarize(trajs)["env_errors"] == 1


@pytest.mark.parametrize("engine", ["async", "lockstep"])
def test_a_bug_in_an_env_propagates(engine):
    with pytest.raises(RuntimeError, match="a bug in the env"):
        run("test/Count-v0", ExpertPolicy(), n=3, seeds=[12, 66, 14], engine=engine)


def test_random_and_replay_agents(tmp_path):
    stats = summarize(run(TOY, RandomPolicy(), n=40))
    assert stats["success_rate"] < 0.5
    script = tmp_path / "script.json"
    script.write_text(
        json.dumps(["<answer>1</answer>", "<answer>2</answer>", "<answer>3</answer>"])
    )
    trajs = run("test/Count-v0", ReplayPolicy(script), n=2)
    assert all(t.success for t in trajs)
    assert run("test/Count-v0", RandomPolicy(), n=1)[0].turns  # random falls back to the text space


def test_specs_reject_unknown_and_bad_replay(tmp_path):
    with pytest.raises(ConfigError, match="unknown agent spec"):
        load_policy("gpt-7")
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}')
    with pytest.raises(ConfigError, match="JSON list"):
        load_policy(f"replay:{bad}")
    with pytest.raises(ConfigError, match="openai:BASE_URL#MODEL"):
        load_policy("openai:http://127.0.0.1:9/v1")


def test_all_tasks_needs_a_finite_task_set():
    with pytest.raises(ConfigError, match="no finite task set"):
        run(TOY, ExpertPolicy(), all_tasks=True)


class DeadEndEnv(CountEnv):
    """After two turns the oracle has no move (like Sokoban with a box stuck in a corner)."""

    def expert_action(self):
        return None if self.n >= 2 else super().expert_action()


gymnasium.register("test/DeadEnd-v0", entry_point=DeadEndEnv, max_episode_steps=4)


def test_a_teacher_without_a_move_hands_the_turn_to_the_student_and_labels_nothing():
    trajs = run("test/DeadEnd-v0", Recorder(), n=4, teacher=ExpertPolicy(), beta=1.0)
    for t in trajs:
        assert [turn.actor for turn in t.turns[:2]] == ["teacher", "teacher"]
        assert all(turn.actor == "student" and turn.teacher_action is None for turn in t.turns[2:])


def test_an_agent_without_a_move_is_a_clear_error():
    with pytest.raises(ConfigError, match="has no action for this state"):
        run("test/DeadEnd-v0", ExpertPolicy(), n=1)


# --- the asynchronous engine ---------------------------------------------------------------------


def _comparable(t: Trajectory) -> dict:
    d = t.to_dict()
    d["meta"].pop("reset_s", None)
    for turn in d["turns"]:
        turn.pop("timing")
    return d


@pytest.mark.parametrize("agent", ["expert", "replay", "mixture"])
def test_async_engine_gives_the_lockstep_engines_trajectories(agent, tmp_path):
    script = tmp_path / "moves.json"
    script.write_text(json.dumps(["<answer>Up</answer>", "<answer>Left</answer>"] * 20))
    kwargs: dict = {"n": 6, "seed": 3, "concurrency": 3}
    if agent == "expert":
        policy = ExpertPolicy()
    elif agent == "replay":
        policy = ReplayPolicy(script)
    else:  # the replay student with the oracle as teacher, a coin per turn
        policy = ReplayPolicy(script)
        kwargs |= {"teacher": ExpertPolicy(), "beta": 0.5, "mixture_seed": 11}
    lockstep = run("mentorgym/Sokoban-v0", policy, engine="lockstep", **kwargs)
    asynchronous = run("mentorgym/Sokoban-v0", policy, **kwargs)
    assert [_comparable(t) for t in asynchronous] == [_comparable(t) for t in lockstep]
    if agent == "mixture":
        assert {turn.actor for t in lockstep for turn in t.turns} == {"student", "teacher"}


class GatedEnv(CountEnv):
    """Seed 0's first step blocks until every other episode has finished (or 60 s pass):
    under a round barrier nobody could finish, so the others finishing first shows there
    is none."""

    others_done = threading.Event()
    finished: list[int] = []
    lock = threading.Lock()

    def step(self, action):
        if self.seed_ == 0 and self.n == 0:
            GatedEnv.others_done.wait(timeout=60)
        out = super().step(action)
        if out[2] or out[3]:
            with GatedEnv.lock:
                GatedEnv.finished.append(self.seed_)
                if len(GatedEnv.finished) == 3 and 0 not in GatedEnv.finished:
                    GatedEnv.others_done.set()
        return out


gymnasium.register("test/Gated-v0", entry_point=GatedEnv, max_episode_steps=5)


def test_a_slow_env_step_holds_up_only_its_own_episode(tmp_path):
    out = tmp_path / "gated.jsonl"
    GatedEnv.others_done.clear()
    GatedEnv.finished.clear()
    trajs = run("test/Gated-v0", ExpertPolicy(), n=4, seed=0, concurrency=4, out=out)
    assert GatedEnv.others_done.is_set()  # released by the others, not by the timeout
    assert GatedEnv.finished[-1] == 0 and all(t.success for t in trajs)
    written = [json.loads(line)["seed"] for line in out.read_text().splitlines()]
    assert sorted(written) == [0, 1, 2, 3]  # in the order they ended
    # trainers read a file back in the order its episodes were specified
    assert [t.seed for t in sorted(read_trajectories(out), key=episode_order)] == [0, 1, 2, 3]


class RefusesLongHistories(BatchedPolicy):
    """Refuses (as a server answering 400 would) once a history has more than 3 messages,
    for seed 21's episode only."""

    name = "refuser"
    takes_episode_keys = True

    def try_act_batch(self, histories, episodes):
        out = []
        for h, key in zip(histories, episodes, strict=True):
            if key.endswith("seed=21") and len(h) > 3:
                out.append(RequestError("prompt past the context window"))
            else:
                out.append(Action(f"<answer>{(len(h) - 1) // 2 + 1}</answer>"))
        return out


@pytest.mark.parametrize("engine", ["async", "lockstep"])
def test_a_refused_request_ends_only_its_episode(engine):
    trajs = run("test/Count-v0", RefusesLongHistories(), seeds=[20, 21, 22], engine=engine)
    assert [t.success for t in trajs] == [True, False, True]
    bad = trajs[1]
    assert bad.truncated and len(bad.turns) == 1
    assert bad.meta["truncated_reason"] == "request_error"
    assert "context window" in bad.meta["error"]
    assert summarize(trajs)["request_errors"] == 1


def test_samples_per_seed_are_distinct_episodes_of_one_seed(tmp_path):
    out = tmp_path / "groups.jsonl"
    trajs = run(TOY, RandomPolicy(), seeds=[5, 9], samples_per_seed=3, out=out)
    assert [t.seed for t in trajs] == [5, 5, 5, 9, 9, 9]
    keys = [t.meta["episode_key"] for t in trajs]
    assert keys == ["seed=5", "seed=5/sample=1", "seed=5/sample=2"] + [
        "seed=9",
        "seed=9/sample=1",
        "seed=9/sample=2",
    ]
    rec = Recorder()
    again = run(TOY, rec, seeds=[5, 9], samples_per_seed=4, out=out, resume=True)
    assert sum(rec.batches) == 2 * len(again[3].turns)  # only the two fourth samples played
    assert [t.meta["episode_key"] for t in again][:3] == keys[:3]


def test_episode_order_undoes_the_order_episodes_ended_in():
    def traj(key: str | None) -> Trajectory:
        return Trajectory(env_id="e", seed=None, meta={"episode_key": key} if key else {})

    keys = ["seed=10/sample=1", None, "seed=2", "seed=10", "seed=-1", "index=3/sample=2"]
    ordered = sorted((traj(k) for k in keys), key=episode_order)
    assert [t.meta.get("episode_key") for t in ordered] == [
        "seed=-1",
        "seed=2",
        "index=3/sample=2",
        "seed=10",
        "seed=10/sample=1",
        None,
    ]


def test_truncation_rules_are_applied_at_make_time():
    """`mentorgym.make` wraps every env in `TruncationRules`: a driver of its own (here a plain
    loop, no rollout engine) gets the env's `on_truncation` reward and info on the truncated
    step, once; `gymnasium.make` alone does not apply it."""
    import mentorgym
    from mentorgym.envs.base import TruncationRules

    env = mentorgym.make("test/Count-v0")
    assert isinstance(env, TruncationRules)
    env.reset(seed=0)
    steps = [env.step("<answer>9</answer>") for _ in range(5)]
    *_, (_, reward, terminated, truncated, info) = steps
    assert truncated and not terminated
    assert info["graded_at"] == "turn_limit" and reward == 0.5
    assert all("graded_at" not in s[4] for s in steps[:-1])
    bare = gymnasium.make("test/Count-v0")
    bare.reset(seed=0)
    *_, last = [bare.step("<answer>9</answer>") for _ in range(5)]
    assert last[3] and "graded_at" not in last[4]
