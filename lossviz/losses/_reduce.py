r"""Masked reductions.

.. math::

    \operatorname{masked\_mean}(x, m, d) = \frac{\sum_d x \cdot m}{\sum_d m},
    \qquad
    \frac{\partial}{\partial x_i} \operatorname{masked\_mean} = \frac{m_i}{\sum_d m}

lossviz hardening over OpenRLHF v0.5.3: a slice whose mask is all zero has mean 0 instead of
``0 / 0 = NaN``. ``masked_mean`` multiplies masked positions by zero as OpenRLHF does, so a NaN
there propagates (``NaN * 0 = NaN``); its callers keep the padding out before: ``PolicyLoss``
selects masked positions away with ``torch.where`` on its inputs (about 1.3x its CPU time,
measured by ``benchmarks/bench_rl.py``), and :func:`agg_loss` does so on the loss matrix.
"""

from __future__ import annotations

from typing import Optional

import torch


def masked_mean(tensor: torch.Tensor, mask: Optional[torch.Tensor], dim: Optional[int] = None) -> torch.Tensor:
    """Mean of ``tensor`` over ``dim`` counting only positions where ``mask`` is non-zero.

    ``mask=None`` is a plain ``tensor.mean(dim)``. ``dim=None`` reduces over every element.
    A slice with no unmasked element returns 0.
    """
    if mask is None:
        return tensor.mean() if dim is None else tensor.mean(dim=dim)
    weights = mask.to(tensor.dtype)
    kept = tensor * weights
    if dim is None:
        numerator, denominator = kept.sum(), weights.sum()
    else:
        numerator, denominator = kept.sum(dim=dim), weights.sum(dim=dim)
    # an empty slice divides 0 by the smallest normal number instead of 0 by 0 (one cheap op)
    return numerator / denominator.clamp(min=torch.finfo(denominator.dtype).tiny)


# ----------------------------------------------------------------------------- aggregation modes (verl's names)

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def check_agg_mode(mode, name: str = "loss_agg_mode") -> str:
    """``mode`` must be one of :data:`AGG_MODES`; the message lists them."""
    if not isinstance(mode, str) or mode not in AGG_MODES:
        choices = ", ".join(repr(m) for m in AGG_MODES)
        raise ValueError(f"{name} must be one of {choices}, got {mode!r}")
    return mode


def check_scale_factor(loss_scale_factor, loss_agg_mode: str) -> Optional[float]:
    """``loss_scale_factor`` is a positive number, and only for ``seq-mean-token-sum-norm``."""
    if loss_scale_factor is None:
        return None
    if loss_agg_mode != "seq-mean-token-sum-norm":
        raise ValueError(
            f"loss_scale_factor applies to loss_agg_mode='seq-mean-token-sum-norm' only, got loss_agg_mode={loss_agg_mode!r}"
        )
    from ._checks import check_real

    return check_real("loss_scale_factor", loss_scale_factor, low=0.0, low_open=True)


def aggregate(loss: torch.Tensor, weights: Optional[torch.Tensor], mode: str, scale_factor: Optional[float] = None) -> torch.Tensor:
    """The reduction of :func:`agg_loss` without checks and without the ``torch.where``.

    ``weights`` (the mask as a float tensor of ``loss``'s dtype, or ``None``) multiplies ``loss``,
    so ``loss`` must be finite where the weight is 0 (callers keep it so).
    """
    if mode == "token-mean":
        return masked_mean(loss, weights)
    if weights is None:
        seq_sum = loss.sum(dim=-1)
        seq_count = torch.full_like(seq_sum, loss.shape[-1])
    else:
        seq_sum = (loss * weights).sum(dim=-1)
        seq_count = weights.sum(dim=-1)
    if mode == "seq-mean-token-mean":
        per_seq = seq_sum / seq_count.clamp(min=torch.finfo(seq_count.dtype).tiny)
    elif mode == "seq-mean-token-sum":
        per_seq = seq_sum
    else:  # seq-mean-token-sum-norm: the Dr. GRPO constant, the padded length by default
        per_seq = seq_sum / (loss.shape[-1] if scale_factor is None else scale_factor)
    # fully masked sequences do not count (verl); a batch of them gives 0
    n_seq = (seq_count > 0).sum().clamp(min=1).to(per_seq.dtype)
    return per_seq.sum() / n_seq


def agg_loss(
    loss_mat: torch.Tensor,
    loss_mask: Optional[torch.Tensor],
    loss_agg_mode: str,
    *,
    loss_scale_factor: Optional[float] = None,
) -> torch.Tensor:
    r"""Reduce a per-token loss ``[..., T]`` to a scalar as verl's ``agg_loss`` does.

    Every mode is a weighted sum :math:`L = \sum_{i,t} w_{i,t}\,\ell_{i,t}` over the unmasked
    tokens (:math:`m_{i,t} \ne 0`; fractional masks weigh tokens), with :math:`L_i = \sum_t m_{i,t}`,
    :math:`B'` the number of sequences with :math:`L_i > 0` (fully masked sequences are not
    counted, as in verl) and :math:`T` the padded length:

    - ``token-mean``: :math:`w_{i,t} = m_{i,t} / \sum_{j,s} m_{j,s}` (DAPO §3.3, docs/references.md#dapo;
      TRL ``dapo``; OpenRLHF ``token_level_loss=True``);
    - ``seq-mean-token-mean``: :math:`w_{i,t} = m_{i,t} / (B' L_i)` (GRPO §4.1.1, #grpo; TRL ``grpo``;
      OpenRLHF's default);
    - ``seq-mean-token-sum``: :math:`w_{i,t} = m_{i,t} / B'` (a verl option);
    - ``seq-mean-token-sum-norm``: :math:`w_{i,t} = m_{i,t} / (B' C)` (Dr. GRPO, #drgrpo; TRL ``dr_grpo``).
      verl's own ``agg_loss`` of this name divides the sum over all sequences by :math:`C` alone, a
      loss :math:`B` times larger (the same direction; a learning rate :math:`B` times smaller matches it).

    :math:`C` is ``loss_scale_factor``, by default :math:`T` (``loss_mat.shape[-1]``), the
    constant that Dr. GRPO (docs/references.md#drgrpo, §3.1) puts in place of the length
    :math:`L_i`; the gradient a token receives is its weight :math:`w_{i,t}` times
    :math:`\partial\ell_{i,t}`. A loss value at a masked position (NaN and inf included) never
    reaches the result: it is selected away with ``torch.where`` before the sum; a batch with no
    unmasked token gives 0. ``loss_mask=None`` counts every token. Leading dimensions of
    ``loss_mat`` are sequences (a 1-D ``loss_mat`` is one sequence).
    """
    from ._checks import check_mask, check_nonempty, check_tensor

    check_agg_mode(loss_agg_mode)
    scale = check_scale_factor(loss_scale_factor, loss_agg_mode)
    check_tensor("loss_mat", loss_mat)
    check_nonempty("loss_mat", loss_mat)
    check_mask("loss_mask", loss_mask, "loss_mat", loss_mat)
    weights = None
    if loss_mask is not None:
        if loss_mask.is_complex():
            raise TypeError(f"loss_mask must be real, got {loss_mask.dtype}")
        weights = loss_mask.to(loss_mat.dtype)
        loss_mat = torch.where(loss_mask != 0, loss_mat, torch.zeros((), dtype=loss_mat.dtype, device=loss_mat.device))
    return aggregate(loss_mat, weights, loss_agg_mode, scale)
