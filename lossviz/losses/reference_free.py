r"""Reference-free preference losses: SimPO, CPO and ORPO.

None of them needs a reference model: the margin is built from the policy's own
log-probabilities. Inputs are *summed* sequence log-probabilities
:math:`\ell = \sum_t \log\pi(y_t)` (as for :class:`~lossviz.losses.DPOLoss`) and, where a
loss uses per-token means :math:`\bar\ell = \ell / L`, the response lengths :math:`L`
(token counts). Every loss returns ``(loss, chosen_rewards, rejected_rewards)``.

**SimPO** (Meng et al. 2024, the SimPO objective; docs/references.md#simpo), with a target margin :math:`\gamma`:

.. math::

    \ell = -(1-\varepsilon)\log\sigma(u) - \varepsilon\log\sigma(-u),\qquad
    u = \beta(\bar\ell_c - \bar\ell_r) - \gamma,
    \qquad \frac{\partial \ell}{\partial \bar\ell_c} = -\beta\,\sigma(-u)\ (\varepsilon = 0).

``gamma`` is :math:`\gamma` as in the paper, TRL (``simpo_gamma``) and Liger: the loss is
:math:`-\log\sigma(\beta(\bar\ell_c - \bar\ell_r - \gamma/\beta))`, so the margin that the
sigmoid centres on is :math:`\gamma/\beta` nats per token. HALOs parametrises it by that
ratio (``gamma_beta_ratio``); ``SimPOLoss(beta, gamma_beta_ratio=r)`` is ``gamma = beta·r``.
Rewards are :math:`\beta\,\mathrm{sg}(\bar\ell)` (TRL).

**CPO** (Xu et al. 2024, the CPO objective; #cpo): a DPO loss on the policy's summed log-probabilities (a
uniform reference) plus a behaviour-cloning NLL on the chosen responses:

.. math::

    \ell = -(1-\varepsilon)\log\sigma(\beta(\ell_c - \ell_r)) - \varepsilon\log\sigma(-\beta(\ell_c - \ell_r))
        + \alpha\cdot\operatorname{mean}_i\big(-\ell_{c,i}/L_{c,i}\big).

Rewards are :math:`\beta\,\mathrm{sg}(\ell)`. TRL's NLL is the token mean over every chosen
token of the batch; lossviz averages each response's token mean (OpenRLHF's NLL), which
is the same when the lengths are equal.

**ORPO** (Hong et al. 2024, the ORPO objective; #orpo), with the odds of a response
:math:`\operatorname{odds}(y) = P/(1-P)` at the geometric-mean probability
:math:`P = e^{\bar\ell}`:

.. math::

    \ell = \operatorname{mean}_i(-\bar\ell_{c,i}) - \lambda\operatorname{mean}_i \log\sigma(o_c - o_r),
    \qquad o = \log\operatorname{odds} = \bar\ell - \log(1 - e^{\bar\ell}).

The odds ratio's gradient (derived in the ORPO paper) weights the pair by :math:`\sigma(o_r - o_c)` and
each side by :math:`\partial o/\partial\bar\ell = 1/(1 - e^{\bar\ell})`, which grows without
bound as :math:`\bar\ell \to 0`. ``log(1 − e^x)`` is computed as ``log(−expm1(x))`` for
:math:`x > -\log 2` and ``log1p(−exp(x))`` below (each branch fed only its own inputs, so no
``inf`` reaches the gradient): the naive form is ``−inf`` at :math:`\bar\ell = -10^{-9}` in
float32 (``exp`` rounds to 1). :math:`\bar\ell` is clamped to at most minus the smallest
normal number of its dtype, so a response of probability exactly 1 still gives a finite
loss. Rewards are :math:`\lambda\,\mathrm{sg}(\bar\ell)` (TRL); ``lambda_`` is TRL's
``beta``, and ``ORPOLoss(beta=0.1)`` is accepted as its alias.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_real, check_same_floats
from .preference import check_lengths

_PAIR = ("policy_chosen_logps", "policy_rejected_logps")


def _smoothed(u: torch.Tensor, eps: float) -> torch.Tensor:
    losses = -(1.0 - eps) * F.logsigmoid(u)
    if eps:
        losses = losses - eps * F.logsigmoid(-u)
    return losses


def _required(name: str, value, why: str):
    if value is None:
        raise ValueError(f"{name} is required: {why}")
    return value


class SimPOLoss(nn.Module):
    r"""SimPO: :math:`-\log\sigma(\beta(\bar\ell_c - \bar\ell_r) - \gamma)`, reference-free, length-normalised.

    ``SimPOLoss(beta=2.0, gamma=0.5, *, label_smoothing=0.0, gamma_beta_ratio=None)``;
    ``forward(policy_chosen_logps, policy_rejected_logps, chosen_lengths, rejected_lengths)``
    with summed log-probs. ``gamma_beta_ratio`` (HALOs) sets ``gamma = beta * ratio``.
    """

    def __init__(self, beta: float = 2.0, gamma: Optional[float] = None, *, label_smoothing: float = 0.0,
                 gamma_beta_ratio: Optional[float] = None) -> None:
        super().__init__()
        self.beta = check_real("beta", beta, low=0.0, low_open=True)
        if gamma is not None and gamma_beta_ratio is not None:
            raise ValueError("give gamma or gamma_beta_ratio, not both (gamma = beta * gamma_beta_ratio)")
        if gamma_beta_ratio is not None:
            ratio = check_real("gamma_beta_ratio", gamma_beta_ratio, low=0.0)
            gamma = self.beta * ratio
        self.gamma = check_real("gamma", 0.5 if gamma is None else gamma, low=0.0)
        self.gamma_beta_ratio = self.gamma / self.beta
        self.label_smoothing = check_real("label_smoothing", label_smoothing, low=0.0, high=0.5, high_open=True)

    def forward(self, policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                chosen_lengths: Optional[torch.Tensor] = None, rejected_lengths: Optional[torch.Tensor] = None,
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_same_floats(_PAIR, policy_chosen_logps, policy_rejected_logps)
        why = "SimPO compares per-token mean log-probs (pass the token counts)"
        lc = check_lengths("chosen_lengths", _required("chosen_lengths", chosen_lengths, why), _PAIR[0], policy_chosen_logps)
        lr = check_lengths("rejected_lengths", _required("rejected_lengths", rejected_lengths, why), _PAIR[1], policy_rejected_logps)
        chosen_mean = policy_chosen_logps / lc  # ℓ̄_c
        rejected_mean = policy_rejected_logps / lr  # ℓ̄_r
        u = self.beta * (chosen_mean - rejected_mean) - self.gamma
        losses = _smoothed(u, self.label_smoothing)
        return losses.mean(), self.beta * chosen_mean.detach(), self.beta * rejected_mean.detach()


class CPOLoss(nn.Module):
    r"""CPO: :math:`-\log\sigma(\beta(\ell_c - \ell_r)) + \alpha\,\mathrm{NLL}(y_c)`, reference-free.

    ``CPOLoss(beta=0.1, alpha=1.0, *, label_smoothing=0.0)``;
    ``forward(policy_chosen_logps, policy_rejected_logps, chosen_lengths=None)``; the lengths
    are required when ``alpha > 0`` (the NLL is a per-token mean).
    """

    def __init__(self, beta: float = 0.1, alpha: float = 1.0, *, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.beta = check_real("beta", beta, low=0.0, low_open=True)
        self.alpha = check_real("alpha", alpha, low=0.0)
        self.label_smoothing = check_real("label_smoothing", label_smoothing, low=0.0, high=0.5, high_open=True)

    def forward(self, policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                chosen_lengths: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_same_floats(_PAIR, policy_chosen_logps, policy_rejected_logps)
        losses = _smoothed(self.beta * (policy_chosen_logps - policy_rejected_logps), self.label_smoothing)
        loss = losses.mean()
        if self.alpha > 0.0:
            why = "alpha > 0 adds the chosen responses' token-mean NLL (pass their token counts, or alpha=0)"
            lc = check_lengths("chosen_lengths", _required("chosen_lengths", chosen_lengths, why), _PAIR[0], policy_chosen_logps)
            loss = loss + self.alpha * (-policy_chosen_logps / lc).mean()
        return loss, self.beta * policy_chosen_logps.detach(), self.beta * policy_rejected_logps.detach()


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    r""":math:`\log(1 - e^x)` for :math:`x \le 0`, accurate near 0 and far below it, finite gradient on both branches."""
    cut = -math.log(2.0)
    near = torch.log(-torch.expm1(torch.clamp(x, min=cut)))  # x in (−log 2, 0)
    far = torch.log1p(-torch.exp(torch.clamp(x, max=cut)))  # x ≤ −log 2
    return torch.where(x > cut, near, far)


def log_odds(mean_logps: torch.Tensor) -> torch.Tensor:
    r""":math:`\log\frac{P}{1-P}` at :math:`P = e^{\bar\ell}`, with :math:`\bar\ell` clamped below 0 (see the module docstring)."""
    top = -torch.finfo(mean_logps.dtype).tiny
    x = torch.clamp(mean_logps, max=top)
    return x - log1mexp(x)


class ORPOLoss(nn.Module):
    r"""ORPO: :math:`\mathrm{NLL}(y_c) - \lambda\log\sigma(o_c - o_r)`, log-odds :math:`o = \bar\ell - \log(1-e^{\bar\ell})`.

    ``ORPOLoss(lambda_=0.1)`` (``beta=`` is TRL's name for the same λ);
    ``forward(policy_chosen_logps, policy_rejected_logps, chosen_lengths, rejected_lengths)``.
    """

    def __init__(self, lambda_: Optional[float] = None, *, beta: Optional[float] = None) -> None:
        super().__init__()
        if lambda_ is not None and beta is not None:
            raise ValueError("give lambda_ or its TRL name beta, not both")
        value = beta if lambda_ is None else lambda_
        self.lambda_ = check_real("lambda_" if beta is None else "beta", 0.1 if value is None else value, low=0.0, low_open=True)
        self.beta = self.lambda_

    def forward(self, policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                chosen_lengths: Optional[torch.Tensor] = None, rejected_lengths: Optional[torch.Tensor] = None,
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_same_floats(_PAIR, policy_chosen_logps, policy_rejected_logps)
        why = "ORPO's odds use per-token mean log-probs (pass the token counts)"
        lc = check_lengths("chosen_lengths", _required("chosen_lengths", chosen_lengths, why), _PAIR[0], policy_chosen_logps)
        lr = check_lengths("rejected_lengths", _required("rejected_lengths", rejected_lengths, why), _PAIR[1], policy_rejected_logps)
        chosen_mean = policy_chosen_logps / lc
        rejected_mean = policy_rejected_logps / lr
        ratio = F.logsigmoid(log_odds(chosen_mean) - log_odds(rejected_mean))  # log σ(o_c − o_r)
        loss = (-chosen_mean).mean() - self.lambda_ * ratio.mean()
        return loss, self.lambda_ * chosen_mean.detach(), self.lambda_ * rejected_mean.detach()
