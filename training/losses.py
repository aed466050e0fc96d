"""Losses as pure functions of tensors.

Shape suffixes: B batch, T time (tokens), V vocabulary, G group, H hidden.
Every function takes a `mask_BT` (1.0 on tokens that count, i.e. assistant tokens)
and returns a scalar averaged over the masked tokens unless it says otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(x_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over the tokens where `mask` is 1; 0 when nothing is masked in."""
    mask_BT = mask_BT.to(x_BT.dtype)
    return (x_BT * mask_BT).sum() / mask_BT.sum().clamp_min(1.0)


def masked_cross_entropy(logits_BTV: torch.Tensor, labels_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """SFT / behaviour cloning: mean negative log-likelihood of `labels` over masked tokens.

    `logits_BTV[:, t]` predicts `labels_BT[:, t]` (callers shift by one beforehand).
    """
    nll_BT = F.cross_entropy(logits_BTV.flatten(0, 1).float(), labels_BT.flatten(), reduction="none")
    return masked_mean(nll_BT.view_as(labels_BT), mask_BT)
