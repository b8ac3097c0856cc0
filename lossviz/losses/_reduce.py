r"""Masked reductions.

.. math::

    \operatorname{masked\_mean}(x, m, d) = \frac{\sum_d x \cdot m}{\sum_d m},
    \qquad
    \frac{\partial}{\partial x_i} \operatorname{masked\_mean} = \frac{m_i}{\sum_d m}

lossviz hardening over the seed: masked positions are *selected away* rather than
multiplied by zero, so a NaN or inf sitting at a masked position (padding garbage) cannot
leak into the result (``NaN * 0 = NaN``); and a slice whose mask is all zero has mean 0
instead of ``0 / 0 = NaN``.
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
    kept = torch.where(weights != 0, tensor * weights, torch.zeros_like(tensor))
    if dim is None:
        numerator, denominator = kept.sum(), weights.sum()
    else:
        numerator, denominator = kept.sum(dim=dim), weights.sum(dim=dim)
    # an empty slice divides 0 by 1 instead of 0 by 0
    return numerator / torch.where(denominator == 0, torch.ones_like(denominator), denominator)
