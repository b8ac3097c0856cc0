"""Production losses, drop-in compatible with OpenRLHF's (release v0.5.3) classes.

Importing this package pulls in torch only (no sympy, no matplotlib), so a training job
pays for nothing else::

    from lossviz.losses import DPOLoss
"""

from ._reduce import masked_mean
from .preference import DPOLoss, KTOLoss, VanillaKTOLoss
from .reward import LogExpLoss, PairWiseLoss, PRMLoss
from .rl import PolicyLoss, ValueLoss, log_ratio_limit
from ._reduce import AGG_MODES, agg_loss  # RL losses of 2025-26 (#13)
from .rl import POLICY_LOSS_TYPES
from .kl import KL_ESTIMATORS, compute_approx_kl
from .advantages import ADVANTAGE_METHODS, group_advantages
from .chunked import FusedLinearGPTLMLoss, FusedLinearKDLoss
from .sft import GPTLMLoss, KDLoss
from .preference import DPO_LOSS_TYPES, KTO_LOSS_TYPES  # preference and distillation losses beyond DPO (#14)
from .reference_free import CPOLoss, ORPOLoss, SimPOLoss
from .distill import GKDLoss, ReverseKLLoss, gkd_per_token
from .fused import (  # fused-linear sequence losses (#15)
    FusedLinearCPOLoss, FusedLinearDPOLoss, FusedLinearGKDLoss, FusedLinearKTOLoss, FusedLinearORPOLoss,
    FusedLinearPolicyLoss, FusedLinearSimPOLoss, sequence_logps, token_logps,
)
from .chunked import chunked_gptlm_loss, chunked_kd_loss
from .placeholders import check_placeholders  # PRM data: does every step keep its placeholder token?

__all__ = [
    "GPTLMLoss",
    "KDLoss",
    "DPOLoss",
    "KTOLoss",
    "VanillaKTOLoss",
    "PolicyLoss",
    "ValueLoss",
    "PairWiseLoss",
    "LogExpLoss",
    "PRMLoss",
    "masked_mean",
    "FusedLinearGPTLMLoss",
    "FusedLinearKDLoss",
    "check_placeholders",
    "log_ratio_limit",
    "DPO_LOSS_TYPES",  # #14
    "KTO_LOSS_TYPES",
    "SimPOLoss",
    "CPOLoss",
    "ORPOLoss",
    "GKDLoss",
    "ReverseKLLoss",
    "gkd_per_token",
    "agg_loss",
    "AGG_MODES",
    "POLICY_LOSS_TYPES",
    "compute_approx_kl",
    "KL_ESTIMATORS",
    "group_advantages",
    "ADVANTAGE_METHODS",
    "FusedLinearDPOLoss",  # #15
    "FusedLinearSimPOLoss",
    "FusedLinearCPOLoss",
    "FusedLinearORPOLoss",
    "FusedLinearKTOLoss",
    "FusedLinearPolicyLoss",
    "FusedLinearGKDLoss",
    "token_logps",
    "sequence_logps",
    "chunked_gptlm_loss",
    "chunked_kd_loss",
]
