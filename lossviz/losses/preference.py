r"""Preference losses: DPO, cDPO (label smoothing), IPO, KTO and vanilla KTO, and DPO's successors.

The successors (TRL's ``loss_type`` names: rDPO, hinge, EXO, NCA, BCO, SPPO, APO, DiscoPOP,
LN-DPO, RPO and weighted mixtures) are listed with their formulas in :class:`DPOLoss`; KTO's
``apo_zero_unpaired`` variant in :class:`KTOLoss`. Reference-free losses (SimPO, CPO, ORPO)
live in :mod:`.reference_free`.

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

import math
from typing import Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ._checks import check_floats, check_nonempty, check_real, check_same_floats, check_same_shape

_PAIR_NAMES = ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps")

#: DPO loss types, TRL's names; "sft" is TRL's NLL term, meant for a list (RPO / MPO).
DPO_LOSS_TYPES = (
    "sigmoid", "ipo", "robust", "hinge", "exo_pair", "nca_pair", "bco_pair", "sppo_hard",
    "apo_zero", "apo_down", "discopop", "sigmoid_norm", "sft",
)
#: the types that read ``label_smoothing`` (ε); the others ignore it, as in TRL
USES_LABEL_SMOOTHING = ("sigmoid", "robust", "exo_pair")


def _check_positive_beta(beta) -> float:
    return check_real("beta", beta, low=0.0, low_open=True)


def check_lengths(name: str, lengths, like_name: str, like: torch.Tensor) -> torch.Tensor:
    """Per-response token counts: a tensor of ``like``'s shape, every entry > 0; returned in ``like``'s dtype."""
    if not isinstance(lengths, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token counts, got {type(lengths).__name__}")
    if lengths.shape != like.shape:
        raise ValueError(f"{name} must have the shape of {like_name} {tuple(like.shape)}, got {tuple(lengths.shape)}")
    if lengths.dtype == torch.bool or lengths.is_complex():
        raise TypeError(f"{name} must hold token counts (int or float), got {lengths.dtype}")
    lengths = lengths.detach().to(like.dtype)
    if not bool(torch.isfinite(lengths).all()) or bool((lengths <= 0).any()):
        raise ValueError(f"{name} must be finite and > 0 (the number of response tokens), got {lengths.tolist()}")
    return lengths


def _normalise_loss_types(loss_type, loss_weights):
    """(types, weights or None): a str or a non-empty list/tuple of distinct names from DPO_LOSS_TYPES."""
    single = isinstance(loss_type, str)
    types = (loss_type,) if single else loss_type
    if not isinstance(types, (list, tuple)) or not types or not all(isinstance(t, str) for t in types):
        raise TypeError(f"loss_type must be a name or a non-empty list of names from {DPO_LOSS_TYPES}, got {loss_type!r}")
    for t in types:
        if t not in DPO_LOSS_TYPES:
            raise ValueError(f"loss_type {t!r} is unknown; choose from {', '.join(DPO_LOSS_TYPES)}")
    if len(set(types)) != len(types):
        raise ValueError(f"loss_type lists a type twice: {list(types)}")
    if loss_weights is None:
        return tuple(types), None
    if isinstance(loss_weights, (str, bytes)) or not hasattr(loss_weights, "__len__"):
        raise TypeError(f"loss_weights must be a list of reals, one per loss_type, got {loss_weights!r}")
    if len(loss_weights) != len(types):
        raise ValueError(
            f"loss_weights has {len(loss_weights)} entries but loss_type has {len(types)} ({list(types)}): give one weight per type"
        )
    weights = tuple(check_real(f"loss_weights[{k}]", w, low=0.0) for k, w in enumerate(loss_weights))
    return tuple(types), weights


def _neg_logsigmoid(x: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid(x)


def _pair_losses(kind: str, beta: float, eps: float, tau: float, rc: torch.Tensor, rr: torch.Tensor,
                 nll: Optional[torch.Tensor]) -> torch.Tensor:
    """Per-pair loss of one type from the (possibly length-normalised) log-ratios rc, rr."""
    z = beta * (rc - rr)  # the implicit-reward margin βΔ
    if kind == "sigmoid" or kind == "sigmoid_norm":
        losses = -(1.0 - eps) * F.logsigmoid(z) if kind == "sigmoid" else -F.logsigmoid(z)
        if kind == "sigmoid" and eps:
            losses = losses - eps * F.logsigmoid(-z)
        return losses
    if kind == "ipo":
        return (rc - rr - 1.0 / (2.0 * beta)) ** 2  # IPO Eq. 17
    if kind == "robust":  # unbiased under a flip rate ε (rDPO)
        return (-(1.0 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1.0 - 2.0 * eps)
    if kind == "hinge":
        return torch.relu(1.0 - z)
    if kind == "exo_pair":  # KL([σ(z), σ(−z)] ‖ [1−ε, ε]); 0·(−large) stays 0 at any margin
        return (torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-eps))
                + torch.sigmoid(-z) * (F.logsigmoid(-z) - math.log(eps)))
    if kind == "nca_pair":
        u_c, u_r = beta * rc, beta * rr
        return -F.logsigmoid(u_c) - 0.5 * F.logsigmoid(-u_c) - 0.5 * F.logsigmoid(-u_r)
    if kind == "bco_pair":  # TRL without the running-mean shift δ
        return -F.logsigmoid(beta * rc) - F.logsigmoid(-beta * rr)
    if kind == "sppo_hard":
        target = 1.0 / (2.0 * beta)
        return (rc - target) ** 2 + (rr + target) ** 2
    if kind == "apo_zero":  # 1 − σ(βρ_c) written σ(−βρ_c): no cancellation
        return torch.sigmoid(-beta * rc) + torch.sigmoid(beta * rr)
    if kind == "apo_down":
        return torch.sigmoid(beta * rc) + torch.sigmoid(-z)
    if kind == "discopop":
        # (1 − w)(−log σ(z)) + w e^{−z}, w = σ(z/τ); w e^{−z} = exp(−z + log σ(z/τ)) never forms inf·0.
        # Near z = 0 the gradient is a difference of terms of size ~1/(4τ) (5 at τ = 0.05): in half
        # precision each rounds at 2^-8 of that, so the branch is computed in float32 and cast back.
        half = z.dtype in (torch.float16, torch.bfloat16)
        zf = z.float() if half else z
        out = torch.sigmoid(-zf / tau) * _neg_logsigmoid(zf) + torch.exp(F.logsigmoid(zf / tau) - zf)
        return out.to(z.dtype) if half else out
    if kind == "sft":
        return nll
    raise AssertionError(kind)  # unreachable: names are checked in __init__


class DPOLoss(nn.Module):
    r"""DPO and its successors, one per ``loss_type`` (TRL's names); the default is DPO of v0.5.3.

    ``DPOLoss(beta, label_smoothing=0.0, ipo=False)`` is unchanged: DPO, cDPO with
    ``label_smoothing = ε > 0``, IPO with ``ipo=True`` (the same as ``loss_type="ipo"``).
    With :math:`\rho_c = \pi^c - \pi^{c,\mathrm{ref}}`, :math:`\rho_r` likewise,
    :math:`\Delta = \rho_c - \rho_r` and :math:`z = \beta\Delta`, each pair's loss is

    - ``sigmoid``: :math:`-(1-\varepsilon)\log\sigma(z) - \varepsilon\log\sigma(-z)` (DPO Eq. 7, docs/references.md#dpo; cDPO, #cdpo)
    - ``ipo``: :math:`(\Delta - \tfrac{1}{2\beta})^2` (IPO Eq. 17, #ipo)
    - ``robust``: :math:`\big[-(1-\varepsilon)\log\sigma(z) + \varepsilon\log\sigma(-z)\big]/(1-2\varepsilon)` (rDPO, #rdpo)
    - ``hinge``: :math:`\max(0,\, 1 - z)` (SLiC, #slic; RSO, #rso)
    - ``exo_pair``: :math:`\sigma(z)\log\frac{\sigma(z)}{1-\varepsilon} + \sigma(-z)\log\frac{\sigma(-z)}{\varepsilon}` (EXO Eq. 16 with two responses, #exo)
    - ``nca_pair``: :math:`-\log\sigma(\beta\rho_c) - \tfrac12\log\sigma(-\beta\rho_c) - \tfrac12\log\sigma(-\beta\rho_r)` (NCA, #nca)
    - ``bco_pair``: :math:`-\log\sigma(\beta\rho_c) - \log\sigma(-\beta\rho_r)` (BCO with the shift δ = 0, #bco)
    - ``sppo_hard``: :math:`(\rho_c - \tfrac{1}{2\beta})^2 + (\rho_r + \tfrac{1}{2\beta})^2` (SPPO Eq. 4.7 with P ∈ {0, 1}, #sppo)
    - ``apo_zero``: :math:`1 - \sigma(\beta\rho_c) + \sigma(\beta\rho_r)` (APO Eq. 7, #apo)
    - ``apo_down``: :math:`\sigma(\beta\rho_c) + 1 - \sigma(z)` (APO Eq. 8, #apo)
    - ``discopop``: :math:`(1-w)\,(-\log\sigma(z)) + w\,e^{-z}`, :math:`w = \sigma(z/\tau)` (DiscoPOP Eq. 5, #discopop)
    - ``sigmoid_norm``: :math:`-\log\sigma\big(\beta(\rho_c/L_c - \rho_r/L_r)\big)` (length-normalised DPO, LN-DPO; #simpo)
    - ``sft``: :math:`-\pi^c / L_c`, the chosen response's token-mean NLL (RPO, #rpo; MPO, #mpo)

    and the loss is the mean over pairs. Only ``sigmoid``, ``robust`` and ``exo_pair`` read
    ε = ``label_smoothing`` (as in TRL); ``exo_pair`` needs ε > 0 (TRL silently replaces 0 by
    1e-3, lossviz refuses). ``bco_pair`` follows TRL 1.16, which dropped BCO's running-mean
    shift δ of the rewards. ``discopop`` is neither convex nor monotone in z (at τ = 0.05 its
    slope at z = 0 is positive); its exponential arm is computed as
    :math:`\exp(-z + \log\sigma(z/\tau))`, so no ``inf·0`` appears at large margins.

    **Several types at once** (TRL's list ``loss_type`` with ``loss_weights``, MPO):
    ``loss_type=["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0]`` returns
    :math:`\sum_k w_k\,\overline{\ell_k}`; weights default to 1.

    **Lengths.** ``forward(..., chosen_lengths=L_c, rejected_lengths=L_r)`` (token counts of
    the responses). ``sigmoid_norm`` always divides the log-ratios by them.
    ``length_normalized=True`` divides them for *every* type: ``loss_type="ipo",
    length_normalized=True`` is TRL's (and HALOs') IPO, whose log-probs are per-token means,
    while ``loss_type="ipo"`` alone is OpenRLHF's IPO on summed log-probs (its target margin
    1/(2β) is then in nats per response, not per token). The returned rewards are
    :math:`\beta\,\mathrm{sg}(\rho)` of the log-ratios the loss uses (per token when
    ``length_normalized``, summed otherwise).

    **RPO** (``nll_loss_coef = α > 0``, OpenRLHF's DPO trainer's name): adds
    :math:`\alpha\cdot\operatorname{mean}_i(-\pi^c_i/L_{c,i})`, the mean over pairs of each
    chosen response's token-mean NLL (OpenRLHF). TRL's ``rpo_alpha`` and ``"sft"`` take the
    token mean over all chosen tokens of the batch instead (the same when lengths are equal).
    """

    def __init__(
        self,
        beta: float = 0.1,
        label_smoothing: float = 0.0,
        ipo: bool = False,
        *,
        loss_type="sigmoid",
        loss_weights=None,
        discopop_tau: float = 0.05,
        length_normalized: bool = False,
        nll_loss_coef: float = 0.0,
    ) -> None:
        super().__init__()
        self.beta = _check_positive_beta(beta)
        # at 0.5 both labels are equally likely and the loss no longer depends on the margin
        self.label_smoothing = check_real("label_smoothing", label_smoothing, low=0.0, high=0.5, high_open=True)
        if not isinstance(ipo, bool):
            raise TypeError(f"ipo must be a bool, got {type(ipo).__name__}")
        types, weights = _normalise_loss_types(loss_type, loss_weights)
        if ipo:
            if types == ("sigmoid",):
                types = ("ipo",)
            elif "ipo" not in types:
                raise ValueError(f"ipo=True contradicts loss_type={loss_type!r}: give loss_type='ipo' (or leave ipo=False)")
        self.ipo = types == ("ipo",)
        self.loss_types = types
        self.loss_type = types[0] if isinstance(loss_type, str) or len(types) == 1 else list(types)
        self.loss_weights = weights
        self.discopop_tau = check_real("discopop_tau", discopop_tau, low=0.0, low_open=True)
        if not isinstance(length_normalized, bool):
            raise TypeError(f"length_normalized must be a bool, got {type(length_normalized).__name__}")
        self.length_normalized = length_normalized
        self.nll_loss_coef = check_real("nll_loss_coef", nll_loss_coef, low=0.0)
        if "exo_pair" in types and self.label_smoothing == 0.0:
            raise ValueError("label_smoothing must be > 0 for loss_type 'exo_pair' (it is the ε of the target [1-ε, ε]; TRL uses 1e-3)")
        self._simple = types in (("sigmoid",), ("ipo",)) and not length_normalized and self.nll_loss_coef == 0.0 and weights is None

    def forward(
        self,
        policy_chosen_logps: torch.Tensor,
        policy_rejected_logps: torch.Tensor,
        reference_chosen_logps: torch.Tensor,
        reference_rejected_logps: torch.Tensor,
        *,
        chosen_lengths: Optional[torch.Tensor] = None,
        rejected_lengths: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        check_same_floats(_PAIR_NAMES, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
        chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (N,)
        rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (N,)
        if self._simple:  # v0.5.3, operation for operation
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
        return self._general(policy_chosen_logps, chosen_logratios, rejected_logratios, chosen_lengths, rejected_lengths)

    def _general(self, policy_chosen_logps, chosen_logratios, rejected_logratios, chosen_lengths, rejected_lengths):
        types = self.loss_types
        need_both = self.length_normalized or "sigmoid_norm" in types
        need_chosen = need_both or self.nll_loss_coef > 0.0 or "sft" in types
        if need_chosen and chosen_lengths is None:
            why = ("length_normalized=True" if self.length_normalized else "loss_type 'sigmoid_norm'" if "sigmoid_norm" in types
                   else "nll_loss_coef > 0 (the chosen NLL is a per-token mean)" if self.nll_loss_coef > 0 else "loss_type 'sft'")
            raise ValueError(f"chosen_lengths is required for {why}: pass the chosen responses' token counts")
        if need_both and rejected_lengths is None:
            why = "length_normalized=True" if self.length_normalized else "loss_type 'sigmoid_norm'"
            raise ValueError(f"rejected_lengths is required for {why}: pass the rejected responses' token counts")
        if chosen_lengths is not None:
            chosen_lengths = check_lengths("chosen_lengths", chosen_lengths, "policy_chosen_logps", policy_chosen_logps)
        if rejected_lengths is not None:
            rejected_lengths = check_lengths("rejected_lengths", rejected_lengths, "policy_chosen_logps", policy_chosen_logps)
        if need_both:
            chosen_norm = chosen_logratios / chosen_lengths
            rejected_norm = rejected_logratios / rejected_lengths
        nll = -policy_chosen_logps / chosen_lengths if need_chosen else None
        beta, eps, tau = self.beta, self.label_smoothing, self.discopop_tau
        total = None
        for k, kind in enumerate(types):
            if self.length_normalized or kind == "sigmoid_norm":
                rc, rr = chosen_norm, rejected_norm
            else:
                rc, rr = chosen_logratios, rejected_logratios
            term = _pair_losses(kind, beta, eps, tau, rc, rr, nll).mean()
            if self.loss_weights is not None:
                term = self.loss_weights[k] * term
            total = term if total is None else total + term
        if self.nll_loss_coef > 0.0:
            total = total + self.nll_loss_coef * nll.mean()
        if self.length_normalized:
            chosen_logratios, rejected_logratios = chosen_norm, rejected_norm
        return total, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()

def _distributed_mean(value: torch.Tensor, world_size: int) -> torch.Tensor:
    """Mean over ranks when a process group is up; the local value otherwise."""
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value / world_size
    return value


KTO_LOSS_TYPES = ("kto", "apo_zero_unpaired")


class KTOLoss(nn.Module):
    r"""KTO loss for uneven sampling (either side may be empty).

    ``loss_type="apo_zero_unpaired"`` (keyword-only; TRL's name, APO-zero of the APO paper
    for unpaired data) drops the reference point: desirable examples cost
    :math:`w_D\,(1 - \sigma(\beta\Delta))`, undesirable ones :math:`w_U\,\sigma(\beta\Delta)`,
    so each pushes its own log-ratio up or down from zero, independently of the other side.
    The KL batch is then not used by the loss: ``policy_KL_logps`` and ``reference_KL_logps``
    may be ``None`` (the returned KL is then 0); when given, its KL is still returned as a
    diagnostic.
    """

    def __init__(
        self,
        beta: float,
        desirable_weight: float,
        undesirable_weight: float,
        world_size: int,
        device: torch.device,
        *,
        loss_type: str = "kto",
    ) -> None:
        super().__init__()
        if loss_type not in KTO_LOSS_TYPES:
            raise ValueError(f"loss_type {loss_type!r} is unknown; choose from {', '.join(KTO_LOSS_TYPES)}")
        self.loss_type = loss_type
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
        apo = self.loss_type == "apo_zero_unpaired"
        if apo and policy_KL_logps is None and reference_KL_logps is None:
            return self._apo_zero_unpaired(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, None)
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
        if apo:
            return self._apo_zero_unpaired(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, kl)

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

    def _apo_zero_unpaired(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, kl):
        check_floats(
            policy_chosen_logps=policy_chosen_logps,
            policy_rejected_logps=policy_rejected_logps,
            reference_chosen_logps=reference_chosen_logps,
            reference_rejected_logps=reference_rejected_logps,
        )
        check_same_shape(policy_chosen_logps=policy_chosen_logps, reference_chosen_logps=reference_chosen_logps)
        check_same_shape(policy_rejected_logps=policy_rejected_logps, reference_rejected_logps=reference_rejected_logps)
        if policy_chosen_logps.shape[0] == 0 and policy_rejected_logps.shape[0] == 0:
            raise ValueError(
                "policy_chosen_logps and policy_rejected_logps are both empty: KTO needs at least one example"
            )
        if kl is None:
            kl = policy_chosen_logps.new_zeros(())
        chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (n_D,)
        rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (n_U,)
        chosen_losses = torch.sigmoid(-self.beta * chosen_logratios)  # 1 - σ(βΔ): raise the desirable log-ratio
        rejected_losses = torch.sigmoid(self.beta * rejected_logratios)  # σ(βΔ): lower the undesirable one
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


