"""The on-policy family (GRPO, OPD, SOD, Skill-SD, OPSD): token bookkeeping, skills, and a
two-step end-to-end run of each on the tiny model, on CPU, writing a checkpoint HFPolicy loads.

The smoke runs use a short-horizon Sokoban registered here (3 turns) and 4-token turns so
that each takes seconds; one math run covers the tool env and OPSD's reference solution.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import gymnasium
import pytest
import torch

from mentorgym.agents.trajectory import Trajectory, Turn, context
from mentorgym.training.config import build_config

SHORT_SOKOBAN = "mentorgym-test/SokobanShort-v0"
if SHORT_SOKOBAN not in gymnasium.registry:
    gymnasium.register(
        id=SHORT_SOKOBAN,
        entry_point="mentorgym.envs.sokoban:SokobanEnv",
        max_episode_steps=3,
        kwargs={"dim_room": (6, 6), "num_boxes": 1},
    )


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
        batch_size=2,
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
    from mentorgym.training import onpolicy as O

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
    eps = [O.encode_episode(tok, t, 4096, None, context_turns, system_prompt) for t in trajs]
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
    batch = O.make_batch(eps, trajs, tok.pad_token_id, torch.device("cpu"))
    assert batch.input_ids_RT.shape[0] == sum(len(e.seqs) for e in eps)
    with torch.no_grad():
        h = O.hidden_at(policy.model, batch)
        lp_BL = O.logprobs_from_hidden(policy.model, h, batch.target_BL, 1.0)
    diff = ((lp_BL - batch.logp_old_BL).abs() * batch.mask_BL).max()
    assert diff < 1e-3
    # step ids number the turns of each episode
    assert batch.step_ids_BL[0][batch.mask_BL[0] > 0].unique().tolist() == list(
        range(len(trajs[0].turns))
    )


def test_note_moves_positions_not_ids(tok):
    from mentorgym.training import onpolicy as O

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
    plain = O.encode_episode(tok, traj, 4096)
    noted = O.encode_episode(tok, traj, 4096, note="secret plan: Up Up")
    shift = len(noted.seqs[0]) - len(plain.seqs[0])
    assert shift > 0
    assert [(r, a + shift, b + shift) for r, a, b in plain.spans] == noted.spans
    assert all(noted.seqs[r][a:b] == ids for r, a, b in noted.spans)
    # a sequence limit drops whole turns and counts them
    cut = O.encode_episode(tok, traj, plain.spans[1][1] + 1)
    assert cut.turns == [0] and cut.dropped_turns == 1
    # windowed: one sequence per turn, the note in each, the second turn without the first
    windowed = O.encode_episode(tok, traj, 4096, "secret plan: Up Up", context_turns=1)
    assert [r for r, _, _ in windowed.spans] == [0, 1] and windowed.turns == [0, 1]
    second = tok.decode(windowed.seqs[1])
    assert "secret plan" in second and "again" in second and "go" not in second
    assert all(windowed.seqs[r][a:b] == ids for r, a, b in windowed.spans)
    plain_windowed = O.encode_episode(tok, traj, 4096, None, context_turns=1)
    longest = max(len(seq) for seq in plain_windowed.seqs)
    short = O.encode_episode(tok, traj, longest - 1, None, context_turns=1)
    assert short.dropped_turns >= 1 and len(short.seqs) == 2 - short.dropped_turns


# --- skills -----------------------------------------------------------------------------------------


def test_parse_skill_json_handles_invalid_replies():
    from mentorgym.training.skill_sd import parse_skill_json

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
    from mentorgym.training.skill_sd import LLMSummarizer

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
    from mentorgym.training.skill_sd import Skill, SkillBuffer

    buf = SkillBuffer(capacity=2, c=0.1)
    a, b = Skill("a", "", ""), Skill("b", "", "")
    buf.add(a), buf.add(b)
    assert buf.select() is a
    buf.update(a, 1.0)
    assert buf.select() is b  # untried first
    buf.update(b, -1.0)
    assert buf.select() is a
    c = Skill("c", "", "")
    assert buf.add(c) and b not in buf.skills  # the worst used skill is replaced
    full = SkillBuffer(capacity=1)
    full.add(Skill("x", "", ""))
    assert not full.add(Skill("y", "", ""))  # never evict an untried skill


def test_rule_summarizers_describe_the_episode():
    from mentorgym.training.skill_sd import MathSummarizer, SokobanSummarizer

    soko = Trajectory(
        "mentorgym/Sokoban-v0",
        seed=0,
        turns=[
            Turn(
                [{"role": "user", "content": "g1"}],
                "student",
                "Up",
                reward=-0.1,
                info={"format_error": True},
            ),
            Turn(
                [{"role": "tool", "content": "bad"}, {"role": "user", "content": "g1"}],
                "student",
                "<answer>Left</answer>",
                reward=-1.1,
            ),
        ],
        truncated=True,
    )
    sk = SokobanSummarizer().summarize(soko)
    assert "1 of 2 turns" in sk.mistake_analysis and "off a target 1" in sk.mistake_analysis
    assert "ran out of turns" in sk.mistake_analysis and "<answer>" in sk.golden_workflow
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
    sk = MathSummarizer().summarize(math)
    assert (
        "expected answer was 7" in sk.success_analysis
        and "without computing" in sk.mistake_analysis
    )


def test_group_advantages_and_pg_gradient():
    from mentorgym.training.grpo import group_advantages

    def traj(r: float) -> Trajectory:
        return Trajectory("x", turns=[Turn([], "student", "a", reward=r)], success=r > 0)

    adv = group_advantages([[traj(1.0), traj(0.0)], [traj(0.5), traj(0.5)]], "return", True)
    assert adv[0] > 0 > adv[1] and adv[2] == adv[3] == 0.0
    assert group_advantages([[traj(2.0), traj(-1.0)]], "success", False) == [0.5, -0.5]


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


def test_configs_load_and_validate():
    from mentorgym.training.config import read_yaml

    root = Path(__file__).resolve().parents[1] / "configs"
    for env in ("sokoban", "math"):
        for algo in ("grpo", "opd", "sod", "skill_sd", "opsd"):
            data = read_yaml(root / f"{env}_{algo}.yaml")
            assert data.pop("algorithm") == algo
            module = importlib.import_module(f"mentorgym.training.{algo}")
            build_config(module.Config, data)


def test_bad_settings_are_config_errors(tiny_path):
    from mentorgym.errors import ConfigError

    with pytest.raises(ConfigError, match="in-process teacher"):
        _cfg("opd", tiny_path, teacher="openai:http://127.0.0.1:1/v1#m", loss="jsd")
    with pytest.raises(ConfigError, match="eval_seed"):
        _cfg("grpo", tiny_path, eval_seed=1)


# --- end to end: two steps each ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "algo,over",
    [
        ("grpo", {}),
        ("opd", {"loss": "jsd", "jsd_beta": 0.5}),
        ("opd", {"loss": "sampled"}),
        ("sod", {}),
        ("skill_sd", {"sync_every": 1, "sd_coef": 1.0}),
        ("opd", {"loss": "jsd", "context_turns": 1, "system_prompt": False}),
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
    records = [line for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if line]
    assert sum('"kind": "train"' in r for r in records) == 2 and '"kind": "eval"' in records[-1]
    # the student moved (GRPO's tiny run has equal rewards in every group: zero advantage)
    if algo == "grpo":
        return
    before = HFPolicy(tiny_path, device="cpu").model.state_dict()
    after = policy.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in after if k in before)
    if algo == "skill_sd":
        import json

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
    from mentorgym.agents.hf import HFPolicy

    assert (
        HFPolicy(str(tmp_path / "final"), max_new_tokens=4, device="cpu")
        .act([{"role": "user", "content": "1+1"}])
        .text
        is not None
    )


def test_chunked_logprobs_match_whole_and_grad():
    """Chunked (checkpointed) logprobs equal the one-block computation, values and gradients."""
    from mentorgym.training import onpolicy as O

    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    model = torch.nn.Module()
    model.get_output_embeddings = lambda: head  # the one method logprobs_from_hidden reads
    h1 = torch.randn(3, 7, 8, requires_grad=True)
    h2 = h1.detach().clone().requires_grad_(True)
    target = torch.randint(0, 50, (3, 7))
    whole = O.logprobs_from_hidden(model, h1, target, 0.7, chunk=10_000)
    whole.sum().backward()
    g_h, g_w = h1.grad.clone(), head.weight.grad.clone()
    head.weight.grad = None
    chunked = O.logprobs_from_hidden(model, h2, target, 0.7, chunk=4)  # 21 positions: 6 chunks
    chunked.sum().backward()
    assert torch.allclose(whole, chunked, atol=1e-6)
    assert torch.allclose(h2.grad, g_h, atol=1e-6)
    assert torch.allclose(head.weight.grad, g_w, atol=1e-6)
