"""lossviz: derive, verify, plot and use the loss functions of LLM post-training.

Importing ``lossviz`` is cheap: torch, sympy and matplotlib load only when the part that
needs them is first used (``lossviz.losses`` needs torch alone)::

    import lossviz
    d = lossviz.derive("cdpo", beta=0.1)     # sympy loss, gradient, LaTeX and lesson facts
    d.fact("minimum").value                  # log((1 - label_smoothing)/label_smoothing)*10
    lossviz.verify("dpo", device="cpu", dtype="float32").ok   # production gradient == the card's
"""

__version__ = "0.1.0"

__all__ = ["derive", "verify", "explore", "get_card", "names", "simulate", "explore_dynamics", "__version__"]


def __getattr__(name):
    # lazy: a training job that imports lossviz.losses never pays for sympy
    if name in ("derive", "names"):
        from . import registry

        return getattr(registry, name)
    if name == "verify":
        from .verification import verify

        return verify
    if name == "explore":
        from .widgets import explore

        return explore
    if name == "get_card":
        from .registry import get

        return get
    if name in ("simulate", "explore_dynamics"):  # training dynamics: torch loads when a simulation runs
        from . import dynamics

        return getattr(dynamics, name)
    raise AttributeError(f"module 'lossviz' has no attribute {name!r}")
