"""Every loss against a direct formula on hand-built tensors, and its gradient by gradcheck."""

import math

import pytest
import torch

from mentorgym.training.losses import (
    clipped_pg_loss,
    fused_linear_jsd,
    generalized_jsd,
    grpo_advantages,
    masked_cross_entropy,
    sampled_token_distill_loss,
    skill_sd_loss,
    sod_advantages,
    sod_step_weights,
    token_logprobs,
)

torch.manual_seed(0)


def _kl(p_log, q_log):
    return (p_log.exp() * (p_log - q_log)).sum(-1)


def _direct_jsd(s, t, mask, beta, temperature=1.0):
    ls, lt = torch.log_softmax(s / temperature, -1), torch.log_softmax(t / temperature, -1)
    if beta == 0:
        per = _kl(lt, ls)
    elif beta == 1:
        per = _kl(ls, lt)
    else:
        m = torch.log(beta * lt.exp() + (1 - beta) * ls.exp())
        per = beta * _kl(lt, m) + (1 - beta) * _kl(ls, m)
    return (per * mask).sum() / mask.sum()


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_generalized_jsd_matches_direct_formula(beta, temperature):
    s, t = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.float32)
    got = generalized_jsd(s, t, mask, beta, temperature, chunk_size=3)
    assert torch.allclose(got, _direct_jsd(s, t, mask, beta, temperature), atol=1e-6)


def test_beta_zero_and_one_are_forward_and_reverse_kl():
    s, t = torch.randn(1, 4, 7), torch.randn(1, 4, 7)
    mask = torch.ones(1, 4)
    ls, lt = torch.log_softmax(s, -1), torch.log_softmax(t, -1)
    assert torch.allclose(generalized_jsd(s, t, mask, 0.0), _kl(lt, ls).mean(), atol=1e-6)
    assert torch.allclose(generalized_jsd(s, t, mask, 1.0), _kl(ls, lt).mean(), atol=1e-6)
    # the general formula tends to the KLs' scaled limits, not to them: the special cases matter
    assert generalized_jsd(s, t, mask, 1e-4) < 1e-2 * generalized_jsd(s, t, mask, 0.0)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_generalized_jsd_gradcheck(beta):
    s = torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 3, 4, dtype=torch.float64)
    mask = torch.tensor([[1, 0, 1]], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: generalized_jsd(x, t, mask, beta, 1.5, chunk_size=2), (s,)
    )


def test_generalized_jsd_gradient_equals_unchunked_autograd():
    s = torch.randn(3, 6, 9, requires_grad=True)
    t = torch.randn(3, 6, 9)
    mask = (torch.rand(3, 6) > 0.3).float()
    generalized_jsd(s, t, mask, 0.5, chunk_size=4).backward()
    s2 = s.detach().clone().requires_grad_(True)
    _direct_jsd(s2, t, mask, 0.5).backward()
    assert torch.allclose(s.grad, s2.grad, atol=1e-6)


def test_generalized_jsd_top_k_renormalizes_over_the_teachers_top_tokens():
    s, t = torch.randn(1, 3, 10), torch.randn(1, 3, 10)
    mask = torch.ones(1, 3)
    idx = t.topk(4, -1).indices
    direct = _direct_jsd(s.gather(-1, idx), t.gather(-1, idx), mask, 0.5)
    assert torch.allclose(generalized_jsd(s, t, mask, 0.5, top_k=4), direct, atol=1e-6)
    idx_s = s.topk(4, -1).indices
    direct_s = _direct_jsd(s.gather(-1, idx_s), t.gather(-1, idx_s), mask, 1.0)
    assert torch.allclose(
        generalized_jsd(s, t, mask, 1.0, top_k=4, top_k_from="student"), direct_s, atol=1e-6
    )


def test_generalized_jsd_rejects_bad_beta():
    with pytest.raises(ValueError):
        generalized_jsd(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), torch.ones(1, 1), 1.5)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_fused_linear_jsd_equals_jsd_of_the_logits_with_gradients(beta):
    h_s = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    w_s = torch.randn(13, 6, dtype=torch.float64, requires_grad=True)
    h_t, w_t = torch.randn(2, 4, 5, dtype=torch.float64), torch.randn(13, 5, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 1], [1, 0, 1, 1]], dtype=torch.float64)
    fused = fused_linear_jsd(h_s, w_s, h_t, w_t, mask, beta, 1.3, chunk_size=2)
    fused.backward()
    h2, w2 = h_s.detach().clone().requires_grad_(True), w_s.detach().clone().requires_grad_(True)
    plain = _direct_jsd(h2 @ w2.T, h_t @ w_t.T, mask, beta, 1.3)
    plain.backward()
    assert torch.allclose(fused, plain, atol=1e-10)
    assert torch.allclose(h_s.grad, h2.grad, atol=1e-10) and torch.allclose(
        w_s.grad, w2.grad, atol=1e-10
    )


def test_fused_linear_jsd_gradcheck():
    h = torch.randn(1, 3, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    h_t, w_t = torch.randn(1, 3, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    mask = torch.tensor([[1, 0, 1]], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a, b: fused_linear_jsd(a, b, h_t, w_t, mask, 0.5, chunk_size=1), (h, w)
    )


def test_masked_cross_entropy_and_token_logprobs():
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, 2, 3], [4, 0, 1]])
    mask = torch.tensor([[1, 0, 1], [1, 1, 0]], dtype=torch.float32)
    lp = torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(
        masked_cross_entropy(logits, labels, mask), -(lp * mask).sum() / mask.sum()
    )
    assert torch.allclose(token_logprobs(logits, labels), lp, atol=1e-6)
    assert torch.allclose(
        token_logprobs(logits, labels, 2.0),
        torch.log_softmax(logits / 2, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1),
        atol=1e-6,
    )


def test_sampled_token_distill_loss_formula_and_gradcheck():
    new = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    sampler, teacher = (
        torch.randn(2, 4, dtype=torch.float64),
        torch.randn(2, 4, dtype=torch.float64),
    )
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.float64)
    ratio, adv = torch.exp(new - sampler), teacher - sampler
    direct = -(ratio * adv * mask).sum() / mask.sum()
    assert torch.allclose(sampled_token_distill_loss(new, sampler, teacher, mask), direct)
    clipped = torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv)
    assert torch.allclose(
        sampled_token_distill_loss(new, sampler, teacher, mask, 0.2),
        -(clipped * mask).sum() / mask.sum(),
    )
    assert torch.autograd.gradcheck(
        lambda x: sampled_token_distill_loss(x, sampler, teacher, mask), (new,)
    )
    # on-policy (new == sampler), the gradient is -A_t grad log pi: it pushes up tokens the teacher likes more
    on = sampler.clone().requires_grad_(True)
    sampled_token_distill_loss(on, sampler, teacher, mask).backward()
    assert torch.allclose(on.grad, -(adv * mask) / mask.sum())


def test_sod_step_weights_by_hand():
    lp_s = torch.tensor([[-1.0, -1.0, -2.0, -2.0, 0.0, -3.0]])
    lp_t = torch.tensor([[-1.5, -0.5, -1.0, -3.0, 0.0, -3.1]])
    steps = torch.tensor([[0, 0, 1, 1, -1, 2]])
    # d = [0.5, 1.0, 0.1]; w_k = min((d_1 + eps) / (d_k + eps), 1 + delta)
    w = sod_step_weights(lp_s, lp_t, steps, eps=1e-6, delta=0.3)
    d1 = 0.5 + 1e-6
    expected = torch.tensor([[1.0, 1.0, d1 / (1.0 + 1e-6), d1 / (1.0 + 1e-6), 0.0, 1.3]])
    assert torch.allclose(w, expected, atol=1e-6)
    adv = sod_advantages(torch.tensor([2.0]), lp_s, lp_t, steps, coef=0.5)
    assert torch.allclose(adv, 2.0 + 0.5 * expected * (lp_t - lp_s), atol=1e-6)
    assert torch.allclose(
        sod_advantages(None, lp_s, lp_t, steps, coef=0.5), 0.5 * expected * (lp_t - lp_s), atol=1e-6
    )


def test_skill_sd_formula_gradcheck_and_reverse_kl_gradient():
    new = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    old, teacher = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.float64)
    log_ratio = new - teacher
    direct = (
        torch.exp(new - old) * (torch.exp(-log_ratio) - 1 + log_ratio) * mask
    ).sum() / mask.sum()
    assert torch.allclose(skill_sd_loss(new, old, teacher, mask), direct)
    assert torch.autograd.gradcheck(lambda x: skill_sd_loss(x, old, teacher, mask), (new,))
    # Expected over y ~ pi_old = pi_theta (enumerating the vocabulary), the gradient equals that of
    # the reverse KL(pi_theta || pi_T) (docs/algorithms.md, Skill-SD).
    theta = torch.randn(7, dtype=torch.float64, requires_grad=True)
    t_logits = torch.randn(7, dtype=torch.float64)
    lp_theta, lp_t = torch.log_softmax(theta, -1), torch.log_softmax(t_logits, -1)
    per_token = skill_sd_loss(
        lp_theta[None], lp_theta.detach()[None], lp_t[None], torch.ones(1, 7), reduction="none"
    )
    (lp_theta.detach().exp() * per_token[0]).sum().backward()
    theta2 = theta.detach().clone().requires_grad_(True)
    lp2 = torch.log_softmax(theta2, -1)
    (lp2.exp() * (lp2 - lp_t)).sum().backward()
    assert torch.allclose(theta.grad, theta2.grad, atol=1e-10)


def test_grpo_advantages():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    a = grpo_advantages(r)
    std = torch.tensor([1.0, 0.0, 0.0, 1.0]).std()
    assert torch.allclose(a[0], (r[0] - 0.5) / (std + 1e-6))
    assert torch.allclose(a[1], torch.zeros(4))
    assert torch.allclose(grpo_advantages(r, scale=False)[0], r[0] - 0.5)


def test_clipped_pg_loss_formula_asymmetric_clip_and_gradcheck():
    new = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    old = torch.randn(2, 4, dtype=torch.float64)
    adv = torch.tensor([1.5, -0.5], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 1], [1, 1, 1, 1]], dtype=torch.float64)
    r = torch.exp(new - old)
    obj = torch.minimum(r * adv[:, None], r.clamp(1 - 0.2, 1 + 0.28) * adv[:, None])
    direct = (-obj * mask).sum() / mask.sum()
    got = clipped_pg_loss(new, old, adv, mask, clip_low=0.2, clip_high=0.28)
    assert torch.allclose(got, direct)
    assert torch.autograd.gradcheck(lambda x: clipped_pg_loss(x, old, adv, mask, 0.2, 0.28), (new,))
    assert math.isclose(
        clipped_pg_loss(old.clone(), old, adv, mask).item(),
        -((adv[:, None] * mask).sum() / mask.sum()).item(),
        rel_tol=1e-9,
    )


def test_truncated_importance_weights_formula_cap_and_no_gradient():
    from mentorgym.training.losses import truncated_importance_weights

    lp_train = torch.tensor([[-1.0, -0.5, -3.0]], requires_grad=True)
    lp_sampler = torch.tensor([[-1.5, -0.5, -1.0]])
    w = truncated_importance_weights(lp_train, lp_sampler, cap=1.5)
    direct = [min(math.exp(a - b), 1.5) for a, b in zip([-1.0, -0.5, -3.0], [-1.5, -0.5, -1.0])]
    assert w[0].tolist() == pytest.approx(direct)
    assert w[0, 0] == pytest.approx(1.5) and w[0, 1] == pytest.approx(1.0)
    assert not w.requires_grad
    with pytest.raises(ValueError):
        truncated_importance_weights(lp_train, lp_sampler, cap=0.5)


def test_logprob_gap_over_masked_tokens():
    from mentorgym.training.losses import logprob_gap

    lp_train = torch.tensor([[-1.0, -2.0, -3.0], [-0.1, -0.2, -9.0]])
    lp_sampler = torch.tensor([[-1.1, -2.0, -3.5], [-0.1, -0.5, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    mean, largest = logprob_gap(lp_train, lp_sampler, mask)
    diffs = [0.1, 0.0, 0.5, 0.0, 0.3]  # the masked-out 9.0 does not count
    assert mean == pytest.approx(sum(diffs) / 5) and largest == pytest.approx(0.5)
    assert logprob_gap(lp_train, lp_sampler, torch.zeros_like(mask)) == (0.0, 0.0)


def test_truncated_importance_sampling_in_every_on_policy_loss():
    """With the trainer's pre-update logprobs as pi_old and w_t = min(exp(lp_old - lp_sampler),
    cap) (the sampler as behaviour policy), each loss is the weighted token mean of its terms."""
    from mentorgym.training.losses import truncated_importance_weights

    new = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    old = new.detach() + 0.05 * torch.randn(2, 4, dtype=torch.float64)  # trainer, pre-update
    sampler = old + torch.tensor([[0.0, -0.9, 0.4, 0.1], [1.2, 0.0, -0.3, 0.2]]).double()
    teacher = torch.randn(2, 4, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.float64)
    w32 = truncated_importance_weights(old, sampler, cap=2.0)
    direct_w = torch.exp(old - sampler).clamp(max=2.0).float()  # weights are float32
    assert torch.allclose(w32, direct_w) and bool((w32 == 2.0).any()) and bool((w32 < 1).any())
    w = w32.double()
    r = torch.exp(new - old)

    def mean(x):
        return (x * mask).sum() / mask.sum()

    adv_t = teacher - sampler
    clipped = torch.minimum(r * adv_t, r.clamp(0.8, 1.2) * adv_t)
    got = sampled_token_distill_loss(
        new, sampler, teacher, mask, 0.2, logp_old_BT=old, weights_BT=w
    )
    assert torch.allclose(got, -mean(w * clipped))
    adv_b = torch.tensor([1.5, -0.5], dtype=torch.float64)[:, None]
    obj = torch.minimum(r * adv_b, r.clamp(0.8, 1.28) * adv_b)
    got = clipped_pg_loss(new, old, adv_b.squeeze(1), mask, 0.2, 0.28, weights_BT=w)
    assert torch.allclose(got, mean(-w * obj))
    l_t = new - teacher
    got = skill_sd_loss(new, old, teacher, mask, weights_BT=w)
    assert torch.allclose(got, mean(w * r * (torch.exp(-l_t) - 1 + l_t)))
    # the weights carry no gradient: the gradient is w_t times the unweighted one, token by token
    (g_w,) = torch.autograd.grad(clipped_pg_loss(new, old, adv_b, mask, weights_BT=w), new)
    (g_1,) = torch.autograd.grad(clipped_pg_loss(new, old, adv_b, mask), new)
    assert torch.allclose(g_w, w * g_1)


def test_fused_linear_jsd_with_token_weights():
    h_s = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    w_s = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    h_t, w_t = torch.randn(2, 3, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]], dtype=torch.float64)
    weights = torch.tensor([[0.5, 2.0, 9.0], [1.0, 9.0, 0.25]], dtype=torch.float64)
    got = fused_linear_jsd(h_s, w_s, h_t, w_t, mask, 0.5, chunk_size=2, weights_BT=weights)
    ls = torch.log_softmax(h_s @ w_s.T, -1)
    lt = torch.log_softmax(h_t @ w_t.T, -1)
    m = torch.log(0.5 * lt.exp() + 0.5 * ls.exp())
    per = 0.5 * _kl(lt, m) + 0.5 * _kl(ls, m)
    direct = (weights * per * mask).sum() / mask.sum()
    assert torch.allclose(got, direct, atol=1e-10)
    (g_fused,) = torch.autograd.grad(got, h_s)
    (g_direct,) = torch.autograd.grad(direct, h_s)
    assert torch.allclose(g_fused, g_direct, atol=1e-10)
