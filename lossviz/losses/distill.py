r"""Distillation beyond KD: GKD's generalised Jensen–Shannon divergence and the reverse KL.

With student logits :math:`z`, teacher logits :math:`t` and temperature :math:`\tau`, let
:math:`p_S = \operatorname{softmax}(z/\tau)`, :math:`p_T = \operatorname{softmax}(t/\tau)` and,
for :math:`\beta \in (0, 1)`, the mixture :math:`m = \beta p_T + (1-\beta) p_S`. Per token,

.. math::

    \mathrm{JSD}_\beta = \beta\,\mathrm{KL}(p_T \,\|\, m) + (1-\beta)\,\mathrm{KL}(p_S \,\|\, m),
    \qquad
    \mathrm{JSD}_0 := \mathrm{KL}(p_T \,\|\, p_S),\quad \mathrm{JSD}_1 := \mathrm{KL}(p_S \,\|\, p_T).

The interior formula tends to 0 at both ends (:math:`m \to p_S` as :math:`\beta \to 0`, and
:math:`\beta\,\mathrm{KL}(p_T\|p_S) \to 0`), so :math:`\beta = 0` and :math:`\beta = 1` are
computed as the forward (mass-covering) and the reverse (mode-seeking) KL, as GKD
(Agarwal et al. 2024, their JSD(β); docs/references.md#gkd) and TRL's ``generalized_jsd_loss`` do. To first
order the interior value is :math:`\beta\,\mathrm{KL}(p_T\|p_S)` near :math:`\beta = 0` and
:math:`(1-\beta)\,\mathrm{KL}(p_S\|p_T)` near :math:`\beta = 1`: the two ends are those KLs
without the vanishing factor. The gradient with respect to the student logits is, at
:math:`\tau = 1`,

.. math::

    \frac{\partial\,\mathrm{KL}(p_T\|p_S)}{\partial z} = p_S - p_T,
    \qquad
    \frac{\partial\,\mathrm{KL}(p_S\|p_T)}{\partial z_k} = p_{S,k}\Big(\log\frac{p_{S,k}}{p_{T,k}} - \mathrm{KL}(p_S\|p_T)\Big).

The loss is the mean of the per-token value over the positions whose label is not
``ignore_index`` (labels are not shifted, as in :class:`~lossviz.losses.KDLoss`). There is
no :math:`\tau^2` factor (TRL's GKD has none; :class:`~lossviz.losses.KDLoss` has one).
Vocabulary entries with logit :math:`-\infty` have probability 0 and drop out; an entry the
student forbids but the teacher allows makes the forward KL huge (the log-probabilities are
clamped at the dtype's lowest finite value, so it stays finite and its gradient defined).

``chunk_size=N`` computes N tokens at a time, each chunk's gradient by autograd inside the
forward pass, so the peak memory is the logits gradient plus ``O(N × vocab)``, with the
same value and gradient (first-order only: the stored gradient is not differentiable
again, as for the other chunked losses). :func:`gkd_per_token` is the per-token loss on any
chunk of logits, for the fused-linear forms.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import IGNORE_INDEX, check_real, check_tensor, compute_dtype
from .chunked import check_chunk_size


def _kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Σ_v p_v (log p_v − log q_v) over the last axis; entries with p_v = 0 contribute 0."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), 0.0).sum(dim=-1)


def gkd_per_token(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float, temperature: float = 1.0) -> torch.Tensor:
    r"""Generalised JSD per token: shape ``student_logits.shape[:-1]``, differentiable in both inputs.

    ``beta = 0``: :math:`\mathrm{KL}(p_T\|p_S)`; ``beta = 1``: :math:`\mathrm{KL}(p_S\|p_T)`;
    otherwise :math:`\beta\,\mathrm{KL}(p_T\|m) + (1-\beta)\,\mathrm{KL}(p_S\|m)`. No masking,
    no reduction; computed in the inputs' dtype (cast them first for a wider one).
    """
    low = torch.finfo(student_logits.dtype).min
    if temperature != 1.0:
        student_logits = student_logits / temperature
        teacher_logits = teacher_logits / temperature
    log_s = F.log_softmax(student_logits, dim=-1).clamp(min=low)
    log_t = F.log_softmax(teacher_logits, dim=-1).clamp(min=low)
    if beta == 0.0:
        return _kl_rows(log_t, log_s)  # forward KL
    if beta == 1.0:
        return _kl_rows(log_s, log_t)  # reverse KL
    log_m = torch.logaddexp(log_s + math.log1p(-beta), log_t + math.log(beta))
    return beta * _kl_rows(log_t, log_m) + (1.0 - beta) * _kl_rows(log_s, log_m)


class _ChunkedGKD(torch.autograd.Function):
    """Mean over kept rows of gkd_per_token, chunk by chunk; gradients computed in forward."""

    @staticmethod
    def forward(ctx, student2d, teacher2d, keep, beta, temperature, chunk_size):
        dtype = torch.promote_types(compute_dtype(student2d), compute_dtype(teacher2d))
        denom = keep.sum().clamp(min=1).to(dtype)
        want_z, want_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_z = torch.zeros_like(student2d) if want_z else None
        grad_t = torch.zeros_like(teacher2d) if want_t else None
        total = torch.zeros((), dtype=dtype, device=student2d.device)
        for start in range(0, student2d.shape[0], chunk_size):
            end = start + chunk_size
            k = keep[start:end]
            if not bool(k.any()):
                continue
            rows = k.unsqueeze(1)
            z = torch.where(rows, student2d[start:end].detach().to(dtype), 0.0).requires_grad_(want_z)
            t = torch.where(rows, teacher2d[start:end].detach().to(dtype), 0.0).requires_grad_(want_t)
            with torch.enable_grad():
                part = torch.where(k, gkd_per_token(z, t, beta, temperature), 0.0).sum()
                wanted = [x for x, w in ((z, want_z), (t, want_t)) if w]
                grads = torch.autograd.grad(part, wanted) if wanted else ()
            grads = list(grads)
            if want_z:
                grad_z[start:end] = (grads.pop(0) / denom).to(grad_z.dtype)
            if want_t:
                grad_t[start:end] = (grads.pop(0) / denom).to(grad_t.dtype)
            total += part.detach()
        ctx.save_for_backward(grad_z, grad_t)
        return total / denom

    @staticmethod
    def backward(ctx, grad_output):
        grad_z, grad_t = ctx.saved_tensors
        one = grad_output.numel() == 1 and float(grad_output) == 1.0

        def scaled(g):
            return None if g is None else (g if one else g * grad_output.to(g.dtype))

        return scaled(grad_z), scaled(grad_t), None, None, None, None


def _check_distill_inputs(logits, teacher_logits, label):
    check_tensor("logits", logits)
    check_tensor("teacher_logits", teacher_logits)
    check_tensor("label", label, floating=False)
    if logits.dim() < 2:
        raise ValueError(f"logits must have shape (..., T, V), got {tuple(logits.shape)}")
    if teacher_logits.shape != logits.shape:
        raise ValueError(f"teacher_logits must have the shape of logits {tuple(logits.shape)}, got {tuple(teacher_logits.shape)}")
    if label.shape != logits.shape[:-1]:
        raise ValueError(
            f"label must have the shape of logits without its vocabulary axis {tuple(logits.shape[:-1])}, got {tuple(label.shape)}"
        )


class GKDLoss(nn.Module):
    r"""Generalised JSD distillation (GKD): ``beta = 0`` forward KL, ``beta = 1`` reverse KL, exactly.

    ``GKDLoss(beta=0.5, temperature=1.0, *, chunk_size=None, ignore_index=-100)``;
    ``forward(logits, teacher_logits, label)`` as :class:`~lossviz.losses.KDLoss`
    (``label`` marks the kept positions, unshifted). The teacher gets a gradient only if its
    logits require one. See the module docstring for the math.
    """

    def __init__(self, beta: float = 0.5, temperature: float = 1.0, *, chunk_size: Optional[int] = None,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.beta = check_real("beta", beta, low=0.0, high=1.0)
        self.temperature = check_real("temperature", temperature, low=0.0, low_open=True)
        self.chunk_size = check_chunk_size(chunk_size)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__} {ignore_index!r}")
        self.ignore_index = ignore_index
        self.IGNORE_INDEX = ignore_index

    def forward(self, logits: torch.Tensor, teacher_logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        _check_distill_inputs(logits, teacher_logits, label)
        vocab = logits.shape[-1]
        keep = (label != self.ignore_index).reshape(-1)  # (N,)
        student2d, teacher2d = logits.reshape(-1, vocab), teacher_logits.reshape(-1, vocab)
        if self.chunk_size:
            return _ChunkedGKD.apply(student2d, teacher2d, keep, self.beta, self.temperature, self.chunk_size)
        dtype = torch.promote_types(compute_dtype(logits), compute_dtype(teacher_logits))
        rows = keep.unsqueeze(1)
        # ignored rows become zeros before the softmaxes: NaN or inf padding there never reaches the gradient
        z = torch.where(rows, student2d.to(dtype), 0.0)
        t = torch.where(rows, teacher2d.to(dtype), 0.0)
        per_token = gkd_per_token(z, t, self.beta, self.temperature)  # (N,)
        return torch.where(keep, per_token, 0.0).sum() / keep.sum().clamp(min=1)


class ReverseKLLoss(GKDLoss):
    r"""Reverse KL :math:`\mathrm{KL}(p_S\|p_T) = \sum_v p_S(\log p_S - \log p_T)` per token (MiniLLM, docs/references.md#minillm; ``GKDLoss(beta=1)``).

    Mode-seeking: the student is penalised for mass where the teacher has little, not for
    missing teacher modes. ``ReverseKLLoss(temperature=1.0, *, chunk_size=None, ignore_index=-100)``.
    """

    def __init__(self, temperature: float = 1.0, *, chunk_size: Optional[int] = None, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__(1.0, temperature, chunk_size=chunk_size, ignore_index=ignore_index)
