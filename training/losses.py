"""Losses as pure functions of tensors.

Shape suffixes: B batch, T time (tokens), V vocabulary, N flattened tokens, H hidden, G group.
`mask_BT` is 1 on the tokens that count (the assistant's), 0 elsewhere; scalar losses are
means over masked tokens unless a function says otherwise. Log-probs are natural logs.

Objectives and where they come from:
- `masked_cross_entropy`: SFT / behaviour cloning, and DAgger's supervised step.
- `generalized_jsd`: GKD's generalized Jensen-Shannon divergence (Agarwal et al., 2024, "On-Policy
  Distillation of Language Models"), in TRL's convention: beta=0 forward KL(T||S), beta=1 reverse
  KL(S||T); computed in chunks so memory does not grow with T x V.
- `fused_linear_jsd`: the same from hidden states and LM-head weights, never materializing the
  full logits (the idea of Liger-Kernel's fused linear JSD).
- `sampled_token_distill_loss`: on-policy distillation with per-token advantage lp_T - lp_S
  (Thinking Machines' "On-Policy Distillation"; GKD's sampled form).
- `sod_step_weights`, `sod_advantages`: step-wise divergence reweighting (SOD).
- `skill_sd_loss`: Skill-SD's importance-weighted k3 reverse-KL term.
- `grpo_advantages`, `clipped_pg_loss`: GRPO (Shao et al., 2024, DeepSeekMath) with DAPO's
  separate low/high clip ranges and an optional k3 KL to a reference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def masked_mean(x_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over the tokens where `mask` is 1; 0 when nothing is masked in."""
    mask_BT = mask_BT.to(x_BT.dtype)
    return (x_BT * mask_BT).sum() / mask_BT.sum().clamp_min(1.0)


def masked_cross_entropy(
    logits_BTV: torch.Tensor, labels_BT: torch.Tensor, mask_BT: torch.Tensor
) -> torch.Tensor:
    """SFT: mean negative log-likelihood of `labels` over masked tokens.

    `logits_BTV[:, t]` predicts `labels_BT[:, t]` (callers shift by one beforehand).
    """
    nll_BT = F.cross_entropy(
        logits_BTV.flatten(0, 1).float(), labels_BT.flatten(), reduction="none"
    )
    return masked_mean(nll_BT.view_as(labels_BT), mask_BT)


def token_logprobs(
    logits_BTV: torch.Tensor, ids_BT: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """log softmax(logits / temperature)[ids] per position, without a B x T x V log-softmax copy."""
    logits_BTV = logits_BTV.float() / temperature
    picked_BT = logits_BTV.gather(-1, ids_BT.unsqueeze(-1)).squeeze(-1)
    return picked_BT - torch.logsumexp(logits_BTV, dim=-1)


# --- generalized JSD over the full distribution -------------------------------------------------


def _jsd_per_token(
    s_logits_NV: torch.Tensor,
    t_logits_NV: torch.Tensor,
    beta: float,
    temperature: float,
    top_k: int | None,
    top_k_from: str,
) -> torch.Tensor:
    """Generalized JSD of each row (TRL's GKD convention), in float32."""
    dtype = torch.promote_types(s_logits_NV.dtype, torch.float32)  # bf16 in, fp32 math
    s = s_logits_NV.to(dtype) / temperature
    t = t_logits_NV.to(dtype) / temperature
    if top_k is not None:
        idx_NK = (t if top_k_from == "teacher" else s).detach().topk(top_k, dim=-1).indices
        s, t = s.gather(-1, idx_NK), t.gather(-1, idx_NK)
    lp_s = F.log_softmax(s, dim=-1)
    lp_t = F.log_softmax(t, dim=-1)
    if beta == 0.0:  # forward KL(T || S)
        return (lp_t.exp() * (lp_t - lp_s)).sum(-1)
    if beta == 1.0:  # reverse KL(S || T)
        return (lp_s.exp() * (lp_s - lp_t)).sum(-1)
    lp_m = torch.logsumexp(torch.stack([lp_s + math.log(1 - beta), lp_t + math.log(beta)]), dim=0)
    kl_t = (lp_t.exp() * (lp_t - lp_m)).sum(-1)
    kl_s = (lp_s.exp() * (lp_s - lp_m)).sum(-1)
    return beta * kl_t + (1 - beta) * kl_s


def chunk_rows(vocab: int, budget_floats: int = 1 << 21) -> int:
    """Tokens per chunk so that one chunk's B x V temporaries hold about `budget_floats` each."""
    return max(1, budget_floats // vocab)


def _chunked_jsd(
    s_BTV: torch.Tensor,
    t_BTV: torch.Tensor,
    mask_BT: torch.Tensor,
    want_grad: bool,
    beta: float,
    temperature: float,
    top_k: int | None,
    top_k_from: str,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Masked sum of per-token JSD and its gradient w.r.t. the student logits, one chunk of rows
    at a time, visiting the flattened logits in place (no masked copy)."""
    vocab = s_BTV.shape[-1]
    s_NV, t_NV, m_N = s_BTV.reshape(-1, vocab), t_BTV.reshape(-1, vocab), mask_BT.reshape(-1)
    grad_NV = torch.zeros_like(s_NV) if want_grad else None
    total = torch.zeros(
        (), dtype=torch.promote_types(s_BTV.dtype, torch.float32), device=s_BTV.device
    )
    for i in range(0, s_NV.shape[0], chunk):
        m_c = m_N[i : i + chunk]
        if not bool(m_c.any()):
            continue
        with torch.enable_grad():
            s_c = s_NV[i : i + chunk].detach().requires_grad_(want_grad)
            per_c = _jsd_per_token(s_c, t_NV[i : i + chunk], beta, temperature, top_k, top_k_from)
            loss_c = (per_c * m_c.to(per_c.dtype)).sum()
            if grad_NV is not None:
                (g,) = torch.autograd.grad(loss_c, s_c)
                grad_NV[i : i + chunk] = g.to(grad_NV.dtype)
        total += loss_c.detach()
    return total, None if grad_NV is None else grad_NV.view_as(s_BTV)


class _ChunkedJSD(torch.autograd.Function):
    """Loss and gradient computed chunk by chunk in forward; backward only rescales.

    The gradient buffer, shaped like the student logits, is handed to autograd as the logits'
    gradient, so peak memory is that one buffer plus a chunk's temporaries instead of several
    B x T x V float tensors kept for autograd. A second backward through the same graph
    (retain_graph) recomputes the gradient from the saved inputs.
    """

    @staticmethod
    def forward(ctx, s_BTV, t_BTV, mask_BT, beta, temperature, top_k, top_k_from, chunk):  # type: ignore[override]
        args = (beta, temperature, top_k, top_k_from, chunk)
        total, grad = _chunked_jsd(s_BTV, t_BTV, mask_BT, s_BTV.requires_grad, *args)
        ctx.save_for_backward(
            s_BTV, t_BTV, mask_BT
        )  # references to the caller's tensors, not copies
        ctx.args, ctx.grad = args, grad
        ctx.n = max(float(mask_BT.sum()), 1.0)
        return total / ctx.n

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        grad, ctx.grad = ctx.grad, None
        if grad is None:
            s_BTV, t_BTV, mask_BT = ctx.saved_tensors
            _, grad = _chunked_jsd(s_BTV, t_BTV, mask_BT, True, *ctx.args)
        grad.mul_((grad_out / ctx.n).to(grad.dtype))
        return grad, None, None, None, None, None, None, None


def generalized_jsd(
    student_logits_BTV: torch.Tensor,
    teacher_logits_BTV: torch.Tensor,
    mask_BT: torch.Tensor,
    beta: float,
    temperature: float = 1.0,
    *,
    top_k: int | None = None,
    top_k_from: str = "teacher",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """GKD's generalized JSD, averaged over masked tokens (TRL's `batchmean` with labels).

    beta=0 is the forward KL(T || S), beta=1 the reverse KL(S || T); in between, with the mixture
    M = beta T + (1 - beta) S, the value is beta KL(T || M) + (1 - beta) KL(S || M). `top_k`
    restricts both distributions to the teacher's (or student's) k most likely tokens,
    renormalized. The teacher is a target: no gradient flows into `teacher_logits_BTV`.
    Memory: the loss runs over `chunk_size` tokens at a time (default: as many as keep each
    temporary near 8 MB, `chunk_rows(V)`).
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if top_k_from not in ("teacher", "student"):
        raise ValueError(f"top_k_from must be 'teacher' or 'student', got {top_k_from!r}")
    chunk = chunk_size or chunk_rows(student_logits_BTV.shape[-1])
    return _ChunkedJSD.apply(
        student_logits_BTV,
        teacher_logits_BTV.detach(),
        mask_BT.detach(),
        beta,
        temperature,
        top_k,
        top_k_from,
        chunk,
    )


class _FusedLinearJSD(torch.autograd.Function):
    """Student and teacher logits are made one chunk at a time from hidden states and weights;
    the gradients of the student's hidden states and LM-head weight accumulate in forward."""

    @staticmethod
    def forward(ctx, s_h_NH, s_w_VH, t_h_NH, t_w_VH, w_N, beta, temperature, chunk):  # type: ignore[override]
        n = s_h_NH.shape[0]
        need = s_h_NH.requires_grad or s_w_VH.requires_grad
        grad_h = torch.zeros_like(s_h_NH) if need else None
        acc = torch.promote_types(s_w_VH.dtype, torch.float32)
        grad_w = torch.zeros_like(s_w_VH, dtype=acc) if need else None
        total = torch.zeros((), dtype=acc, device=s_h_NH.device)
        for i in range(0, n, chunk):
            with torch.enable_grad():
                h_c = s_h_NH[i : i + chunk].detach().requires_grad_(need)
                w = s_w_VH.detach().requires_grad_(need)
                t_logits = (t_h_NH[i : i + chunk] @ t_w_VH.T).detach()
                per_c = _jsd_per_token(h_c @ w.T, t_logits, beta, temperature, None, "teacher")
                loss_c = (per_c * w_N[i : i + chunk].to(per_c.dtype)).sum()
                if need:
                    g_h, g_w = torch.autograd.grad(loss_c, (h_c, w))
                    grad_h[i : i + chunk] = g_h.to(grad_h.dtype)
                    grad_w += g_w.to(acc)
            total += loss_c.detach()
        ctx.save_for_backward(*(g for g in (grad_h, grad_w) if g is not None))
        ctx.need = need
        ctx.n = max(n, 1)
        ctx.w_dtype = s_w_VH.dtype
        return total / ctx.n

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        if not ctx.need:
            return (None,) * 8
        grad_h, grad_w = ctx.saved_tensors
        scale = grad_out / ctx.n
        return (
            grad_h * scale.to(grad_h.dtype),
            (grad_w * scale).to(ctx.w_dtype),
            None,
            None,
            None,
            None,
            None,
            None,
        )


def fused_linear_jsd(
    student_hidden_BTH: torch.Tensor,
    student_lm_head_VH: torch.Tensor,
    teacher_hidden_BTH: torch.Tensor,
    teacher_lm_head_VH: torch.Tensor,
    mask_BT: torch.Tensor,
    beta: float,
    temperature: float = 1.0,
    *,
    chunk_size: int | None = None,
    weights_BT: torch.Tensor | None = None,
) -> torch.Tensor:
    """`generalized_jsd` of `hidden @ lm_head.T` for student and teacher, never holding the full
    B x T x V logits: each chunk's logits are made, used for the loss and its gradient, and freed.
    Gradients flow to the student's hidden states and LM-head weight only. `weights_BT`
    (no gradient; e.g. `truncated_importance_weights`) multiplies each token's divergence
    before the mean over masked tokens."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    keep_N = mask_BT.reshape(-1).bool()
    s_h = student_hidden_BTH.reshape(-1, student_hidden_BTH.shape[-1])[keep_N]
    t_h = teacher_hidden_BTH.reshape(-1, teacher_hidden_BTH.shape[-1])[keep_N].detach()
    w_N = torch.ones(s_h.shape[0], device=s_h.device)
    if weights_BT is not None:
        w_N = weights_BT.reshape(-1)[keep_N].detach().float()
    return _FusedLinearJSD.apply(
        s_h,
        student_lm_head_VH,
        t_h,
        teacher_lm_head_VH.detach(),
        w_N,
        beta,
        temperature,
        chunk_size or chunk_rows(student_lm_head_VH.shape[0]),
    )


# --- sampled-token distillation --------------------------------------------------------------------


def sampled_token_distill_loss(
    logp_new_BT: torch.Tensor,
    logp_sampler_BT: torch.Tensor,
    logp_teacher_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    clip_eps: float | None = None,
    *,
    logp_old_BT: torch.Tensor | None = None,
    weights_BT: torch.Tensor | None = None,
) -> torch.Tensor:
    """On-policy distillation on the sampled tokens: advantage A_t = lp_T - lp_S (the negative
    per-token reverse-KL estimate, with lp_S the sampling policy's logprob), loss
    -mean_t w_t * ratio_t * A_t with ratio_t = pi_theta / pi_old, PPO-clipped when `clip_eps` is
    set. pi_old is the sampler unless `logp_old_BT` (the trainer's own pre-update logprobs, for
    truncated importance sampling) is given; `weights_BT` (no gradient) defaults to 1."""
    adv_BT = (logp_teacher_BT - logp_sampler_BT).detach()
    old_BT = logp_sampler_BT if logp_old_BT is None else logp_old_BT
    ratio_BT = torch.exp(logp_new_BT - old_BT.detach())
    obj_BT = ratio_BT * adv_BT
    if clip_eps is not None:
        obj_BT = torch.minimum(obj_BT, ratio_BT.clamp(1 - clip_eps, 1 + clip_eps) * adv_BT)
    if weights_BT is not None:
        obj_BT = obj_BT * weights_BT.detach()
    return -masked_mean(obj_BT, mask_BT)


# --- SOD: step-wise divergence reweighting ---------------------------------------------------------


def sod_step_weights(
    logp_student_BT: torch.Tensor,
    logp_teacher_BT: torch.Tensor,
    step_ids_BT: torch.Tensor,
    eps: float = 1e-6,
    delta: float = 0.3,
) -> torch.Tensor:
    """Per-token weight w_k(t) of the step (assistant turn) that token t belongs to.

    `step_ids_BT` numbers each sequence's steps 0, 1, ... (-1 on tokens outside any step).
    d_k = mean_{t in k} |lp_S - lp_T|; w_k = min((d_1 + eps) / (d_k + eps), 1 + delta), with d_1
    the sequence's first step: steps that drifted far from the teacher get less teacher signal.
    Returns weights shaped like the inputs (0 outside steps); no gradient flows through them.
    """
    div_BT = (logp_student_BT - logp_teacher_BT).detach().abs().float()
    ids_BT = step_ids_BT.long()
    n_steps = int(ids_BT.max().item()) + 1 if ids_BT.numel() else 0
    weights_BT = torch.zeros_like(div_BT)
    if n_steps <= 0:
        return weights_BT
    in_step_BT = ids_BT >= 0
    onehot_BTK = F.one_hot(ids_BT.clamp_min(0), n_steps).float() * in_step_BT.unsqueeze(-1)
    count_BK = onehot_BTK.sum(1)
    d_BK = (onehot_BTK * div_BT.unsqueeze(-1)).sum(1) / count_BK.clamp_min(1)
    w_BK = ((d_BK[:, :1] + eps) / (d_BK + eps)).clamp(max=1 + delta)
    weights_BT = torch.gather(w_BK, 1, ids_BT.clamp_min(0)) * in_step_BT
    return weights_BT


def sod_advantages(
    adv_grpo_B: torch.Tensor | None,
    logp_student_BT: torch.Tensor,
    logp_teacher_BT: torch.Tensor,
    step_ids_BT: torch.Tensor,
    coef: float = 1.0,
    eps: float = 1e-6,
    delta: float = 0.3,
) -> torch.Tensor:
    """SOD's token advantage A_t = A_GRPO + c * w_k(t) * (lp_T - lp_S); pure-OPD mode when
    `adv_grpo_B` is None. Feed the result to `clipped_pg_loss`."""
    w_BT = sod_step_weights(logp_student_BT, logp_teacher_BT, step_ids_BT, eps, delta)
    distill_BT = coef * w_BT * (logp_teacher_BT - logp_student_BT).detach().float()
    if adv_grpo_B is None:
        return distill_BT
    return adv_grpo_B.detach().float().unsqueeze(-1) + distill_BT


# --- Skill-SD ---------------------------------------------------------------------------------------


def skill_sd_loss(
    logp_new_BT: torch.Tensor,
    logp_old_BT: torch.Tensor,
    logp_teacher_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    reduction: str = "mean",
    *,
    weights_BT: torch.Tensor | None = None,
) -> torch.Tensor:
    """Skill-SD's distillation term: with l_t = lp_S - lp_T and rho_t = pi_theta / sg(pi_old),
    L_SD = mean_t w_t * rho_t * (exp(-l_t) - 1 + l_t), the importance-weighted k3 estimator of
    the reverse KL(S || T). Its expected gradient under pi_old equals the gradient of
    KL(pi_theta || T). `weights_BT` (no gradient, e.g. truncated importance weights) defaults to
    1. `reduction="none"` returns the per-token terms (masked to 0)."""
    l_BT = logp_new_BT - logp_teacher_BT.detach()
    rho_BT = torch.exp(logp_new_BT - logp_old_BT.detach())
    k3_BT = torch.exp(-l_BT) - 1 + l_BT
    terms_BT = rho_BT * k3_BT
    if weights_BT is not None:
        terms_BT = terms_BT * weights_BT.detach()
    if reduction == "none":
        return terms_BT * mask_BT.to(terms_BT.dtype)
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return masked_mean(terms_BT, mask_BT)


# --- GRPO -------------------------------------------------------------------------------------------


def grpo_advantages(
    rewards_NG: torch.Tensor, eps: float = 1e-6, scale: bool = True
) -> torch.Tensor:
    """Group-normalized advantages (R - mean_g) / (std_g + eps) for N groups of G samples of the
    same prompt (std is the unbiased sample std, as TRL computes it). `scale=False` only centers
    (Dr. GRPO)."""
    rewards_NG = rewards_NG.float()
    centered_NG = rewards_NG - rewards_NG.mean(dim=-1, keepdim=True)
    if not scale:
        return centered_NG
    std_N1 = (
        rewards_NG.std(dim=-1, keepdim=True)
        if rewards_NG.shape[-1] > 1
        else torch.zeros_like(centered_NG[..., :1])
    )
    return centered_NG / (std_N1 + eps)


def clipped_pg_loss(
    logp_new_BT: torch.Tensor,
    logp_old_BT: torch.Tensor,
    adv_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    *,
    weights_BT: torch.Tensor | None = None,
) -> torch.Tensor:
    """PPO/GRPO clipped policy-gradient loss, mean over masked tokens:
    -w_t min(r A, clip(r, 1 - clip_low, 1 + clip_high) A), with r = pi_theta / pi_old and
    `weights_BT` w (no gradient, e.g. truncated importance weights; default 1). `adv_BT` may be
    per sequence (B x 1) or per token (B x T)."""
    if adv_BT.dim() == 1:
        adv_BT = adv_BT.unsqueeze(-1)
    adv_BT = adv_BT.detach().to(logp_new_BT.dtype)
    ratio_BT = torch.exp(logp_new_BT - logp_old_BT.detach())
    obj_BT = torch.minimum(ratio_BT * adv_BT, ratio_BT.clamp(1 - clip_low, 1 + clip_high) * adv_BT)
    if weights_BT is not None:
        obj_BT = obj_BT * weights_BT.detach()
    return masked_mean(-obj_BT, mask_BT)


def truncated_importance_weights(
    logp_train_BT: torch.Tensor, logp_sampler_BT: torch.Tensor, cap: float
) -> torch.Tensor:
    """Truncated importance sampling against the sampler/trainer mismatch (vLLM samples, the
    trainer recomputes): w_t = min(pi_train / pi_sampler, cap) = min(exp(lp_train - lp_sampler),
    cap), with no gradient (a correction factor on a per-token loss, with the sampler's
    logprobs as the behaviour policy). `cap` >= 1 bounds the variance."""
    if cap < 1.0:
        raise ValueError(f"the importance-weight cap must be >= 1, got {cap}")
    ratio_BT = torch.exp(logp_train_BT.detach().float() - logp_sampler_BT.detach().float())
    return ratio_BT.clamp(max=cap)


def logprob_gap(
    logp_train_BT: torch.Tensor, logp_sampler_BT: torch.Tensor, mask_BT: torch.Tensor
) -> tuple[float, float]:
    """How far the sampler's logprobs are from the trainer's recomputed ones over masked tokens:
    (mean |lp_train - lp_sampler|, max |lp_train - lp_sampler|); (0, 0) when nothing is masked."""
    diff_BT = (logp_train_BT.detach().float() - logp_sampler_BT.detach().float()).abs()
    on_BT = mask_BT > 0
    if not bool(on_BT.any()):
        return 0.0, 0.0
    return float(diff_BT[on_BT].mean()), float(diff_BT[on_BT].max())
