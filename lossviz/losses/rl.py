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
``token_level_loss=True`` one mean over all unmasked tokens of the batch. The GRPO-family
types (``policy_loss_type``: GSPO, CISPO, SAPO, GMPO, GPG), verl's aggregation modes
(``loss_agg_mode``, :func:`agg_loss`) and the monitoring metrics are described in
:class:`PolicyLoss`; every clamp that zeroes a gradient is stated there with its threshold.

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
from ._reduce import AGG_MODES, aggregate, check_agg_mode, check_scale_factor, masked_mean  # noqa: F401 (AGG_MODES: documented here)


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


POLICY_LOSS_TYPES = ("ppo", "gspo", "cispo", "sapo", "gmpo", "gpg")
_SEQUENCE_TYPES = ("gspo", "gmpo")  # one value per sequence, aggregated per sequence (verl)


class PolicyLoss(nn.Module):
    r"""PPO clipped surrogate loss and the GRPO-family policy losses, with the aggregation of verl.

    ``log_ratio_max`` (keyword-only): where the log-ratio is clamped before ``exp``. ``None``
    (default) clamps at :func:`log_ratio_limit` of the input dtype (532.3 in float64, 66.5 in
    float32 and bfloat16), which leaves every result of OpenRLHF v0.5.3 with a ratio below
    ``finfo.max ** 0.75`` unchanged; a number clamps there instead (``20.0`` as later OpenRLHF
    releases). Beyond the clamp the gradient of the ratio is **zero** (every type with a ratio).
    ``advantages`` may be ``[B, 1]`` (broadcast over the tokens).

    **policy_loss_type** (keyword-only; :math:`x_t = \log\pi - \log\pi_{\mathrm{old}}`,
    :math:`r_t = e^{x_t}`, :math:`\operatorname{sg}` = stop-gradient, :math:`m` the mask):

    - ``"ppo"`` (default): the clipped token loss above (PPO Eq. 7, docs/references.md#ppo; GRPO
      §4.1.1, #grpo; clip-higher ``clip_eps_high`` of DAPO §3.1, #dapo; ``dual_clip``, #dualclip).
    - ``"gspo"`` (#gspo, §4): the sequence ratio
      :math:`s_i = \exp\big(\sum_t m_t x_t / \sum_t m_t\big)`, the geometric mean of the token
      ratios, in the clipped surrogate :math:`-\min(s_i A, \operatorname{clip}(s_i, 1-\varepsilon_l, 1+\varepsilon_h) A)`.
      As verl, each token carries :math:`\tilde s_{i,t} = \operatorname{sg}(s_i)\, e^{x_t - \operatorname{sg}(x_t)}`
      (value :math:`s_i`, gradient :math:`s_i \nabla x_t`), which is the paper's GSPO-token and equals
      GSPO when :math:`A` is constant over the sequence; the aggregation is **forced** to
      ``seq-mean-token-mean`` (verl forces it silently; here any other ``loss_agg_mode`` is an
      error), so the loss is one value per sequence, averaged. The paper's clip is tiny
      (ε_l 3e-4, ε_h 4e-4): pass it. verl clamps :math:`\log s_i \le 10`; lossviz clamps at
      ``log_ratio_max`` (66.5 in float32; zero gradient beyond); OpenRLHF HEAD has no clamp and
      gives NaN gradients at a log-ratio of 100.
    - ``"cispo"`` (MiniMax-M1 §3.1, #cispo): :math:`\ell_t = -\operatorname{sg}(\hat r_t)\,A\log\pi(y_t)`,
      :math:`\hat r_t = \operatorname{clip}(r_t, 1-\varepsilon_l, 1+\varepsilon_h)` (verl's form). The weight is
      detached, so every token keeps the gradient :math:`-\hat r_t A\,\nabla\log\pi`, also where
      PPO's clip would zero it. For this type alone ``clip_eps_low=None`` (the default) means
      **no lower bound** (:math:`\hat r = \min(r, 1+\varepsilon_h)`, the paper's setting);
      :math:`\varepsilon_h` is ``clip_eps_high`` or else ``clip_eps``. TRL/Liger's ``epsilon_max``
      is :math:`1+\varepsilon_h`: TRL ``epsilon_high=5.0`` (ScaleRL's cap :math:`\hat r \le 5`) is
      lossviz ``clip_eps_high=4.0``. The loss value is :math:`-\hat r A \log\pi`, not a surrogate of
      the ratio.
    - ``"sapo"`` (#sapo): :math:`\ell_t = -f(r_t)A`, :math:`f(r) = \tfrac{4}{\tau}\sigma(\tau(r-1))`,
      :math:`\tau = ` ``tau_pos`` if :math:`A > 0` else ``tau_neg``: a soft gate with
      :math:`f(1) = 2/\tau` and :math:`f'(1) = 1` (at :math:`r = 1` the gradient is PPO's). No clip.
    - ``"gmpo"`` (#gmpo): sign-aware clip of the log-ratio in *log space*,
      :math:`\tilde x_t = \operatorname{sgn}(A_t)\min(\operatorname{sgn}(A_t)x_t, \operatorname{sgn}(A_t)\operatorname{clip}(x_t, -\varepsilon_l, \varepsilon_h))`,
      then one value per sequence :math:`\ell_i = -\bar A_i \exp\big(\sum_t m_t\tilde x_t / \sum_t m_t\big)`
      with :math:`\bar A_i` the masked mean of :math:`A`, averaged over the sequences (verl).
      The bounds are on :math:`\log r`: the paper's :math:`e^{\pm 0.4}` is ``clip_eps=0.4``.
      verl clamps :math:`x_t` to :math:`\pm 20` (zero gradient beyond); lossviz clamps only the
      mean :math:`\sum_t m_t\tilde x_t/\sum_t m_t` at ``log_ratio_max`` (zero gradient above it).
    - ``"gpg"`` (#gpg): :math:`\ell_t = -A\log\pi(y_t)`, REINFORCE with no ratio and no clip
      (``old_log_probs`` only enters the metrics).

    ``dual_clip`` is for ``"ppo"`` only; ``tau_pos``, ``tau_neg`` (> 0) for ``"sapo"`` only.

    **loss_agg_mode** (keyword-only): one of :data:`AGG_MODES`, the weights of
    :func:`agg_loss` (verl's names and semantics; fully masked sequences are not counted).
    ``None`` (default) keeps the reduction of OpenRLHF v0.5.3: ``seq-mean-token-mean``, or
    ``token-mean`` when ``token_level_loss=True`` (an alias kept for OpenRLHF), where a fully
    masked sequence contributes 0 and *is* counted in the batch mean (so ``None`` and an explicit
    ``"seq-mean-token-mean"`` differ only when a sequence is fully masked).
    ``token_level_loss=True`` with another mode is an error. ``loss_scale_factor`` is the
    Dr. GRPO constant of ``seq-mean-token-sum-norm`` (default: the padded length ``T``).

    **Masked positions.** A NaN or inf at a position where ``action_mask`` is 0 (in
    ``log_probs``, ``old_log_probs`` or ``advantages``) never reaches the loss, the metrics or the
    gradient, for every type: the log-ratio (and for ``cispo``/``gpg`` the log-probs, and the
    advantages) are selected with ``torch.where`` before use (OpenRLHF multiplies by the mask,
    and ``NaN * 0 = NaN``). It costs about 1.3x the CPU time of the same loss without it
    (forward + backward, 32 x 2048 float32 tokens, one thread; ``benchmarks/bench_rl.py``).

    **forward(..., return_metrics=True)** returns ``(loss, metrics)``, a dict of detached 0-d
    tensors, each a token mean over the unmasked tokens: ``"clip_fraction"`` (tokens where the
    clip acts: PPO/GSPO the clipped term is the smaller objective, CISPO :math:`\hat r \ne r`,
    GMPO :math:`\tilde x \ne x`; 0 for SAPO and GPG), ``"clip_fraction_low"`` (tokens with
    :math:`A < 0` where the dual clip bounds the loss; 0 without ``dual_clip``), ``"approx_kl"``
    (the ``k3`` estimate :math:`r - 1 - \log r` of :math:`\mathrm{KL}(\pi_{\mathrm{old}}\|\pi)`
    on the tokens, sampled from :math:`\pi_{\mathrm{old}}`, with :math:`x` clamped as above).
    The default return value (the loss alone) is unchanged.
    """

    #: keep a masked NaN/inf out with torch.where (benchmarks/bench_rl.py turns it off to time it)
    _select_masked = True

    def __init__(
        self,
        clip_eps: float = 0.2,
        *,
        clip_eps_low: Optional[float] = None,
        clip_eps_high: Optional[float] = None,
        dual_clip: Optional[float] = None,
        token_level_loss: bool = False,
        log_ratio_max: Optional[float] = None,
        policy_loss_type: str = "ppo",
        loss_agg_mode: Optional[str] = None,
        loss_scale_factor: Optional[float] = None,
        tau_pos: float = 1.0,
        tau_neg: float = 1.05,
    ) -> None:
        super().__init__()
        if not isinstance(policy_loss_type, str) or policy_loss_type not in POLICY_LOSS_TYPES:
            choices = ", ".join(repr(t) for t in POLICY_LOSS_TYPES)
            raise ValueError(f"policy_loss_type must be one of {choices}, got {policy_loss_type!r}")
        self.policy_loss_type = policy_loss_type
        if clip_eps is not None:
            check_real("clip_eps", clip_eps, low=0.0, low_open=True)
        self.clip_eps = clip_eps
        if policy_loss_type == "cispo" and clip_eps_low is None:
            # CISPO: no lower bound unless one is given
            _, self.clip_eps_high = _clip_bounds(clip_eps, 0.5, clip_eps_high, required=True)
            self.clip_eps_low = None
        else:
            self.clip_eps_low, self.clip_eps_high = _clip_bounds(clip_eps, clip_eps_low, clip_eps_high, required=True)
        # None: the dtype's own limit (drop-in); a number: a fixed clamp chosen by the user
        self.log_ratio_max = None if log_ratio_max is None else check_real("log_ratio_max", log_ratio_max)
        if self.clip_eps_low is not None and self.clip_eps_low >= 1.0 and policy_loss_type in ("ppo", "gspo", "cispo"):
            name = "clip_eps_low" if clip_eps_low is not None else "clip_eps"
            raise ValueError(f"{name} must be < 1 (the lower clip bound 1 - eps must stay positive), got {self.clip_eps_low}")
        self.dual_clip = None if dual_clip is None else check_real("dual_clip", dual_clip, low=1.0, low_open=True)
        if self.dual_clip is not None and policy_loss_type != "ppo":
            raise ValueError(f"dual_clip applies to policy_loss_type='ppo' only, got policy_loss_type={policy_loss_type!r}")
        self.token_level_loss = _check_flag("token_level_loss", token_level_loss)
        if loss_agg_mode is not None:
            check_agg_mode(loss_agg_mode)
            if self.token_level_loss and loss_agg_mode != "token-mean":
                raise ValueError(
                    f"token_level_loss=True means loss_agg_mode='token-mean', but loss_agg_mode={loss_agg_mode!r} was given: give one of them"
                )
            if policy_loss_type in _SEQUENCE_TYPES and loss_agg_mode != "seq-mean-token-mean":
                raise ValueError(
                    f"policy_loss_type={policy_loss_type!r} gives one value per sequence and aggregates with "
                    f"loss_agg_mode='seq-mean-token-mean' only, got loss_agg_mode={loss_agg_mode!r}"
                )
        elif policy_loss_type in _SEQUENCE_TYPES and self.token_level_loss:
            raise ValueError(
                f"policy_loss_type={policy_loss_type!r} gives one value per sequence: token_level_loss=True does not apply"
            )
        self.loss_agg_mode = loss_agg_mode
        self.loss_scale_factor = check_scale_factor(loss_scale_factor, loss_agg_mode)
        self.tau_pos = check_real("tau_pos", tau_pos, low=0.0, low_open=True)
        self.tau_neg = check_real("tau_neg", tau_neg, low=0.0, low_open=True)

    def _reduce_tokens(self, loss, action_mask, weights):
        if self.loss_agg_mode is None:
            return _reduce(loss, action_mask, self.token_level_loss)
        return aggregate(loss, weights, self.loss_agg_mode, self.loss_scale_factor)

    def forward(
        self,
        log_probs: torch.Tensor,
        old_log_probs: torch.Tensor,
        advantages: torch.Tensor,
        action_mask: Optional[torch.Tensor] = None,
        *,
        return_metrics: bool = False,
    ):
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
        kind = self.policy_loss_type
        log_ratio = log_probs - old_log_probs  # x, (B, T)
        keep = None
        if action_mask is not None and self._select_masked:
            # a NaN/inf at a masked position must not reach the sums nor the gradient (NaN * 0 = NaN)
            keep = action_mask if action_mask.dtype == torch.bool else action_mask != 0
            zero = torch.zeros((), dtype=log_ratio.dtype, device=log_ratio.device)
            log_ratio = torch.where(keep, log_ratio, zero)
            advantages = torch.where(keep, advantages, zero)
            if kind in ("cispo", "gpg"):
                log_probs = torch.where(keep, log_probs, zero)
        metrics = {} if (return_metrics is not False and _check_flag("return_metrics", return_metrics)) else None
        if kind == "ppo":
            # in place on the fresh difference: the overflow guard costs no extra tensor
            ratio = log_ratio.clamp_(max=limit).exp()  # r
            loss = self._clipped(ratio, advantages, metrics)
            return self._finish(self._reduce_tokens(loss, action_mask, _weights(action_mask, loss)), metrics, log_ratio, limit, action_mask)
        if kind == "gspo":
            weights = _weights(action_mask, log_ratio)
            seq_log_ratio = _masked_seq_mean(log_ratio, weights)  # log s_i, (B, 1)
            token_log_ratio = seq_log_ratio.detach() + (log_ratio - log_ratio.detach())
            ratio = token_log_ratio.clamp(max=limit).exp()  # value s_i, gradient s_i * grad x_t
            loss = self._clipped(ratio, advantages, metrics)
            return self._finish(aggregate(loss, weights, "seq-mean-token-mean"), metrics, log_ratio, limit, action_mask)
        if kind == "gmpo":
            weights = _weights(action_mask, log_ratio)
            sign = torch.sign(advantages).expand_as(log_ratio)
            x_clip = log_ratio.clamp(-self.clip_eps_low, self.clip_eps_high)
            x_tilde = sign * torch.min(sign * log_ratio, sign * x_clip)
            log_gmean = _masked_seq_mean(x_tilde, weights).clamp(max=limit)  # (B, 1)
            seq_adv = _masked_seq_mean(advantages.expand_as(log_ratio), weights)
            per_seq = -seq_adv * log_gmean.exp()  # (B, 1): one value per sequence
            if metrics is not None:
                with torch.no_grad():
                    metrics["clip_fraction"] = _token_mean((sign != 0) & (x_tilde != log_ratio), action_mask, log_ratio.dtype)
            present = None if weights is None else (weights.sum(-1, keepdim=True) > 0).to(per_seq.dtype)
            return self._finish(aggregate(per_seq, present, "seq-mean-token-sum"), metrics, log_ratio, limit, action_mask)
        weights = _weights(action_mask, log_ratio)
        if kind == "cispo":
            ratio = log_ratio.clamp(max=limit).exp()
            low = None if self.clip_eps_low is None else 1.0 - self.clip_eps_low
            weight = ratio.clamp(min=low, max=1.0 + self.clip_eps_high).detach()
            loss = -(weight * advantages) * log_probs
            if metrics is not None:
                with torch.no_grad():
                    metrics["clip_fraction"] = _token_mean(weight != ratio, action_mask, loss.dtype)
        elif kind == "sapo":
            ratio = log_ratio.clamp(max=limit).exp()
            adv = advantages.expand_as(ratio)
            tau = torch.full_like(adv, self.tau_neg).masked_fill_(adv > 0, self.tau_pos)
            loss = -(4.0 / tau) * torch.sigmoid(tau * (ratio - 1.0)) * adv
        else:  # gpg
            loss = -advantages * log_probs
        return self._finish(self._reduce_tokens(loss, action_mask, weights), metrics, log_ratio, limit, action_mask)

    def _clipped(self, ratio, advantages, metrics):
        """-min(rA, clip(r)A), with the dual clip for A < 0; fills the clip metrics."""
        surr_unclipped = ratio * advantages
        surr_clipped = ratio.clamp(1.0 - self.clip_eps_low, 1.0 + self.clip_eps_high) * advantages
        objective = torch.min(surr_unclipped, surr_clipped)
        if metrics is not None:
            with torch.no_grad():
                metrics["_clipped"] = surr_clipped < surr_unclipped
        if self.dual_clip is not None:
            # for A < 0 the objective may not fall below c * A: the loss is bounded by -c * A
            bound = self.dual_clip * advantages
            if metrics is not None:
                with torch.no_grad():
                    metrics["_low"] = (advantages < 0) & (objective < bound)
            objective = torch.where(advantages < 0, torch.max(objective, bound), objective)
        return -objective

    def _finish(self, loss, metrics, log_ratio, limit, action_mask):
        if metrics is None:
            return loss
        dtype = loss.dtype
        with torch.no_grad():
            clipped = metrics.pop("_clipped", None)
            low = metrics.pop("_low", None)
            if clipped is not None:
                metrics["clip_fraction"] = _token_mean(clipped.expand_as(log_ratio), action_mask, dtype)
            zero = torch.zeros((), dtype=dtype, device=loss.device)
            metrics.setdefault("clip_fraction", zero)
            metrics["clip_fraction_low"] = zero.clone() if low is None else _token_mean(low.expand_as(log_ratio), action_mask, dtype)
            x = log_ratio.detach().clamp(max=limit)
            metrics["approx_kl"] = _token_mean(torch.expm1(x) - x, action_mask, dtype)
        return loss, {k: metrics[k] for k in ("clip_fraction", "clip_fraction_low", "approx_kl")}


def _weights(action_mask, like):
    return None if action_mask is None else action_mask.to(like.dtype)


def _masked_seq_mean(x, weights):
    """Per-sequence mean over the unmasked tokens, [B, 1]; a fully masked sequence gives 0."""
    if weights is None:
        return x.mean(dim=-1, keepdim=True)
    count = weights.sum(dim=-1, keepdim=True)
    return (x * weights).sum(dim=-1, keepdim=True) / count.clamp(min=torch.finfo(count.dtype).tiny)


def _token_mean(flags, action_mask, dtype):
    """Token mean of a bool/float tensor over the unmasked tokens, detached and 0-d."""
    return masked_mean(flags.to(dtype), None if action_mask is None else action_mask).detach()


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
