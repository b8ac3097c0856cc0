r"""Preference losses: DPO, cDPO (label smoothing), IPO, KTO and vanilla KTO.

**DPO / cDPO / IPO.** Every input is a sequence log-probability (a sum over response
tokens). The implicit-reward margin of pair :math:`i` is

.. math::

    h_i = (\pi^c_i - \pi^r_i) - (\pi^{c,\mathrm{ref}}_i - \pi^{r,\mathrm{ref}}_i).

With label smoothing :math:`\varepsilon` (cDPO; :math:`\varepsilon = 0` is DPO):

.. math::

    \ell(h) = -(1-\varepsilon)\log\sigma(\beta h) - \varepsilon \log\sigma(-\beta h),
    \qquad
    \frac{\partial \ell}{\partial \pi^c} = -\frac{\partial \ell}{\partial \pi^r}
        = -\beta\big[(1-\varepsilon)\,\sigma(-\beta h) - \varepsilon\,\sigma(\beta h)\big],

so plain DPO pushes with weight :math:`\beta\sigma(-\beta h)` (DPO paper, Eq. 7), largest
when the pair is ranked wrongly, and cDPO stops at :math:`\beta h^* = \log\frac{1-\varepsilon}{\varepsilon}`.
IPO (Azar et al., Eq. 17) regresses the margin on a target:
:math:`\ell(h) = (h - \tfrac{1}{2\beta})^2`, :math:`\partial\ell/\partial h = 2(h - \tfrac{1}{2\beta})`.
The loss is the mean over pairs; rewards are :math:`\beta\,\mathrm{sg}(\pi - \pi^{\mathrm{ref}})`.

**KTO** (unpaired). With :math:`\Delta = \pi - \pi^{\mathrm{ref}}` and a reference point
:math:`z = \max\big(0, \mathrm{sg}(\overline{\pi^{KL} - \pi^{KL,\mathrm{ref}}})\big)`
(mean over the mismatched KL batch, averaged over ranks, never differentiated):

.. math::

    \ell_D = w_D\,\big(1 - \sigma(\beta(\Delta - z))\big), \quad
    \ell_U = w_U\,\big(1 - \sigma(\beta(z - \Delta))\big), \quad
    \frac{\partial \ell_D}{\partial \Delta} = -w_D\,\beta\,\sigma(u)\,\sigma(-u),\ u = \beta(\Delta - z),

a bell-shaped gradient that vanishes on both sides. The loss is the mean of the
concatenated weighted losses (denominator :math:`n_D + n_U`).

**Vanilla KTO** (balanced sampling) uses :math:`z_c = \max(0, \overline{\Delta_c})` and
:math:`z_r = \max(0, \overline{\Delta_r})`, *not* detached:
:math:`\ell = \operatorname{mean}\big[1 - \sigma(\beta(\Delta_c - z_r)),\ 1 - \sigma(\beta(z_c - \Delta_r))\big]`.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ._checks import check_floats, check_nonempty, check_real, check_same_floats, check_same_shape

_PAIR_NAMES = ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps")


def _check_positive_beta(beta) -> float:
    return check_real("beta", beta, low=0.0, low_open=True)


class DPOLoss(nn.Module):
    """DPO loss; ``label_smoothing > 0`` gives cDPO and ``ipo=True`` gives IPO."""

    def __init__(self, beta: float, label_smoothing: float = 0.0, ipo: bool = False) -> None:
        super().__init__()
        self.beta = _check_positive_beta(beta)
        # at 0.5 both labels are equally likely and the loss no longer depends on the margin
        self.label_smoothing = check_real("label_smoothing", label_smoothing, low=0.0, high=0.5, high_open=True)
        if not isinstance(ipo, bool):
            raise TypeError(f"ipo must be a bool, got {type(ipo).__name__}")
        self.ipo = ipo

    def forward(
        self,
        policy_chosen_logps: torch.Tensor,
        policy_rejected_logps: torch.Tensor,
        reference_chosen_logps: torch.Tensor,
        reference_rejected_logps: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_same_floats(_PAIR_NAMES, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
        chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (N,)
        rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (N,)
        margin = chosen_logratios - rejected_logratios  # (N,)  h
        if self.ipo:
            losses = (margin - 1.0 / (2.0 * self.beta)) ** 2  # IPO Eq. 17
        else:
            eps = self.label_smoothing
            losses = -(1.0 - eps) * F.logsigmoid(self.beta * margin)  # trust the label
            if eps:
                losses = losses - eps * F.logsigmoid(-self.beta * margin)  # the label is flipped
        chosen_rewards = self.beta * chosen_logratios.detach()
        rejected_rewards = self.beta * rejected_logratios.detach()
        return losses.mean(), chosen_rewards, rejected_rewards


def _distributed_mean(value: torch.Tensor, world_size: int) -> torch.Tensor:
    """Mean over ranks when a process group is up; the local value otherwise."""
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value / world_size
    return value


class KTOLoss(nn.Module):
    """KTO loss for uneven sampling (either side may be empty)."""

    def __init__(
        self,
        beta: float,
        desirable_weight: float,
        undesirable_weight: float,
        world_size: int,
        device: torch.device,
    ) -> None:
        super().__init__()
        self.beta = _check_positive_beta(beta)
        self.desirable_weight = check_real("desirable_weight", desirable_weight, low=0.0)
        self.undesirable_weight = check_real("undesirable_weight", undesirable_weight, low=0.0)
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be a positive int, got {world_size!r}")
        self.world_size = world_size
        self.device = device

    def forward(
        self,
        policy_chosen_logps: torch.Tensor,
        policy_rejected_logps: torch.Tensor,
        policy_KL_logps: torch.Tensor,
        reference_chosen_logps: torch.Tensor,
        reference_rejected_logps: torch.Tensor,
        reference_KL_logps: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        check_floats(
            policy_chosen_logps=policy_chosen_logps,
            policy_rejected_logps=policy_rejected_logps,
            policy_KL_logps=policy_KL_logps,
            reference_chosen_logps=reference_chosen_logps,
            reference_rejected_logps=reference_rejected_logps,
            reference_KL_logps=reference_KL_logps,
        )
        check_same_shape(policy_chosen_logps=policy_chosen_logps, reference_chosen_logps=reference_chosen_logps)
        check_same_shape(policy_rejected_logps=policy_rejected_logps, reference_rejected_logps=reference_rejected_logps)
        check_same_shape(policy_KL_logps=policy_KL_logps, reference_KL_logps=reference_KL_logps)
        check_nonempty("policy_KL_logps", policy_KL_logps)
        n_chosen, n_rejected = policy_chosen_logps.shape[0], policy_rejected_logps.shape[0]
        if n_chosen == 0 and n_rejected == 0:
            raise ValueError(
                "policy_chosen_logps and policy_rejected_logps are both empty: KTO needs at least one example"
            )

        # reference point z: detached mean KL of the mismatched batch, averaged over ranks, clamped at 0
        kl = (policy_KL_logps - reference_KL_logps).mean().detach()
        kl = _distributed_mean(kl, self.world_size).clamp(min=0)

        chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (n_D,)
        rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (n_U,)
        # an empty side yields empty tensors, so the mean below divides by n_D + n_U
        # 1 - sigmoid(u) written as sigmoid(-u): the same value without cancellation near sigmoid(u) = 1
        chosen_losses = torch.sigmoid(-self.beta * (chosen_logratios - kl))
        rejected_losses = torch.sigmoid(-self.beta * (kl - rejected_logratios))
        losses = torch.cat(
            (self.desirable_weight * chosen_losses, self.undesirable_weight * rejected_losses), dim=0
        ).mean()
        return losses, self.beta * chosen_logratios.detach(), self.beta * rejected_logratios.detach(), kl


class VanillaKTOLoss(nn.Module):
    """KTO loss for even sampling: each side's reference point is the other's clamped mean."""

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = _check_positive_beta(beta)

    def forward(
        self,
        policy_chosen_logps: torch.Tensor,
        policy_rejected_logps: torch.Tensor,
        reference_chosen_logps: torch.Tensor,
        reference_rejected_logps: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_floats(
            policy_chosen_logps=policy_chosen_logps,
            policy_rejected_logps=policy_rejected_logps,
            reference_chosen_logps=reference_chosen_logps,
            reference_rejected_logps=reference_rejected_logps,
        )
        check_same_shape(policy_chosen_logps=policy_chosen_logps, reference_chosen_logps=reference_chosen_logps)
        check_same_shape(policy_rejected_logps=policy_rejected_logps, reference_rejected_logps=reference_rejected_logps)
        # each side's reference point is a mean over the other side: both must be present
        check_nonempty("policy_chosen_logps", policy_chosen_logps)
        check_nonempty("policy_rejected_logps", policy_rejected_logps)

        chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (n_c,)
        rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (n_r,)
        # not detached: gradients flow through both reference points
        chosen_kl = chosen_logratios.mean().clamp(min=0)
        rejected_kl = rejected_logratios.mean().clamp(min=0)
        losses = torch.cat(
            (
                torch.sigmoid(-self.beta * (chosen_logratios - rejected_kl)),
                torch.sigmoid(-self.beta * (chosen_kl - rejected_logratios)),
            ),
            dim=0,
        ).mean()
        return losses, self.beta * chosen_logratios.detach(), self.beta * rejected_logratios.detach()


