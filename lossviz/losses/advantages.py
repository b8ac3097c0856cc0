r"""Group advantages: one advantage per response from the rewards of a group of G responses to one prompt.

With sequence rewards :math:`R_1, \dots, R_G` of one group, :math:`\bar R` their mean and
:math:`s` their sample standard deviation (divisor :math:`G-1`, as ``torch.std``, verl, TRL and
OpenRLHF use):

====================== ======================================================= =====================================
``method``             :math:`A_i`                                             source
====================== ======================================================= =====================================
``grpo``               :math:`(R_i - \bar R) / (s + \varepsilon)`              GRPO §4.1.2 (docs/references.md#grpo)
``dr_grpo``            :math:`R_i - \bar R`                                    Dr. GRPO §3.1 (#drgrpo)
``rloo``               :math:`R_i - \frac{1}{G-1}\sum_{j\ne i} R_j = \frac{G}{G-1}(R_i - \bar R)`  RLOO §3 (#rloo)
``reinforce_baseline`` :math:`R_i - \bar R`, then whitened over the whole batch REINFORCE++ (#reinforcepp)
====================== ======================================================= =====================================

``eps`` is :math:`\varepsilon` (verl 1e-6, the default; OpenRLHF 1e-9); a group whose rewards
are all equal gets advantages 0. ``reinforce_baseline`` whitens the centred rewards
:math:`c` of the batch as :math:`(c - \operatorname{mean} c)/(\operatorname{std} c + \varepsilon)`
with the population std (divisor :math:`N`) over *sequences*; OpenRLHF whitens over tokens, so
there a long response weighs more in the batch statistics. Dr. GRPO drops the std because it
up-weights groups whose rewards barely differ (too easy or too hard prompts).
"""

from __future__ import annotations

from numbers import Integral

import torch

from ._checks import check_real, check_tensor, compute_dtype

ADVANTAGE_METHODS = ("grpo", "dr_grpo", "rloo", "reinforce_baseline")


def group_advantages(rewards: torch.Tensor, group_size: int, method: str = "grpo", *, eps: float = 1e-6) -> torch.Tensor:
    """Advantages of ``rewards`` (1-D of length n * group_size, groups contiguous, or ``[n, group_size]``).

    Returns a tensor of the shape of ``rewards`` (half inputs are computed in float32 and
    returned in their dtype). See the module text for the formulas.
    """
    if not isinstance(method, str) or method not in ADVANTAGE_METHODS:
        choices = ", ".join(repr(m) for m in ADVANTAGE_METHODS)
        raise ValueError(f"method must be one of {choices}, got {method!r}")
    if isinstance(group_size, bool) or not isinstance(group_size, Integral):
        raise TypeError(f"group_size must be an int, got {type(group_size).__name__} {group_size!r}")
    group_size = int(group_size)
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 (a group needs a second response to compare with), got {group_size}")
    eps = check_real("eps", eps, low=0.0, low_open=True)
    check_tensor("rewards", rewards)
    if rewards.dim() not in (1, 2):
        raise ValueError(f"rewards must be 1-D (n * group_size) or 2-D (n, group_size), got shape {tuple(rewards.shape)}")
    if rewards.numel() == 0:
        raise ValueError("rewards is empty: there is no group to compare with")
    if rewards.dim() == 2 and rewards.shape[1] != group_size:
        raise ValueError(f"rewards of shape {tuple(rewards.shape)} must have group_size = {group_size} columns")
    if rewards.dim() == 1 and rewards.numel() % group_size:
        raise ValueError(f"group_size {group_size} does not divide the number of rewards {rewards.numel()}")
    r = rewards.to(compute_dtype(rewards)).reshape(-1, group_size)
    centred = r - r.mean(dim=-1, keepdim=True)
    if method == "grpo":
        out = centred / (r.std(dim=-1, keepdim=True) + eps)
    elif method == "dr_grpo":
        out = centred
    elif method == "rloo":
        out = centred * (group_size / (group_size - 1))
    else:  # reinforce_baseline
        out = (centred - centred.mean()) / (centred.std(correction=0) + eps)
    return out.reshape(rewards.shape).to(rewards.dtype)
