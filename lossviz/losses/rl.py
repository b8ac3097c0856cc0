r"""PPO losses: the clipped policy surrogate and the clipped value loss.

**PolicyLoss.** Per token, with ratio :math:`r = e^{\log\pi - \log\pi_{\mathrm{old}}}`,
advantage :math:`A` and the trust region :math:`[1-\varepsilon_l, 1+\varepsilon_h]`:

.. math::

    \ell = -\min\big(rA,\ \operatorname{clip}(r, 1-\varepsilon_l, 1+\varepsilon_h)\,A\big)
    = \begin{cases}
        -(1+\varepsilon_h)A & A \ge 0,\ r > 1+\varepsilon_h \\
        -(1-\varepsilon_l)A & A < 0,\ r < 1-\varepsilon_l \\
        -rA & \text{otherwise}
      \end{cases}
    \qquad
    \frac{\partial \ell}{\partial \log\pi} = \begin{cases} 0 & \text{clipped} \\ -rA & \text{otherwise.} \end{cases}

Once the ratio has left the trust region in the direction the advantage favours, the
gradient is zero. Dual clip (:math:`c > 1`) bounds the loss for :math:`A < 0`:
:math:`\ell = \min(\ell, -cA)`, which is :math:`-cA` (zero gradient) for :math:`r > c`.
Reduction: per-sequence masked mean then batch mean (seed), or with
``token_level_loss=True`` one mean over all unmasked tokens of the batch.

**ValueLoss.** With :math:`v_c = v_{\mathrm{old}} + \operatorname{clip}(v - v_{\mathrm{old}}, -\varepsilon_l, \varepsilon_h)`
and return :math:`R`:

.. math::

    \ell = \tfrac12 \max\big((v_c - R)^2,\ (v - R)^2\big),
    \qquad
    \frac{\partial \ell}{\partial v} = \begin{cases} 0 & \text{the clipped term is larger and } v_c \text{ is clipped} \\ v - R & \text{otherwise,} \end{cases}

pessimistic: the clip only binds when it makes the loss larger; without ``clip_eps`` it is
:math:`\tfrac12 (v-R)^2`.

lossviz hardening: the log-ratio is clamped at ``LOG_RATIO_MAX = 20`` before ``exp`` (as
current OpenRLHF does), so a log-ratio of 100 gives a finite loss and gradient in float32
instead of ``inf``/``NaN``; below 20 the result is the seed's. A fully masked sequence
contributes 0 instead of NaN (see :func:`masked_mean`).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ._checks import check_mask, check_real, check_same_floats
from ._reduce import masked_mean

# exp(20) ~ 4.9e8: far outside any trust region, far below float32 overflow (exp(88.7))
LOG_RATIO_MAX = 20.0


def _reduce(loss: torch.Tensor, action_mask: Optional[torch.Tensor], token_level_loss: bool) -> torch.Tensor:
    if token_level_loss:
        return masked_mean(loss, action_mask)  # one mean over every unmasked token
    return masked_mean(loss, action_mask, dim=-1).mean()  # per-sequence mean, then batch mean


def _check_flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def _clip_bounds(clip_eps, clip_eps_low, clip_eps_high, *, required: bool):
    """Resolve (low, high) from the symmetric ``clip_eps`` and the asymmetric overrides."""
    low = clip_eps_low if clip_eps_low is not None else clip_eps
    high = clip_eps_high if clip_eps_high is not None else clip_eps
    if low is None and high is None and not required:
        return None, None
    if low is None or high is None:
        missing = "clip_eps_low" if low is None else "clip_eps_high"
        raise ValueError(f"{missing} is needed: give clip_eps, or both clip_eps_low and clip_eps_high")
    low_name = "clip_eps_low" if clip_eps_low is not None else "clip_eps"
    high_name = "clip_eps_high" if clip_eps_high is not None else "clip_eps"
    return (
        check_real(low_name, low, low=0.0, low_open=True),
        check_real(high_name, high, low=0.0, low_open=True),
    )


class PolicyLoss(nn.Module):
    """PPO clipped surrogate loss, with optional asymmetric clip, dual clip and token-level mean."""

    def __init__(
        self,
        clip_eps: float = 0.2,
        *,
        clip_eps_low: Optional[float] = None,
        clip_eps_high: Optional[float] = None,
        dual_clip: Optional[float] = None,
        token_level_loss: bool = False,
    ) -> None:
        super().__init__()
        if clip_eps is not None:
            check_real("clip_eps", clip_eps, low=0.0, low_open=True)
        self.clip_eps = clip_eps
        self.clip_eps_low, self.clip_eps_high = _clip_bounds(clip_eps, clip_eps_low, clip_eps_high, required=True)
        if self.clip_eps_low >= 1.0:
            name = "clip_eps_low" if clip_eps_low is not None else "clip_eps"
            raise ValueError(f"{name} must be < 1 (the lower clip bound 1 - eps must stay positive), got {self.clip_eps_low}")
        self.dual_clip = None if dual_clip is None else check_real("dual_clip", dual_clip, low=1.0, low_open=True)
        self.token_level_loss = _check_flag("token_level_loss", token_level_loss)

    def forward(
        self,
        log_probs: torch.Tensor,
        old_log_probs: torch.Tensor,
        advantages: torch.Tensor,
        action_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        check_same_floats(("log_probs", "old_log_probs", "advantages"), log_probs, old_log_probs, advantages)
        check_mask("action_mask", action_mask, "log_probs", log_probs)
        # in place on the fresh difference: the overflow guard costs no extra tensor
        log_ratio = (log_probs - old_log_probs).clamp_(max=LOG_RATIO_MAX)  # (B, T)
        ratio = log_ratio.exp()  # r
        surr_unclipped = ratio * advantages
        surr_clipped = ratio.clamp(1.0 - self.clip_eps_low, 1.0 + self.clip_eps_high) * advantages
        objective = torch.min(surr_unclipped, surr_clipped)
        if self.dual_clip is not None:
            # for A < 0 the objective may not fall below c * A: the loss is bounded by -c * A
            objective = torch.where(advantages < 0, torch.max(objective, self.dual_clip * advantages), objective)
        return _reduce(-objective, action_mask, self.token_level_loss)


class ValueLoss(nn.Module):
    """PPO value loss: half the squared error, pessimistically clipped around the old values."""

    def __init__(
        self,
        clip_eps: Optional[float] = None,
        *,
        clip_eps_low: Optional[float] = None,
        clip_eps_high: Optional[float] = None,
        dual_clip: Optional[float] = None,
        token_level_loss: bool = False,
    ) -> None:
        super().__init__()
        if dual_clip is not None:
            raise ValueError(
                "dual_clip applies to PolicyLoss only: it bounds the loss for negative advantages, "
                "and ValueLoss has no advantages"
            )
        if clip_eps is not None:
            check_real("clip_eps", clip_eps, low=0.0, low_open=True)
        self.clip_eps = clip_eps
        self.clip_eps_low, self.clip_eps_high = _clip_bounds(clip_eps, clip_eps_low, clip_eps_high, required=False)
        self.dual_clip = None
        self.token_level_loss = _check_flag("token_level_loss", token_level_loss)

    def forward(
        self,
        values: torch.Tensor,
        old_values: torch.Tensor,
        returns: torch.Tensor,
        action_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        check_same_floats(("values", "old_values", "returns"), values, old_values, returns)
        check_mask("action_mask", action_mask, "values", values)
        unclipped = (values - returns) ** 2
        if self.clip_eps_low is None:
            loss = unclipped
        else:
            values_clipped = old_values + (values - old_values).clamp(-self.clip_eps_low, self.clip_eps_high)
            loss = torch.max((values_clipped - returns) ** 2, unclipped)  # the larger error wins
        return 0.5 * _reduce(loss, action_mask, self.token_level_loss)
