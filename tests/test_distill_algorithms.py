"""The on-policy family (GRPO, OPD, SOD, Skill-SD, OPSD): token bookkeeping, skills, and a
two-step end-to-end run of each on the tiny model, on CPU, writing a checkpoint HFPolicy loads.

The smoke runs use a short-horizon Sokoban registered here (3 turns) and 4-token turns so
that each takes seconds; one math run covers the tool env and OPSD's reference solution.
"""

from __future__ import annotations

import importlib
import json

import gymnasium
import pytest
import torch

from mentorgym.agents.trajectory import Trajectory, Turn, context
from mentorgym.envs.base import TextEnv
from mentorgym.training.config import build_config

SHORT_SOKOBAN = "mentorgym-test/SokobanShort-v0"
if SHORT_SOKOBAN not in gymnasium.registry:
    gymnasium.register(
        id=SHORT_SOKOBAN,
        entry_point="mentorgym.envs.sokoban:SokobanEnv",
        max_episode_steps=3,
        kwargs={"dim_room": (6, 6), "num_boxes": 1},
    )


class LengthRewardEnv(TextEnv):
    """One turn whose reward is the length of the reply: group members that write different
    replies get different rewards, so GRPO's advantages are not all zero."""

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._started = True
        return [{"role": "user", "content": "Write anything."}], {}

    def step(self, action):
        if not getattr(self, "_started", False):
            raise self.step_before_reset()
        return [], float(len(action)), True, False, {"success": len(action) > 8}


LENGTH_ENV = "mentorgym-test/LengthReward-v0"
if LENGTH_ENV not in gymnasium.registry:
    gymnasium.register(id=LENGTH_ENV, entry_point=LengthRewardEnv, max_episode_steps=1)


@pytest.fixture(scope="module")
def tiny_path() -> str:
    from mentorgym.agents.tiny import default_tiny_path

    return str(default_tiny_path())


@pytest.fixture(scope="module")
def tok(tiny_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_path)


def _cfg(algo: str, tiny_path: str, **over):
    module = importlib.import_module(f"mentorgym.training.{algo}")
    values = dict(
        env_id=SHORT_SOKOBAN,
        student=tiny_path,
        steps=2,
        tasks_per_step=2,
        group_size=2,
        max_new_tokens=4,
        eval_episodes=2,
        save_every=1,
        concurrency=4,
        micro_batch_episodes=2,
        lr=1e-3,
    )
    values.update(over)
    return module, build_config(module.Config, values)


# --- token bookkeeping ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "context_turns,system_prompt", [(0, True), (0, False), (1, False), (2, True)]
)
def test_episode_encoding_uses_sampled_ids_and_matches_sampler_logprobs(
    tiny_path, tok, context_turns, system_prompt
):
    """The training-side logprobs of the exact sampled ids equal the sampler's (temperature 1):
    the sequences are what the policy saw, token for token, with the whole conversation in
    view or a window of it."""
    from mentorgym.agents.hf import HFPolicy
    from mentorgym.agents.rollout import run
    from mentorgym.training.data import encode_episode, make_batch
    from mentorgym.training.scoring import hidden_at, logprobs_from_hidden

    policy = HFPolicy(
        tiny_path,
        temperature=1.0,
        max_new_tokens=6,
        device="cpu",
        seed=3,
        context_turns=context_turns,
        system_prompt=system_prompt,
    )
    trajs = run(SHORT_SOKOBAN, policy, 2, seed=5)
    eps = [encode_episode(tok, t, 4096, None, context_turns, system_prompt) for t in trajs]
    for i, traj in enumerate(trajs):  # the policy re-encodes each episode's turns as sampled
        for j, turn in enumerate(traj.turns):
            policy.sampled.remember(f"episode-{i}", j, turn.action, turn.token_ids)
    for i, (ep, traj) in enumerate(zip(eps, trajs)):
        assert len(ep.spans) == len(traj.turns)
        assert len(ep.seqs) == (1 if context_turns == 0 else len(traj.turns))
        for (r, a, b), k in zip(ep.spans, ep.turns):
            assert ep.seqs[r][a:b] == traj.turns[k].token_ids
            if context_turns:  # each turn's sequence is its prompt, then its sampled ids
                assert ep.seqs[r][:a] == policy.encode(context(traj, k), episode=f"episode-{i}")
    batch = make_batch(eps, trajs, tok.pad_token_id, torch.device("cpu"))
    assert batch.input_ids_RT.shape[0] == sum(len(e.seqs) for e in eps)
    with torch.no_grad():
        h = hidden_at(policy.model, batch)
        lp_BL = logprobs_from_hidden(policy.model, h, batch.target_BL, 1.0)
    diff = ((lp_BL - batch.logp_old_BL).abs() * batch.mask_BL).max()
    assert diff < 1e-3
    # step ids number the turns of each episode
    assert batch.step_ids_BL[0][batch.mask_BL[0] > 0].unique().tolist() == list(
        range(len(trajs[0].turns))
    )


def test_note_moves_positions_not_ids(tok):
    from mentorgym.training.data import encode_episode

    ids = tok("<answer>Up</answer>", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    traj = Trajectory(
        "x",
        seed=1,
        turns=[
            Turn(
                [{"role": "system", "content": "sys"}, {"role": "user", "content": "go"}],
                "student",
                "<answer>Up</answer>",
                token_ids=ids,
                logprobs=[-1.0] * len(ids),
            ),
            Turn(
                [{"role": "user", "content": "again"}],
                "student",
                "<answer>Up</answer>",
                token_ids=ids,
                logprobs=[-1.0] * len(ids),
            ),
        ],
    )
    plain = encode_episode(tok, traj, 4096)
    noted = encode_episode(tok, traj, 4096, note="secret plan: Up Up")
    shift = len(noted.seqs[0]) - len(plain.seqs[0])
    assert shift > 0
    assert [(r, a + shift, b + shift) for r, a, b in plain.spans] == noted.spans
    assert all(noted.seqs[r][a:b] == ids for r, a, b in noted.spans)
    # a sequence limit drops whole turns and counts them
    cut = encode_episode(tok, traj, plain.spans[1][1] + 1)
    assert cut.turns == [0] and cut.dropped_turns == 1
    # windowed: one sequence per turn, the note in each, the second turn without the first
    windowed = encode_episode(tok, traj, 4096, "secret plan: Up Up", context_turns=1)
    assert [r for r, _, _ in windowed.spans] == [0, 1] and windowed.turns == [0, 1]
    second = tok.decode(windowed.seqs[1])
    assert "secret plan" in second and "again" in second and "go" not in second
    assert all(windowed.seqs[r][a:b] == ids for r, a, b in windowed.spans)
    plain_windowed = encode_episode(tok, traj, 4096, None, context_turns=1)
    longest = max(len(seq) for seq in plain_windowed.seqs)
    short = encode_episode(tok, traj, longest - 1, None, context_turns=1)
    assert short.dropped_turns >= 1 and len(short.seqs) == 2 - short.dropped_turns


# --- skills -----------------------------------------------------------------------------------------


def test_parse_skill_json_handles_invalid_replies():
    from mentorgym.training.skills import parse_skill_json

    good = 'Sure! {"success_analysis": "a", "mistake_analysis": "b", "golden_workflow": "c"} done'
    skill = parse_skill_json(good)
    assert skill is not None and (skill.success_analysis, skill.golden_workflow) == ("a", "c")
    assert parse_skill_json("no json here") is None
    assert parse_skill_json('{"success_analysis": "a"}') is None
    assert (
        parse_skill_json('{"success_analysis": "a", "mistake_analysis": 3, "golden_workflow": "c"}')
        is None
    )
    assert (
        parse_skill_json(
            '{broken {"success_analysis": "x", "mistake_analysis": "y", "golden_workflow": "z"}'
        )
        is not None
    )


def test_llm_summarizer_counts_invalid_json():
    from mentorgym.agents.base import Action, BatchedPolicy
    from mentorgym.training.skills import LLMSummarizer

    class Fixed(BatchedPolicy):
        name = "fixed"

        def __init__(self, text: str):
            self.text = text

        def act(self, messages):
            assert (
                "JSON" in messages[0]["content"]
                and "[assistant] <answer>Up</answer>" in messages[1]["content"]
            )
            return Action(self.text)

    traj = Trajectory(
        "x",
        seed=0,
        turns=[Turn([{"role": "user", "content": "grid"}], "student", "<answer>Up</answer>")],
    )
    bad = LLMSummarizer(Fixed("I think it went fine."))
    assert bad.summarize(traj) is None and bad.invalid == 1
    ok = LLMSummarizer(
        Fixed('{"success_analysis": "s", "mistake_analysis": "m", "golden_workflow": "g"}')
    )
    assert ok.summarize(traj).mistake_analysis == "m" and ok.invalid == 0


def test_skill_buffer_ucb_tries_each_then_prefers_the_best():
    from mentorgym.training.skills import Skill, SkillBuffer

    buf = SkillBuffer(capacity=2, c=0.1)
    assert buf.select(2) == [None, None]
    a, b = Skill("a", "", ""), Skill("b", "", "")
    buf.add(a), buf.add(b)
    assert buf.select(1) == [a]
    # one step's picks spread over the arms: each pick counts as a pending use
    assert buf.select(2) == [a, b]
    buf.update(a, 1.0)
    assert buf.select(1) == [b]  # untried first
    buf.update(b, -1.0)
    assert buf.select(1) == [a]
    assert buf.select(3).count(a) >= 2  # the better arm gets most of a step's picks
    c = Skill("c", "", "")
    assert buf.add(c) and b not in buf.skills  # the worst used skill is replaced
    full = SkillBuffer(capacity=1)
    full.add(Skill("x", "", ""))
    assert not full.add(Skill("y", "", ""))  # never evict an untried skill


def test_rule_summaries_come_from_the_env_and_transfer():
    """The rule-based skills are the env's hook; they describe behaviour, never this task's
    moves or answer (another task's facts are noise to the teacher)."""
    from mentorgym.training.skills import RuleSummarizer

    soko = Trajectory(
        "mentorgym/Sokoban-v0",
        seed=0,
        turns=[
            Turn(
                [{"role": "user", "content": "Boxes on targets: 1/2\ng1"}],
                "student",
                "Up",
                reward=-0.1,
                info={"format_error": True, "boxes_on_target": 1},
            ),
            Turn(
                [{"role": "tool", "content": "bad"}, {"role": "user", "content": "g2"}],
                "student",
                "<answer>Left</answer>",
                reward=-1.1,
                info={"boxes_on_target": 0},
            ),
        ],
        truncated=True,
    )
    summarizer = RuleSummarizer(SHORT_SOKOBAN, {})
    sk = summarizer.summarize(soko)
    summarizer.close()
    assert "1 of 2 turns" in sk.mistake_analysis and "off a target 1" in sk.mistake_analysis
    assert "ran out of turns" in sk.mistake_analysis and "<answer>" in sk.golden_workflow
    solved = Trajectory(
        "mentorgym/Sokoban-v0",
        seed=0,
        turns=[
            Turn(
                [{"role": "user", "content": "Boxes on targets: 0/1\ng"}],
                "student",
                "<answer>Right</answer>",
                info={"boxes_on_target": 1},
            )
        ],
        success=True,
    )
    summarizer = RuleSummarizer(SHORT_SOKOBAN, {})
    sk = summarizer.summarize(solved)
    summarizer.close()
    assert "1 pushes put a box on a target" in sk.success_analysis
    assert "Right" not in sk.success_analysis + sk.mistake_analysis  # no move list
    math = Trajectory(
        "mentorgym/MathTools-v0",
        seed=0,
        turns=[
            Turn(
                [{"role": "user", "content": "q"}],
                "student",
                "<answer>5</answer>",
                info={"answer": "5", "expected": "7"},
            )
        ],
    )
    summarizer = RuleSummarizer("mentorgym/MathTools-v0", {"python_cmd": "python3 -S"})
    sk = summarizer.summarize(math)
    summarizer.close()
    text = sk.success_analysis + sk.mistake_analysis
    assert "wrong final answer" in text and "without computing" in text
    assert "5" not in text and "7" not in text  # no answer of this problem


def test_generic_summary_hook_and_step_before_reset():
    """Every env has the generic skill hook, and step before reset is the same error in each."""
    from mentorgym import make
    from mentorgym.envs.base import TextEnv

    class Bare(TextEnv):
        def step(self, action):
            raise self.step_before_reset()

    sk = Bare().summarize_for_skill(
        [Turn([], "student", "x", info={"format_error": True})], False, True
    )
    assert "1 of 1 turns" in sk.mistake_analysis and "ran out of turns" in sk.mistake_analysis
    assert Bare().summarize_for_skill([], True, False) is None
    for env_id, kwargs in [(SHORT_SOKOBAN, {}), ("mentorgym/MathTools-v0", {})]:
        env = make(env_id, **kwargs)
        with pytest.raises(gymnasium.error.ResetNeeded, match="before reset"):
            env.unwrapped.step("<answer>Up</answer>")
        env.close()
    with pytest.raises(gymnasium.error.ResetNeeded, match="before reset"):
        Bare().step("x")


def test_group_advantages_and_pg_gradient():
    """Group advantages by hand, and the clipped loss's gradient: it pushes up the logprob of an
    episode with positive advantage and down the one with negative advantage, and is zero for
    a group whose members tied."""
    from mentorgym.training.losses import clipped_pg_loss
    from mentorgym.training.onpolicy import make_group, set_grpo_advantages

    def traj(r: float) -> Trajectory:
        return Trajectory("x", turns=[Turn([], "student", "a", reward=r)], success=r > 0)

    def group_advantages(groups, reward, scale):
        typed = [make_group(g, reward) for g in groups]
        set_grpo_advantages(typed, scale)
        return [a for g in typed for a in g.advantages]

    adv = group_advantages([[traj(1.0), traj(0.0)], [traj(0.5), traj(0.5)]], "return", True)
    assert adv[0] > 0 > adv[1] and adv[2] == adv[3] == 0.0
    assert group_advantages([[traj(2.0), traj(-1.0)]], "success", False) == [0.5, -0.5]
    logp_BL = torch.full((4, 3), -1.0, requires_grad=True)
    mask_BL = torch.ones(4, 3)
    loss = clipped_pg_loss(logp_BL, logp_BL.detach(), torch.tensor(adv), mask_BL, 0.2, 0.28)
    loss.backward()
    g_B = logp_BL.grad.sum(1)
    # gradient descent raises logp where the gradient is negative: the winner's
    assert g_B[0] < 0 < g_B[1] and g_B[2] == g_B[3] == 0.0
    # at ratio 1 the gradient of -mean(ratio * A) is -A / (number of tokens)
    assert torch.allclose(logp_BL.grad, -torch.tensor(adv)[:, None].expand(4, 3) / 12)


def test_privileged_context():
    from mentorgym import make
    from mentorgym.training.opsd import privileged_context

    env = make("mentorgym/MathTools-v0")
    try:
        note = privileged_context(env, 4, 50)
        env.reset(seed=4)
        assert env.unwrapped.reference_solution() in note
    finally:
        env.close()
    env = make(SHORT_SOKOBAN)
    try:
        note = privileged_context(env, 4, 50)
        assert "expert plan" in note and any(m in note for m in ("Up", "Down", "Left", "Right"))
    finally:
        env.close()


def test_bad_settings_are_config_errors(tiny_path):
    from mentorgym.errors import ConfigError

    with pytest.raises(ConfigError, match="in-process teacher"):
        _cfg("opd", tiny_path, teacher="openai:http://127.0.0.1:1/v1#m", loss="jsd")
    with pytest.raises(ConfigError, match="eval_seed"):
        _cfg("grpo", tiny_path, eval_seed=1)
    with pytest.raises(ConfigError, match="tis_cap must be >= 1"):
        _cfg("sod", tiny_path, tis_cap=0.5)


# --- end to end: two steps each ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "algo,over",
    [
        ("grpo", {"env_id": LENGTH_ENV, "max_new_tokens": 12, "rollout_temperature": 2.0}),
        ("opd", {"loss": "jsd", "jsd_beta": 0.5}),
        ("opd", {"loss": "sampled"}),
        ("sod", {}),
        ("skill_sd", {"sync_every": 1, "sd_coef": 1.0}),
        ("opd", {"loss": "jsd", "context_turns": 1, "system_prompt": False, "tis_cap": 2.0}),
        # truncated importance sampling against the sampler (here `hf`, which returns logprobs)
        ("opd", {"loss": "sampled", "tis_cap": 2.0}),
    ],
)
def test_two_steps_end_to_end(algo, over, tiny_path, tmp_path):
    from mentorgym.agents.hf import HFPolicy

    if algo in ("opd", "sod"):
        over = {"teacher": f"hf:{tiny_path}", **over}
    module, cfg = _cfg(algo, tiny_path, **over)
    final = module.train(cfg, tmp_path, resume=False)
    assert (final / "config.json").exists()
    policy = HFPolicy(str(final), max_new_tokens=4, device="cpu")
    # the final student acts from the context window it was trained with
    assert (policy.context_turns, policy.system_prompt) == (
        over.get("context_turns", 0),
        over.get("system_prompt", True),
    )
    assert policy.act([{"role": "user", "content": "hi"}]).token_ids
    import json

    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 2 and records[-1]["kind"] == "eval"
    # a gradient flowed and the student moved
    assert all(r["loss_tokens"] > 0 for r in train)
    flowed = [r["grad_norm"] > 0 for r in train]
    # Skill-SD's first step has no skill yet and the short Sokoban groups tie (zero advantage).
    assert flowed[-1] if algo == "skill_sd" else all(flowed)
    assert _weights_moved(tiny_path, policy)
    _assert_sampler_gap_logged(train)
    if algo == "grpo":
        assert any(r["zero_adv_groups"] < cfg.tasks_per_step for r in train)
    if algo == "sod":
        assert all("first_turn_divergence" in r and "turn_weight" in r for r in train)
    if algo == "skill_sd":
        ckpt = tmp_path / "checkpoints" / (tmp_path / "checkpoints" / "latest").read_text().strip()
        assert json.loads((ckpt / "state.json").read_text())["extra"]["skills"]


@pytest.mark.slow
def test_opsd_math_and_resume(tiny_path, tmp_path):
    """OPSD's two steps: math with the python tool (reference solution as privileged context),
    one step, then a resume that continues from the checkpoint instead of starting over."""
    module, cfg = _cfg(
        "opsd",
        tiny_path,
        env_id="mentorgym/MathTools-v0",
        env_kwargs={"python_cmd": "python3 -S"},
        steps=1,
        max_new_tokens=8,
        loss="sampled",
        tasks_per_step=1,
    )
    module.train(cfg, tmp_path, resume=False)
    module, cfg = _cfg(
        "opsd",
        tiny_path,
        env_id="mentorgym/MathTools-v0",
        env_kwargs={"python_cmd": "python3 -S"},
        steps=2,
        max_new_tokens=8,
        loss="sampled",
        tasks_per_step=1,
    )
    module.train(cfg, tmp_path, resume=True)
    steps = [
        r for r in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"kind": "train"' in r
    ]
    assert len(steps) == 2
    _assert_sampler_gap_logged([json.loads(r) for r in steps])
    from mentorgym.agents.hf import HFPolicy

    assert _weights_moved(tiny_path, HFPolicy(str(tmp_path / "final"), device="cpu"))


def _assert_sampler_gap_logged(train: list[dict]) -> None:
    """Every step logs the sampler-vs-trainer logprob gap; with `sampler: hf` (the same model
    in the same process, float32) it is a rounding error."""
    for r in train:
        mean, largest = r["sampler_logprob_gap_mean"], r["sampler_logprob_gap_max"]
        assert 0.0 <= mean <= largest < 1e-2, r


def _weights_moved(start: str, policy) -> bool:
    from mentorgym.agents.hf import HFPolicy

    before = HFPolicy(start, device="cpu").model.state_dict()
    after = policy.model.state_dict()
    return any(not torch.equal(before[k], after[k]) for k in after if k in before)


def test_chunked_logprobs_match_whole_and_grad():
    """Chunked (checkpointed) logprobs equal the one-block computation, values and gradients."""
    from mentorgym.training.scoring import logprobs_from_hidden

    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    model = torch.nn.Module()
    model.get_output_embeddings = lambda: head  # the one method logprobs_from_hidden reads
    h1 = torch.randn(3, 7, 8, requires_grad=True)
    h2 = h1.detach().clone().requires_grad_(True)
    target = torch.randint(0, 50, (3, 7))
    whole = logprobs_from_hidden(model, h1, target, 0.7, chunk=10_000)
    whole.sum().backward()
    g_h, g_w = h1.grad.clone(), head.weight.grad.clone()
    head.weight.grad = None
    chunked = logprobs_from_hidden(model, h2, target, 0.7, chunk=4)  # 21 positions: 6 chunks
    chunked.sum().backward()
    assert torch.allclose(whole, chunked, atol=1e-6)
    assert torch.allclose(h2.grad, g_h, atol=1e-6)
    assert torch.allclose(head.weight.grad, g_w, atol=1e-6)
