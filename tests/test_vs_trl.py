"""mentorgym's losses and TRL's `compute_loss` on one fixed batch give the same number and the
same gradients (same weights, same completions, same settings), so bench/vs_trl.py compares
the same work: GRPO (`GRPOTrainer`, `loss_type="bnpo"`, clip 0.2 / 0.28, no KL) and on-policy
distillation (`GKDTrainer`'s generalized JSD, beta 0, 0.5 and 1).

Needs TRL (`pip install 'mentorgym[bench]'`; scripts/test.sh installs that extra)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

pytest.importorskip("trl", reason="TRL is absent: pip install 'mentorgym[bench]' (the bench extra)")
datasets = pytest.importorskip("datasets")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from mentorgym.agents.tiny import build_tiny, default_tiny_path  # noqa: E402
from mentorgym.training.data import Batch  # noqa: E402
from mentorgym.training.losses import clipped_pg_loss, fused_linear_jsd  # noqa: E402
from mentorgym.training.scoring import hidden_at, lm_head, logprobs_from_hidden  # noqa: E402

PROMPT_LENS = [7, 12, 9, 12]
COMPLETION_LENS = [5, 8, 3, 8]  # completion b's mask covers its first COMPLETION_LENS[b] tokens


@pytest.fixture(scope="module")
def tiny():
    path = default_tiny_path()
    return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path), path


def _fixed_batch(vocab: int, pad: int) -> tuple[list[list[int]], list[list[int]]]:
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in PROMPT_LENS]
    comps = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in COMPLETION_LENS]
    return prompts, comps


def _trl_grpo_inputs(prompts, comps, pad: int) -> dict[str, torch.Tensor]:
    """TRL's layout: prompts left-padded, completions right-padded, each with its mask."""
    P, C = max(map(len, prompts)), max(map(len, comps))
    inputs = {
        k: torch.full((len(prompts), n), pad) for k, n in (("prompt_ids", P), ("completion_ids", C))
    }
    inputs["prompt_mask"] = torch.zeros(len(prompts), P, dtype=torch.long)
    inputs["completion_mask"] = torch.zeros(len(prompts), C, dtype=torch.long)
    for b, (p, c) in enumerate(zip(prompts, comps)):
        inputs["prompt_ids"][b, P - len(p) :] = torch.tensor(p)
        inputs["prompt_mask"][b, P - len(p) :] = 1
        inputs["completion_ids"][b, : len(c)] = torch.tensor(c)
        inputs["completion_mask"][b, : len(c)] = 1
    return inputs


def _mentorgym_batch(prompts, comps, pad: int, logp_old_BL: torch.Tensor) -> Batch:
    """mentorgym's layout: one right-padded row per episode, loss tokens gathered by position."""
    B, T, L = (
        len(prompts),
        max(len(p) + len(c) for p, c in zip(prompts, comps)),
        max(map(len, comps)),
    )
    ids_RT, att_RT = torch.full((B, T), pad), torch.zeros(B, T, dtype=torch.long)
    pos_BL, target_BL = torch.ones(B, L, dtype=torch.long), torch.full((B, L), pad)
    mask_BL = torch.zeros(B, L)
    for b, (p, c) in enumerate(zip(prompts, comps)):
        ids_RT[b, : len(p) + len(c)] = torch.tensor(p + c)
        att_RT[b, : len(p) + len(c)] = 1
        pos_BL[b, : len(c)] = torch.arange(len(p), len(p) + len(c))
        target_BL[b, : len(c)] = torch.tensor(c)
        mask_BL[b, : len(c)] = 1.0
    row_BL = torch.arange(B).unsqueeze(1).expand(B, L).contiguous()
    step_BL = torch.where(mask_BL > 0, 0, -1)
    return Batch(ids_RT, att_RT, row_BL, pos_BL, target_BL, mask_BL, step_BL, logp_old_BL)


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(loss_a, loss_b, grads_a, grads_b) -> None:
    assert abs(float(loss_a) - float(loss_b)) < 1e-5 * max(1.0, abs(float(loss_b)))
    assert grads_a.keys() == grads_b.keys() and grads_a
    for n in grads_a:
        torch.testing.assert_close(grads_a[n], grads_b[n], rtol=1e-4, atol=1e-6, msg=n)


def test_grpo_loss_equals_trl_compute_loss(tiny, tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    tok, model, _ = tiny
    model = copy.deepcopy(model).eval()  # eval: no dropout, and TRL's eval-mode normalizer (1)
    pad = tok.pad_token_id
    prompts, comps = _fixed_batch(model.config.vocab_size, pad)
    inputs = _trl_grpo_inputs(prompts, comps, pad)
    adv_B = torch.tensor([1.0, -0.5, 0.3, -0.8])
    # Old logprobs away from the current ones, so that both clip edges are reached.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        b0 = _mentorgym_batch(prompts, comps, pad, torch.zeros(4, max(COMPLETION_LENS)))
        logp_BL = logprobs_from_hidden(model, hidden_at(model, b0), b0.target_BL, 1.0)
    old_BL = (logp_BL + 0.4 * torch.randn(logp_BL.shape, generator=g)) * b0.mask_BL

    b = _mentorgym_batch(prompts, comps, pad, old_BL)
    logp_BL = logprobs_from_hidden(model, hidden_at(model, b), b.target_BL, 1.0)
    ours = clipped_pg_loss(logp_BL, b.logp_old_BL, adv_B, b.mask_BL, 0.2, 0.28)
    ours.backward()
    ours_grads = _grads(model)
    model.zero_grad(set_to_none=True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = GRPOConfig(
            output_dir=str(tmp_path), loss_type="bnpo", beta=0.0, epsilon=0.2, epsilon_high=0.28,
            per_device_train_batch_size=4, num_generations=2, max_completion_length=8,
            use_cpu=True, bf16=False, report_to=[], temperature=1.0,
        )  # fmt: skip
        ds = datasets.Dataset.from_list([{"prompt": "x"}] * 4)
        trainer = GRPOTrainer(model, lambda **kw: [0.0] * len(kw["prompts"]), args, ds,
                              processing_class=tok)  # fmt: skip
    model.eval()
    inputs |= {"advantages": adv_B, "old_per_token_logps": old_BL}
    theirs = trainer.compute_loss(model, inputs)
    theirs.backward()
    _assert_same(ours, theirs, ours_grads, _grads(model))
    assert abs(float(ours)) > 1e-3  # a non-trivial value: the check can fail


@pytest.fixture(scope="module")
def teacher_path(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "t"
    return build_tiny(out, size="tiny", seed=1, tokenizer_from=tiny[2])


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_opd_jsd_equals_trl_gkd_compute_loss(tiny, teacher_path, tmp_path, beta):
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    tok, model, _ = tiny
    model = copy.deepcopy(model).eval()
    teacher = AutoModelForCausalLM.from_pretrained(teacher_path).eval()
    pad = tok.pad_token_id
    prompts, comps = _fixed_batch(model.config.vocab_size, pad)
    b = _mentorgym_batch(prompts, comps, pad, torch.zeros(4, max(COMPLETION_LENS)))
    with torch.no_grad():
        t_hidden_BLH = hidden_at(teacher, b)
    ours = fused_linear_jsd(
        hidden_at(model, b), lm_head(model), t_hidden_BLH, lm_head(teacher), b.mask_BL, beta
    )
    ours.backward()
    ours_grads = _grads(model)
    model.zero_grad(set_to_none=True)

    labels_RT = torch.full_like(b.input_ids_RT, -100)  # the completion's tokens only
    for i, (p, c) in enumerate(zip(prompts, comps)):
        labels_RT[i, len(p) : len(p) + len(c)] = torch.tensor(c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = GKDConfig(output_dir=str(tmp_path), beta=beta, lmbda=1.0, use_cpu=True, bf16=False,
                         report_to=[], per_device_train_batch_size=4)  # fmt: skip
        msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
        ds = datasets.Dataset.from_list([{"messages": msgs}] * 4)
        trainer = GKDTrainer(model, teacher, args, train_dataset=ds, processing_class=tok)
    model.eval()
    inputs = {
        "input_ids": b.input_ids_RT,
        "attention_mask": b.attention_mask_RT,
        "labels": labels_RT,
    }
    theirs = trainer.compute_loss(model, inputs)
    theirs.backward()
    _assert_same(ours, theirs, ours_grads, _grads(model))
    assert float(ours) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["grpo", "opd"])
def test_bench_mentorgym_side_times_every_optimizer_step(algo, tmp_path):
    """The bench times mentorgym's loop by wrapping the function it calls for each optimizer
    step; when the loops moved that call (`trainer.optimizer_step`), every mentorgym run of the
    bench failed and only TRL's side was measured. Two steps must give two stamps."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "vs_trl.py"
    spec = importlib.util.spec_from_file_location("vs_trl_bench", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    a = bench.parse(["--tasks", "2", "--group", "2", "--new", "4", "--steps", "1", "--warmup", "1"])
    a.student, a.teacher = default_tiny_path(), default_tiny_path()
    res = bench.mentorgym_side(algo, a, multi_turn=False)
    assert len(res["stamps"]) == 1 + 2 and len(res["turns"]) == 2
