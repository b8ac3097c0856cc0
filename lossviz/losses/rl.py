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
Reduction: per-sequence masked mean then batch mean (as OpenRLHF v0.5.3), or with
``token_level_loss=True`` one mean over all unmasked tokens of the batch.

**ValueLoss.** With :math:`v_c = v_{\mathrm{old}} + \operatorname{clip}(v - v_{\mathrm{old}}, -\varepsilon_l, \varepsilon_h)`
and return :math:`R`:

.. math::

    \ell = \tfrac12 \max\big((v_c - R)^2,\ (v - R)^2\big),
    \qquad
    \frac{\partial \ell}{\partial v} = \begin{cases} 0 & \text{the clipped term is larger and } v_c \text{ is clipped} \\ v - R & \text{otherwise,} \end{cases}

pessimistic: the clip only binds when it makes the loss larger; without ``clip_eps`` it is
:math:`\tfrac12 (v-R)^2`.

Drop-in behaviour and where it departs from OpenRLHF v0.5.3. The ratio :math:`e^x` of a
large log-ratio :math:`x` overflows. lossviz clamps :math:`x` before ``exp`` at

.. math::

    x_{\max} = \tfrac34 \log(\texttt{finfo.max})
    = 532.3\ \text{(float64)},\ 66.5\ \text{(float32, bfloat16)},\ 8.3\ \text{(float16)},

so the ratio never exceeds :math:`\texttt{finfo.max}^{3/4}` and leaves a factor
:math:`\texttt{finfo.max}^{1/4}` (1e77 in float64, 4e9 in float32, 16 in float16) of room
for the advantage and the sums of the reduction. For every log-ratio up to :math:`x_{\max}` the
outputs and gradients are OpenRLHF v0.5.3's (the clamp is the identity there); beyond it
the original's ratio exceeds :math:`1.5 \cdot 10^{231}` (float64) or :math:`7.9 \cdot 10^{28}`
(float32), and lossviz returns the loss at :math:`x_{\max}` with zero gradient, where the
original goes on growing until it returns ``inf`` and ``NaN`` gradients. ``log_ratio_max=c`` (keyword-only) moves the clamp
to :math:`c` instead, e.g. ``20.0``, the upper log-ratio clamp of later OpenRLHF releases:
then, as there, every log-ratio above :math:`c` counts as :math:`c` (loss
:math:`-\min(e^c A, \operatorname{clip}(e^c) A)`, zero gradient).

``advantages`` may have the shape of ``log_probs`` or any shape that broadcasts to it,
e.g. ``[B, 1]`` for one advantage per sequence, as in OpenRLHF. A fully masked sequence
contributes 0 instead of NaN (see :func:`masked_mean`).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ._checks import check_floats, check_mask, check_real, check_same_floats
from ._reduce import masked_mean


def log_ratio_limit(dtype: torch.dtype) -> float:
    """The default clamp of the log-ratio for ``dtype``: three quarters of ``log(finfo(dtype).max)``."""
    return 0.75 * math.log(torch.finfo(dtype).max)


# one dict lookup per call on the hot path
_LOG_RATIO_LIMITS = {dt: log_ratio_limit(dt) for dt in (torch.float64, torch.float32, torch.bfloat16, torch.float16)}


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


def _check_broadcast_advantages(log_probs, old_log_probs, advantages) -> None:
    """advantages of another shape must broadcast to the shape of log_probs (e.g. [B, 1])."""
    check_same_floats(("log_probs", "old_log_probs"), log_probs, old_log_probs)
    check_floats(advantages=advantages)
    try:
        fits = torch.broadcast_shapes(advantages.shape, log_probs.shape) == log_probs.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"advantages must have the shape of log_probs {tuple(log_probs.shape)} or broadcast to it "
            f"(e.g. {tuple(log_probs.shape[:-1]) + (1,)}), got {tuple(advantages.shape)}"
        )


class PolicyLoss(nn.Module):
    """PPO clipped surrogate loss, with optional asymmetric clip, dual clip and token-level mean.

    ``log_ratio_max`` (keyword-only): where the log-ratio is clamped before ``exp``. ``None``
    (default) clamps at :func:`log_ratio_limit` of the input dtype (532.3 in float64), which
    leaves every result of OpenRLHF v0.5.3 with a ratio below ``finfo.max ** 0.75`` unchanged; a
    number clamps there instead (``20.0`` as later OpenRLHF releases).
    ``advantages`` may be ``[B, 1]`` (broadcast over the tokens).
    """

    def __init__(
        self,
        clip_eps: float = 0.2,
        *,
        clip_eps_low: Optional[float] = None,
        clip_eps_high: Optional[float] = None,
        dual_clip: Optional[float] = None,
        token_level_loss: bool = False,
        log_ratio_max: Optional[float] = None,
    ) -> None:
        super().__init__()
        if clip_eps is not None:
            check_real("clip_eps", clip_eps, low=0.0, low_open=True)
        self.clip_eps = clip_eps
        self.clip_eps_low, self.clip_eps_high = _clip_bounds(clip_eps, clip_eps_low, clip_eps_high, required=True)
        # None: the dtype's own limit (drop-in); a number: a fixed clamp chosen by the user
        self.log_ratio_max = None if log_ratio_max is None else check_real("log_ratio_max", log_ratio_max)
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
        try:
            per_token = advantages.shape == log_probs.shape
        except AttributeError:  # not tensors: the detailed checks below name the argument
            per_token = True
        if per_token:
            check_same_floats(("log_probs", "old_log_probs", "advantages"), log_probs, old_log_probs, advantages)
        else:  # e.g. one advantage per sequence, [B, 1]
            _check_broadcast_advantages(log_probs, old_log_probs, advantages)
        check_mask("action_mask", action_mask, "log_probs", log_probs)
        limit = self.log_ratio_max
        if limit is None:
            limit = _LOG_RATIO_LIMITS.get(log_probs.dtype) or log_ratio_limit(log_probs.dtype)
        # in place on the fresh difference: the overflow guard costs no extra tensor
        log_ratio = (log_probs - old_log_probs).clamp_(max=limit)  # (B, T)
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
