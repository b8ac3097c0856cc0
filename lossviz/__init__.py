"""lossviz: derive, verify, plot and use the loss functions of LLM post-training.

Importing ``lossviz`` is cheap: torch, sympy and matplotlib load only when the part that
needs them is first used (``lossviz.losses`` needs torch alone).
"""

__version__ = "0.1.0"
