"""Running a scenario: the production losses, the optimisers, the recorded series, the result.

Every loss here is a class of :mod:`lossviz.losses`, called exactly as a trainer calls it;
the simulation only supplies log-probabilities from a toy policy.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from .declare import DynamicsError, Scenario, get

COMMON_SERIES = ("loss", "margin", "logp_chosen", "logp_rejected", "kl")
MAX_STEPS = 100_000
# "unclipped" PPO: the production PolicyLoss with its trust region widened to [1e-9, 1e9]. The
# log-ratio is clamped at 20 (ratio < 4.9e8) before the clip, so the upper edge is never reached;
# the lower edge only for a ratio below 1e-9 (log r < -20.7), which tests/test_dynamics.py rules out.
NO_CLIP_LOW, NO_CLIP_HIGH = 1.0 - 1e-9, 1e9

# loss name -> (production class as called, the scenario parameters it reads)
LOSSES = {
    "dpo": ("DPOLoss(beta)", ("beta",)),
    "ipo": ("DPOLoss(beta, ipo=True)", ("beta",)),
    "cdpo": ("DPOLoss(beta, label_smoothing)", ("beta", "label_smoothing")),
    "kto": ("KTOLoss(beta, desirable_weight=1, undesirable_weight=1, world_size=1)", ("beta",)),
    "vanilla-kto": ("VanillaKTOLoss(beta)", ("beta",)),
    "ppo": ("PolicyLoss(clip_eps)", ("clip_eps",)),
    "ppo-noclip": ("PolicyLoss(clip_eps_low=1-1e-9, clip_eps_high=1e9): no clipping in reach", ()),
    "ppo-dualclip": ("PolicyLoss(clip_eps, dual_clip)", ("clip_eps", "dual_clip")),
}
# length-bias: "<advantage estimator>/<aggregation mode>", trained on-policy (ratio 1) with the production PolicyLoss
ADVANTAGE_METHODS = ("grpo", "dr_grpo", "rloo", "reinforce_baseline")
AGG_MODES = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
for _method in ADVANTAGE_METHODS:
    for _mode in AGG_MODES:
        LOSSES[f"{_method}/{_mode}"] = (f"PolicyLoss(loss_agg_mode={_mode!r}) on group_advantages(method={_method!r})", ())
# kl-estimators: a policy-gradient loss plus β·compute_approx_kl(log π, log π_ref, estimator) as a loss term
KL_ESTIMATORS = ("k1", "k2", "k3", "abs", "k1+", "k3+")
for _est in KL_ESTIMATORS:
    LOSSES[_est] = (f"PolicyLoss() + beta * compute_approx_kl(kl_estimator={_est!r}).mean()", ("beta",))
LOSSES["no-kl"] = ("PolicyLoss(): no KL term", ())
LOSSES["k1-in-reward"] = ("PolicyLoss() on the reward r - beta * k1 (detached)", ("beta",))
# the preference losses of issue #14 (TRL's loss_type names on DPOLoss, and the reference-free losses); every
# response of the tabular and log-linear policies is one token long (lengths 1), the autoregressive one has lengths
PREFERENCE_TYPES = {"robust": "robust", "hinge": "hinge", "exo": "exo_pair", "nca": "nca_pair", "bco": "bco_pair",
                    "sppo": "sppo_hard", "apo-zero": "apo_zero", "apo-down": "apo_down", "discopop": "discopop",
                    "ln-dpo": "sigmoid_norm"}
SMOOTHED_TYPES = ("robust", "exo")  # ε from label_smoothing, as TRL takes it
LOSSES.update({name: (f"DPOLoss(beta{', label_smoothing' if name in SMOOTHED_TYPES else ''}, loss_type={kind!r})",
                      ("beta", "label_smoothing") if name in SMOOTHED_TYPES else ("beta",))
               for name, kind in PREFERENCE_TYPES.items()})
LOSSES.update({
    "ln-ipo": ("DPOLoss(beta, ipo=True, length_normalized=True): IPO on per-token log-ratios (TRL, HALOs)", ("beta",)),
    "rpo": ("DPOLoss(beta, nll_loss_coef=alpha): DPO + α·NLL(y_c), token mean", ("beta", "alpha")),
    "simpo": ("SimPOLoss(beta, gamma): reference-free, mean log-probs", ("beta", "gamma")),
    "cpo": ("CPOLoss(beta, alpha): reference-free, + α·NLL(y_c)", ("beta", "alpha")),
    "orpo": ("ORPOLoss(): NLL(y_c) − λ·log σ(log-odds ratio), λ = 0.1", ()),
})
#: losses whose forward takes response lengths (summed log-probs in, normalised inside)
LENGTH_LOSSES = ("ln-dpo", "ln-ipo", "rpo", "simpo", "cpo", "orpo")
#: losses without a reference model
REFERENCE_FREE = ("simpo", "cpo", "orpo")


def build_loss(name: str, params: Dict[str, float]):
    """The production module for a loss name at the scenario's parameters."""
    import torch

    from .. import losses as L

    if name == "dpo":
        return L.DPOLoss(params["beta"])
    if name == "ipo":
        return L.DPOLoss(params["beta"], ipo=True)
    if name == "cdpo":
        return L.DPOLoss(params["beta"], label_smoothing=params["label_smoothing"])
    if name == "kto":
        return L.KTOLoss(params["beta"], 1.0, 1.0, world_size=1, device=torch.device("cpu"))
    if name == "vanilla-kto":
        return L.VanillaKTOLoss(params["beta"])
    if name in PREFERENCE_TYPES:
        smoothing = params["label_smoothing"] if name in SMOOTHED_TYPES else 0.0
        return L.DPOLoss(params["beta"], label_smoothing=smoothing, loss_type=PREFERENCE_TYPES[name])
    if name == "ln-ipo":
        return L.DPOLoss(params["beta"], ipo=True, length_normalized=True)
    if name == "rpo":
        return L.DPOLoss(params["beta"], nll_loss_coef=params["alpha"])
    if name == "simpo":
        return L.SimPOLoss(beta=params["beta"], gamma=params["gamma"])
    if name == "cpo":
        return L.CPOLoss(beta=params["beta"], alpha=params["alpha"])
    if name == "orpo":
        return L.ORPOLoss()
    if name == "ppo":
        return L.PolicyLoss(params["clip_eps"])
    if name == "ppo-noclip":
        return L.PolicyLoss(clip_eps=None, clip_eps_low=NO_CLIP_LOW, clip_eps_high=NO_CLIP_HIGH)
    if name == "ppo-dualclip":
        return L.PolicyLoss(params["clip_eps"], dual_clip=params["dual_clip"])
    if "/" in name and name in LOSSES:  # length-bias: the advantage estimator is the scenario's business
        return L.PolicyLoss(loss_agg_mode=name.split("/", 1)[1])
    if name in KL_ESTIMATORS:  # kl-estimators: (the policy-gradient loss, the KL estimator as a loss term)
        import functools

        return L.PolicyLoss(), functools.partial(L.compute_approx_kl, kl_estimator=name)
    if name in ("no-kl", "k1-in-reward"):
        return L.PolicyLoss(), None
    raise DynamicsError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")


def pair_loss(name: str, module, chosen, rejected, ref_chosen, ref_rejected, kl=None, ref_kl=None, *,
              chosen_lengths=None, rejected_lengths=None):
    """The scalar loss of a preference module on sequence log-probs (KTO also takes the mismatched KL batch).

    ``chosen``/``rejected`` are summed log-probs; the lengths (default 1: one-token responses) go to the
    losses that normalise by them.
    """
    if name == "kto":
        return module(chosen, rejected, kl, ref_chosen, ref_rejected, ref_kl)[0]
    if name in LENGTH_LOSSES:
        chosen_lengths = chosen.detach() * 0 + 1 if chosen_lengths is None else chosen_lengths
        rejected_lengths = rejected.detach() * 0 + 1 if rejected_lengths is None else rejected_lengths
        if name == "cpo":  # CPO sums the log-probs; only its NLL term is a token mean
            return module(chosen, rejected, chosen_lengths)[0]
        if name in REFERENCE_FREE:
            return module(chosen, rejected, chosen_lengths, rejected_lengths)[0]
        return module(chosen, rejected, ref_chosen, ref_rejected, chosen_lengths=chosen_lengths,
                      rejected_lengths=rejected_lengths)[0]
    return module(chosen, rejected, ref_chosen, ref_rejected)[0]


def loss_params(name: str, params: Dict[str, float]) -> Dict[str, object]:
    call, reads = LOSSES[name]
    return {"call": call, **{k: params[k] for k in reads}}


class Optimizer:
    """Plain SGD (θ ← θ − η∇ℓ, what first-order predictions assume) or Adam (Kingma & Ba 2015, Algorithm 1).

    Written out rather than taken from ``torch.optim``, whose import pulls in torch's compiler
    stack (about 1.5 s): the simulations should take seconds in all.
    """

    BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults

    def __init__(self, parameters, kind: str, lr: float):
        self.parameters = list(parameters)
        self.kind, self.lr, self.t = kind, lr, 0
        self.moments = [(p.detach() * 0, p.detach() * 0) for p in self.parameters]

    def zero_grad(self):
        for p in self.parameters:
            p.grad = None

    def step(self):
        import torch

        self.t += 1
        with torch.no_grad():
            if self.kind == "sgd":
                for p in self.parameters:
                    p -= self.lr * p.grad
                return
            b1, b2 = self.BETAS
            for p, (m, v) in zip(self.parameters, self.moments):
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                m_hat = m / (1 - b1**self.t)
                v_hat = v / (1 - b2**self.t)
                p -= self.lr * m_hat / (v_hat.sqrt() + self.EPS)


class Recorder:
    """Per-step scalars, appended in order; ``arrays()`` gives numpy float64 arrays."""

    def __init__(self):
        self.values: Dict[str, List[float]] = {}

    def add(self, **values):
        for name, value in values.items():
            self.values.setdefault(name, []).append(float(value))

    def arrays(self) -> Dict[str, np.ndarray]:
        return {name: np.asarray(v, dtype=np.float64) for name, v in self.values.items()}


@dataclass
class Context:
    """What a scenario's ``run`` receives: validated settings and the shared progress bar."""

    scenario: Scenario
    losses: Sequence[str]
    steps: int
    lr: float
    seed: int
    params: Dict[str, float]
    progress: object

    def generator(self, offset: int = 0):
        import torch

        return torch.Generator().manual_seed(self.seed * 1000 + offset)

    def optimizer(self, parameters, lr: Optional[float] = None) -> Optimizer:
        return Optimizer(parameters, self.scenario.optimizer, self.lr if lr is None else lr)


@dataclass
class Run:
    """One loss's run: its parameters and its series (numpy arrays, one value per step)."""

    loss: str
    params: Dict[str, object]
    series: Dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.series[name]
        except KeyError:
            raise KeyError(f"run {self.loss} has no series {name!r}; series: {', '.join(self.series)}") from None


@dataclass
class Simulation:
    """The result of :func:`simulate`: ``sim.runs["ipo"]["margin"]`` is a numpy array over ``sim.steps``."""

    scenario: Scenario
    steps: np.ndarray
    runs: Dict[str, Run]
    params: Dict[str, float]
    lr: float
    seed: int
    extra: Dict[str, object] = field(default_factory=dict)  # scenario-level data for figures (features, sweeps)

    def __getitem__(self, loss: str) -> Run:
        try:
            return self.runs[loss]
        except KeyError:
            raise KeyError(f"no run for {loss!r}; runs: {', '.join(self.runs)}") from None

    @property
    def claim(self) -> str:
        return self.scenario.claim

    @property
    def source(self) -> str:
        return self.scenario.source

    def figure(self):
        """The scenario's figure (a matplotlib Figure, lossviz style)."""
        from ..plots.core import styled
        from . import figures

        return styled(self.scenario.figure or figures.generic, self)

    def to_dict(self) -> dict:
        from .. import __version__

        return {
            "generator": f"lossviz {__version__}",  # lets a later run recognise (and replace) its own file
            "scenario": self.scenario.name,
            "settings": {"lr": self.lr, "seed": self.seed, "optimizer": self.scenario.optimizer, **self.params},
            "steps": [int(s) for s in self.steps],
            "runs": {loss: {"params": _jsonable(run.params), "series": _jsonable(run.series)} for loss, run in self.runs.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    def __repr__(self):
        return f"Simulation({self.scenario.name!r}, losses={list(self.runs)}, steps={len(self.steps) - 1})"


def _jsonable(value):
    """Arrays as (nested) lists, NaN and ±inf as null: JSON has no NaN/inf (DPO's fixed point is inf)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def check_settings(scenario: Scenario, steps, lr, seed):
    owner = scenario.name
    if steps is None:
        steps = scenario.steps
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= MAX_STEPS:
        raise DynamicsError(f"{owner}: --steps must be a whole number in [1, {MAX_STEPS}], got {steps!r}")
    if lr is None:
        lr = scenario.lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or not 0 < lr <= 100:
        raise DynamicsError(f"{owner}: --lr must be a number in (0, 100], got {lr!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**31:
        raise DynamicsError(f"{owner}: --seed must be a whole number in [0, 2^31), got {seed!r}")
    return int(steps), float(lr), int(seed)


def simulate(scenario, losses=None, steps: Optional[int] = None, seed: int = 0, lr: Optional[float] = None,
             progress: Optional[bool] = None, **params) -> Simulation:
    """Train the scenario's toy policy with each loss and record every step.

    ``losses`` is a list (or a comma-separated string) of the scenario's losses, default its
    own selection; ``params`` are the scenario's parameters (``lossviz simulate --list``).
    ``progress=None`` shows a bar on a terminal for runs longer than a second.
    """
    import torch

    from .progress import Progress

    item = get(scenario)
    chosen = item.resolve_losses(losses)
    steps, lr, seed = check_settings(item, steps, lr, seed)
    resolved = item.resolve(params)
    bar = Progress(total=steps * len(chosen) * _work_units(item, resolved), label=f"simulate {item.name}", enabled=progress)
    ctx = Context(item, chosen, steps, lr, seed, resolved, bar)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # tensors of a few dozen numbers: threads only add overhead
        with torch.random.fork_rng(devices=[]):  # the seed's generators only; the caller's global RNG is left as it was
            torch.manual_seed(seed)
            runs, step_axis, extra = item.run(ctx)
    finally:
        torch.set_num_threads(threads)
        bar.close()
    return Simulation(item, np.asarray(step_axis), runs, resolved, lr, seed, extra)


def _work_units(item: Scenario, params: Dict[str, float]) -> int:
    return 1
