"""Production losses, drop-in compatible with OpenRLHF's (release v0.5.3) classes.

Importing this package pulls in torch only (no sympy, no matplotlib), so a training job
pays for nothing else::

    from lossviz.losses import DPOLoss
"""

from ._reduce import masked_mean
from .preference import DPOLoss, KTOLoss, VanillaKTOLoss
from .reward import LogExpLoss, PairWiseLoss, PRMLoss
from .rl import PolicyLoss, ValueLoss, log_ratio_limit
from .chunked import FusedLinearGPTLMLoss, FusedLinearKDLoss
from .sft import GPTLMLoss, KDLoss
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
]
