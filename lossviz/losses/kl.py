r"""Per-token estimators of the KL divergence between the policy and a base (reference) policy.

With :math:`d = \log\pi(y_t) - \log\pi_{\mathrm{base}}(y_t)` on a token :math:`y_t` sampled from
:math:`\pi` (Schulman 2020, docs/references.md#schulman2020):

======== ========================================= =============================================
name     value                                     gradient of the value with respect to :math:`d`
======== ========================================= =============================================
``k1``   :math:`d`                                 :math:`1`
``k2``   :math:`\tfrac12 d^2`                      :math:`d`
``k3``   :math:`e^{-d} - 1 + d`                    :math:`1 - e^{-d}`
``abs``  :math:`|d|`                               :math:`\operatorname{sign} d` (0 at 0)
``k1+``  value of ``k1``                           :math:`d` (the gradient of ``k2``)
``k3+``  value of ``k3``                           :math:`d` (the gradient of ``k2``)
======== ========================================= =============================================

As values, ``k1`` and ``k3`` are unbiased estimates of :math:`\mathrm{KL}(\pi\|\pi_{\mathrm{base}})`
(``k3`` with lower variance and never negative); ``k2`` is biased. As *loss terms* their
expected gradients on samples of :math:`\pi` differ (docs/references.md#tangmunos2025), since
:math:`\nabla k = k'(d)\,\nabla\log\pi` and :math:`\mathbb E_\pi[g\,\nabla\log\pi] = \sum_y g\,\nabla\pi`:

.. math::

    \mathbb E_\pi[\nabla k_1] = \sum_y \nabla\pi = 0,\qquad
    \mathbb E_\pi[\nabla k_2] = \sum_y d\,\nabla\pi = \nabla\mathrm{KL}(\pi\|\pi_{\mathrm{base}}),\qquad
    \mathbb E_\pi[\nabla k_3] = \sum_y (\pi - \pi_{\mathrm{base}})\nabla\log\pi = \nabla\mathrm{KL}(\pi_{\mathrm{base}}\|\pi)

(the middle one because :math:`\sum_y \pi\nabla d = \sum_y \nabla\pi = 0`): a ``k1`` loss
term does not regularise at all, ``k2`` pulls along the reverse KL, ``k3`` along the forward KL. The straight-through ``k1+`` and
``k3+`` (verl's names) carry the value of ``k1``/``k3`` and the gradient of ``k2``:
:math:`k_n^{+} = \operatorname{sg}(k_n) + k_2 - \operatorname{sg}(k_2)`.

Where lossviz departs from the anchors. OpenRLHF 0.11 clamps the *value* to :math:`[-10, 10]`
after the estimator, so for ``k3`` at :math:`d = -100` the exponential overflows in float32 and
the gradient is ``inf * 0 = NaN``; verl clamps :math:`d` to :math:`\pm 20` and the value to
:math:`\pm 10`. lossviz clamps nothing but the exponent of ``k3``/``k3+``:

.. math::

    d \leftarrow \max(d, -x_{\max}),\qquad x_{\max} = \tfrac34\log(\texttt{finfo.max})
    = 532.3\ \text{(float64)},\ 66.5\ \text{(float32; half inputs are computed in float32)},

so the value stays finite (at most :math:`e^{66.5} \approx 7.9\cdot10^{28}` in float32) and, for
:math:`d < -x_{\max}` only, the value is that at :math:`-x_{\max}` and the gradient of ``k3`` is
**zero** (the gradient of ``k3+`` is ``k2``'s and is not clamped). Everything else is exact.
Inputs in float16/bfloat16 are computed and returned in float32 (as OpenRLHF casts to float32).
"""

from __future__ import annotations

import torch

from ._checks import check_same_floats, compute_dtype

KL_ESTIMATORS = ("k1", "k2", "k3", "abs", "k1+", "k3+")


def _limit(dtype: torch.dtype) -> float:
    from .rl import log_ratio_limit

    return log_ratio_limit(dtype)


def _k3(d: torch.Tensor) -> torch.Tensor:
    d = d.clamp(min=-_limit(d.dtype))  # e^{-d} stays finite; zero gradient below -x_max
    return torch.expm1(-d) + d


def compute_approx_kl(log_probs: torch.Tensor, log_probs_base: torch.Tensor, kl_estimator: str = "k1") -> torch.Tensor:
    """Per-token KL estimate ``k(log_probs - log_probs_base)``, elementwise, no reduction (see the module text)."""
    if not isinstance(kl_estimator, str) or kl_estimator not in KL_ESTIMATORS:
        choices = ", ".join(repr(k) for k in KL_ESTIMATORS)
        raise ValueError(f"kl_estimator must be one of {choices}, got {kl_estimator!r}")
    check_same_floats(("log_probs", "log_probs_base"), log_probs, log_probs_base)
    dt = compute_dtype(log_probs)
    d = log_probs.to(dt) - log_probs_base.to(dt)
    if kl_estimator == "k1":
        return d
    if kl_estimator == "k2":
        return 0.5 * d.square()
    if kl_estimator == "k3":
        return _k3(d)
    if kl_estimator == "abs":
        return d.abs()
    k2 = 0.5 * d.square()
    value = d.detach() if kl_estimator == "k1+" else _k3(d.detach())
    return value + (k2 - k2.detach())
