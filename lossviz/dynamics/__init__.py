"""Training dynamics: train toy policies with the production losses and watch what happens.

    import lossviz
    sim = lossviz.simulate("deterministic-preferences", beta=0.5)
    sim["ipo"]["margin"][-1]         # 1/(2β) = 1.0
    sim.figure()                     # the scenario's figure

Scenarios are declared in :mod:`.catalog` (``lossviz simulate --list``); the toy policies
are in :mod:`.policies`; every loss is a class of :mod:`lossviz.losses`. Importing this
package is light: torch loads when a simulation runs.
"""

from .declare import DynamicsError, Scenario, SimParam, get, scenario, scenarios

__all__ = ["simulate", "explore_dynamics", "scenarios", "get", "scenario", "Scenario", "SimParam", "DynamicsError"]


def __getattr__(name):
    if name == "simulate":
        from .engine import simulate

        return simulate
    if name == "explore_dynamics":
        from .explorer import explore_dynamics

        return explore_dynamics
    raise AttributeError(f"module 'lossviz.dynamics' has no attribute {name!r}")
