"""The scenarios: each is one ``@scenario(...)`` declaration on the function that runs it.

A run function receives a :class:`~lossviz.dynamics.engine.Context` and returns
``(runs, steps, extra)``: ``runs`` maps each loss to a :class:`~lossviz.dynamics.engine.Run`,
``steps`` is the step axis and ``extra`` holds what the figure needs besides the series.
Torch is imported inside the run functions, so declaring (and listing) scenarios is free.
"""

from __future__ import annotations

import math

import numpy as np

from . import figures
from .declare import SimParam, scenario
from .engine import Recorder, Run, build_loss, loss_params, pair_loss

BETA = SimParam("beta", 0.5, 0.05, 5.0, "KL strength β of the preference losses", slider_step=0.05)
SMOOTHING = SimParam("label_smoothing", 0.1, 0.01, 0.45, "cDPO's assumed flip rate ε", slider_step=0.01)
# the losses of issue #14 (engine.LOSSES says how each is built); ε of rDPO and EXO is label_smoothing, as in TRL
ALPHA = SimParam("alpha", 1.0, 0.0, 10.0, "weight α of the NLL term of RPO and CPO", slider_step=0.05)
GAMMA = SimParam("gamma", 0.5, 0.0, 5.0, "SimPO's margin γ (the loss is −log σ(β·Δ̄ − γ))", slider_step=0.05)
TABULAR_NEW = ("hinge", "sppo", "exo", "nca", "robust", "discopop", "apo-zero", "apo-down", "bco")


def train_pairs(ctx, loss, policy, prompts, chosen, rejected, on_step=None, kl_responses=None):
    """Train ``policy`` with one production preference loss on fixed pairs; record every step.

    Step k records the state after k updates (k = 0 is the reference), so each series has
    ``ctx.steps + 1`` values. ``on_step(rec, policy, logp_chosen, logp_rejected)`` adds the
    scenario's own series; the log-prob tensors carry the loss's gradient in ``.grad``.
    """
    module = build_loss(loss, ctx.params)
    optimizer = ctx.optimizer(policy.parameters())
    ref = policy.reference_log_probs().detach()
    ref_chosen, ref_rejected = ref[prompts, chosen], ref[prompts, rejected]
    # KTO's mismatched batch: each prompt with the chosen response of the next prompt
    kl_responses = chosen.roll(-1) if kl_responses is None else kl_responses
    ref_kl = ref[prompts, kl_responses]
    rec = Recorder()
    for k in range(ctx.steps + 1):
        logp = policy.log_probs()
        lc, lr = logp[prompts, chosen], logp[prompts, rejected]
        lc.retain_grad()
        lr.retain_grad()
        value = pair_loss(loss, module, lc, lr, ref_chosen, ref_rejected, logp[prompts, kl_responses].detach(), ref_kl)
        optimizer.zero_grad()
        value.backward()
        margin = ((lc - ref_chosen) - (lr - ref_rejected)).detach()
        rec.add(loss=value.item(), margin=margin.mean(), logp_chosen=lc.detach().mean(), logp_rejected=lr.detach().mean(),
                kl=policy.kl())
        if on_step is not None:
            on_step(rec, policy, lc, lr)
        if k < ctx.steps:
            optimizer.step()
            ctx.progress.update()
    return rec.arrays()


def discopop_rest(tau: float = 0.05) -> float:
    """z* < 0 where DiscoPOP's loss of z = βh has its local minimum (its slope at z = 0 is positive).

    ℓ(z) = (1 − w)·log(1 + e^{−z}) + w·e^{−z}, w = σ(z/τ) (Chris Lu et al. 2024, arXiv:2406.08414); the
    root of dℓ/dz on [−1, 0] by bisection, in float64.
    """

    def slope(z):
        w = 1.0 / (1.0 + math.exp(-z / tau))
        dw = w * (1.0 - w) / tau
        return -dw * math.log1p(math.exp(-z)) - (1.0 - w) / (1.0 + math.exp(z)) + dw * math.exp(-z) - w * math.exp(-z)

    lo, hi = -1.0, 0.0  # slope(−1) < 0 < slope(0)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


def fixed_point(loss: str, params) -> float:
    """The margin h where the loss's gradient vanishes on deterministic data (inf where it never does)."""
    beta = params["beta"]
    if loss == "ipo":
        return 1.0 / (2.0 * beta)  # Azar et al., Eq. 17
    if loss in ("cdpo", "exo"):  # EXO's KL to [1 − ε, ε] is 0 where σ(βh) = 1 − ε, cDPO's minimum too
        eps = params["label_smoothing"]
        return math.log((1.0 - eps) / eps) / beta  # Mitchell (2023); Ji et al. 2024 (arXiv:2402.00856)
    if loss == "sppo":  # ρ_c → 1/(2β) and ρ_r → −1/(2β) (Wu et al. 2024, arXiv:2405.00675)
        return 1.0 / beta
    if loss == "hinge":  # max(0, 1 − βh) has zero gradient from βh = 1 on; it stops where it first gets there
        return 1.0 / beta
    if loss == "discopop":  # from h = 0 the loss falls towards negative z: a local minimum on the wrong side
        return discopop_rest() / beta
    return math.inf


def _tabular_pair_run(ctx, loss, reference_logits):
    import torch

    from .policies import TabularSoftmax

    policy = TabularSoftmax(reference_logits)
    zero, one = torch.zeros(1, dtype=torch.long), torch.ones(1, dtype=torch.long)

    def on_step(rec, policy, lc, lr):
        log_probs, ref = policy.log_probs().detach()[0], policy.reference_log_probs()[0]
        probs = log_probs.exp()
        rec.add(p_chosen=probs[0], p_rejected=probs[1], push_chosen=-lc.grad.sum(),
                logratio_chosen=log_probs[0] - ref[0], logratio_rejected=log_probs[1] - ref[1])

    return train_pairs(ctx, loss, policy, zero, zero, one, on_step)  # prompt 0: y_0 ≻ y_1


def _reference_logits(ctx, responses: int = 4):
    import torch

    from .policies import DTYPE

    return torch.randn(1, responses, generator=ctx.generator(), dtype=DTYPE)


@scenario(
    name="deterministic-preferences",
    title="Deterministic preferences: DPO's margin never stops, IPO's and cDPO's do",
    policy="tabular softmax over 4 responses (one logit each), started at a random reference",
    data="one comparison y_c ≻ y_r, the same label every time (p(y_c ≻ y_r) = 1)",
    losses=("dpo", "ipo", "cdpo", *TABULAR_NEW),
    default_losses=("dpo", "ipo", "cdpo"),
    params=(BETA, SMOOTHING),
    series=("p_chosen", "p_rejected", "push_chosen", "logratio_chosen", "logratio_rejected"),
    claim="When every label says y_c ≻ y_r, DPO's loss keeps falling as the margin h grows, so h grows "
    "without bound whatever β is; IPO stops at h = 1/(2β) and cDPO at h* = log((1−ε)/ε)/β. DPO's KL(π‖π_ref) "
    "still levels off (0.436 at step 300 at the defaults): on the tabular policy only the logits of y_c and y_r "
    "move, log π(y_r) → −∞ drives the margin while π(y_r) → 0 adds no KL, and π → the point mass on y_c, "
    "whose KL is −log π_ref(y_c) (0.446 here). Of the other losses (--losses), EXO stops where cDPO does, SPPO "
    "at ρ_c = 1/(2β), ρ_r = −1/(2β) when π(y_c) can grow that far (β = 2 here), NCA's ρ_c at log(2)/β, DiscoPOP "
    "at its local minimum z*/β < 0 (on the wrong side: its slope at h = 0 is positive) and hinge anywhere past "
    "βh = 1; rDPO, BCO, APO-zero and APO-down never stop.",
    source="Azar et al. 2024 (arXiv:2310.12036), §4.2 and Eq. 17; Mitchell 2023, note on cDPO",
    steps=300,
    lr=0.1,
    optimizer="adam",
    figure=figures.deterministic_preferences,
)
def deterministic_preferences(ctx):
    import torch

    reference = _reference_logits(ctx)
    # the largest log-ratio y_c can reach: π(y_c) = 1, ρ_c = −log π_ref(y_c)
    ceiling = -float(torch.log_softmax(reference, dim=-1)[0, 0])
    runs = {}
    for loss in ctx.losses:
        series = _tabular_pair_run(ctx, loss, reference)
        target, chosen = fixed_point(loss, ctx.params), chosen_fixed_point(loss, ctx.params)
        if loss == "sppo" and chosen > ceiling:
            target = math.nan  # ρ_c = 1/(2β) would need π(y_c) > 1: the margin settles elsewhere
        runs[loss] = Run(loss, {**loss_params(loss, ctx.params), "fixed_point_margin": target,
                                "fixed_point_chosen": chosen, "ceiling_chosen": ceiling}, series)
    return runs, np.arange(ctx.steps + 1), {}


def chosen_fixed_point(loss: str, params) -> float:
    """Where the chosen log-ratio ρ_c = log π(y_c) − log π_ref(y_c) stops on its own (NaN: it has no target of its own).

    SPPO regresses ρ_c on 1/(2β); NCA's terms in ρ_c, −log σ(βρ_c) − ½·log σ(−βρ_c), have zero slope where
    σ(−βρ_c) = ½σ(βρ_c), at βρ_c = log 2 (Chen et al. 2024, arXiv:2402.05369).
    """
    beta = params["beta"]
    if loss == "sppo":
        return 1.0 / (2.0 * beta)
    if loss == "nca":
        return math.log(2.0) / beta
    return math.nan


@scenario(
    name="beta-sweep",
    title="β is the KL strength: final KL(π‖π_ref) and margin against β",
    policy="tabular softmax over 4 responses, started at a random reference",
    data="one comparison y_c ≻ y_r with a deterministic label, trained anew at each β",
    losses=("dpo", "ipo", "cdpo"),
    default_losses=("dpo", "ipo", "cdpo"),
    params=(
        SimParam("beta_min", 0.25, 0.05, 5.0, "smallest β of the sweep"),
        SimParam("beta_max", 4.0, 0.05, 20.0, "largest β of the sweep"),
        SimParam("points", 5, 2, 20, "number of β values (geometric)", integer=True),
        SMOOTHING,
    ),
    series=("beta", "final_margin", "final_kl"),
    claim="A larger β keeps the policy nearer the reference: IPO's and cDPO's margins stop at 1/(2β) and "
    "log((1−ε)/ε)/β, so their final KL falls as β grows; DPO's margin keeps growing at every β (by less per step the larger β is: "
    "over the last 20 of 200 steps by 0.60 at β = 0.25 and 0.009 at β = 4).",
    source="Rafailov et al. 2023 (arXiv:2305.18290), Eq. 3–4; Azar et al. 2024, Eq. 17; Mitchell 2023",
    steps=200,
    lr=0.1,
    optimizer="adam",
    figure=figures.beta_sweep,
)
def beta_sweep(ctx):
    from .declare import DynamicsError

    p = ctx.params
    if p["beta_min"] >= p["beta_max"]:
        raise DynamicsError(f"beta-sweep: --beta-min must be below --beta-max, got {p['beta_min']:g} and {p['beta_max']:g}")
    betas = np.geomspace(p["beta_min"], p["beta_max"], int(p["points"]))
    reference = _reference_logits(ctx)
    runs = {}
    for loss in ctx.losses:
        series = _sweep_run(ctx, loss, reference, betas)
        series["beta"] = betas
        series["final_margin"] = series["margin"][:, -1].copy()
        series["final_kl"] = series["kl"][:, -1].copy()
        series["fixed_point_margin"] = np.array([fixed_point(loss, {**p, "beta": float(b)}) for b in betas])
        runs[loss] = Run(loss, {**loss_params(loss, {**p, "beta": "swept"}), "betas": [float(b) for b in betas]}, series)
    return runs, np.arange(ctx.steps + 1), {"betas": betas}


def _sweep_run(ctx, loss, reference, betas):
    """One independent tabular policy per β, stepped together: row k is trained by the loss at β_k alone.

    The rows share no parameter and Adam works element by element, so this is exactly the
    separate runs, at the cost of one backward pass per step. Series have shape (points, steps + 1).
    """
    import torch

    from .policies import TabularSoftmax

    rows = len(betas)
    policy = TabularSoftmax(reference.expand(rows, -1))
    modules = [build_loss(loss, {**ctx.params, "beta": float(b)}) for b in betas]
    optimizer = ctx.optimizer(policy.parameters())
    ref = policy.reference_log_probs()
    margins, chosen, rejected, kls, values = [], [], [], [], []
    for k in range(ctx.steps + 1):
        logp = policy.log_probs()
        lc, lr = logp[:, 0], logp[:, 1]  # y_0 ≻ y_1 in every row
        per_row = [pair_loss(loss, m, lc[i:i + 1], lr[i:i + 1], ref[i:i + 1, 0], ref[i:i + 1, 1]) for i, m in enumerate(modules)]
        total = torch.stack(per_row)
        optimizer.zero_grad()
        total.sum().backward()
        with torch.no_grad():
            margins.append((lc - ref[:, 0]) - (lr - ref[:, 1]))
            chosen.append(lc.detach().clone())
            rejected.append(lr.detach().clone())
            kls.append((logp.exp() * (logp - ref)).sum(dim=-1))
            values.append(total.detach())
        if k < ctx.steps:
            optimizer.step()
            ctx.progress.update()
    stack = lambda xs: torch.stack(xs, dim=1).numpy().astype(np.float64)  # noqa: E731  (points, steps + 1)
    return {"loss": stack(values), "margin": stack(margins), "logp_chosen": stack(chosen),
            "logp_rejected": stack(rejected), "kl": stack(kls)}


def displacement_features(ches: float, gap: float):
    """Features (3, 2) of y_c, y_r and a third response y_o, centred under the uniform reference.

    φ_c = (1, 0), φ_r = (1 + ches, gap), φ_o = −(φ_c + φ_r): the mean is 0, so at the reference
    CHES = ⟨φ_c, φ_r⟩ − ‖φ_c‖² = ches.
    """
    c = np.array([1.0, 0.0])
    r = np.array([1.0 + ches, gap])
    return np.stack([c, r, -(c + r)])


def ches_score(features, mean):
    """Razin et al.'s CHES score ⟨φ̃_c, φ̃_r⟩ − ‖φ̃_c‖² with φ̃ = φ − φ̄ (rows 0 and 1 are y_c and y_r)."""
    c, r = features[0] - mean, features[1] - mean
    return float(c @ r - c @ c)


@scenario(
    name="likelihood-displacement",
    title="Likelihood displacement: the margin grows, and log π(y_c) may fall",
    policy="log-linear π(y) ∝ exp(θ·φ(y)) over 3 responses with 2-D features, θ started at 0 (uniform reference)",
    data="one comparison y_c ≻ y_r whose features are similar; a third response y_o takes the mass",
    losses=("dpo", "ipo", "cdpo", "rpo", "apo-zero", "simpo", "cpo", "orpo", "sppo", "hinge"),
    default_losses=("dpo",),
    params=(
        SimParam("ches", 0.5, -2.0, 2.0, "CHES score ⟨φ̃_c, φ̃_r⟩ − ‖φ̃_c‖² at the reference "
                 "(> 0: log π(y_c) falls; < 0: it rises)", slider_step=0.05),
        SimParam("gap", 1.0, 0.1, 3.0, "the part of φ_c − φ_r orthogonal to φ_c", slider_step=0.05),
        BETA,
        SMOOTHING,
        ALPHA,
        GAMMA,
    ),
    series=("logp_other", "logp_chosen_first_order", "ches"),
    claim="A DPO step moves θ by η·w·(φ_c − φ_r), w = −∂ℓ/∂log π(y_c) > 0: the margin grows by η·w·‖φ_c − φ_r‖² "
    "while log π(y_c) changes by η·w·(φ_c − φ_r)·(φ_c − φ̄) = −η·w·CHES to first order, so it falls when the "
    "centred chosen and rejected features are similar (CHES > 0) and the mass goes to another response. "
    "The first-order change is exact as η → 0; at the default η = 0.25 the first step lowers log π(y_c) "
    "by 0.037 where first order says 0.031. A loss that weighs y_c and y_r apart (w_r = ∂ℓ/∂log π(y_r)) "
    "changes it by η[w·‖φ_c − φ̄‖² − w_r·(φ_r − φ̄)·(φ_c − φ̄)]: an NLL term on y_c (RPO, CPO, ORPO) adds α to w "
    "and at the defaults turns the fall into a rise; SimPO, hinge and APO-zero (w = w_r at the start) "
    "still displace.",
    source="Razin et al. 2024 (arXiv:2410.08847), the CHES score; Pal et al. 2024 (arXiv:2402.13228)",
    steps=100,
    lr=0.25,
    optimizer="sgd",
    figure=figures.likelihood_displacement,
)
def likelihood_displacement(ctx):
    import torch

    from .policies import DTYPE, LogLinear

    features = displacement_features(ctx.params["ches"], ctx.params["gap"])
    phi = torch.tensor(features, dtype=DTYPE)
    runs = {}
    for loss in ctx.losses:
        policy = LogLinear(phi.unsqueeze(0), torch.zeros(2, dtype=DTYPE))
        state = {"predicted": None}

        def on_step(rec, policy, lc, lr, state=state):
            with torch.no_grad():
                mean = policy.mean_features()[0]
                log_probs = policy.log_probs()[0]
                weight = float(-lc.grad.sum())  # w = −∂ℓ/∂log π(y_c), from the production loss
                # w_r = ∂ℓ/∂log π(y_r): w for the losses of the margin alone; APO, SPPO, RPO, ORPO weigh the two apart
                weight_rejected = float(lr.grad.sum())
                # one-step-ahead first-order prediction of log π(y_c), made at the previous step
                previous = state["predicted"]
                rec.add(logp_other=log_probs[2], ches=ches_score(phi.numpy(), mean.numpy()),
                        logp_chosen_first_order=float(lc) if previous is None else previous)
                # θ moves by η(w·(φ_c − φ̄) − w_r·(φ_r − φ̄)); its product with ∇log π(y_c) = φ_c − φ̄ is
                # η[w·(φ_c − φ_r)·(φ_c − φ̄) + (w − w_r)·(φ_r − φ̄)·(φ_c − φ̄)] (the second term is 0 when w = w_r)
                step = (ctx.lr * weight * float((phi[0] - phi[1]) @ (phi[0] - mean))
                        + ctx.lr * (weight - weight_rejected) * float((phi[1] - mean) @ (phi[0] - mean)))
                state["predicted"] = float(lc) + step

        series = train_pairs(ctx, loss, policy, torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long),
                             torch.ones(1, dtype=torch.long), on_step)
        runs[loss] = Run(loss, loss_params(loss, ctx.params), series)
    return runs, np.arange(ctx.steps + 1), {"features": features}


@scenario(
    name="noisy-labels",
    title="Noisy labels: DPO pulls hardest on the flipped pairs, KTO ranks worst",
    policy="log-linear over 6 responses per prompt with 4-D features shared across 64 prompts, "
    "started at the uniform reference",
    data="one pair per prompt, labelled by a hidden linear reward; a fraction `flip` of the labels is swapped",
    losses=("dpo", "cdpo", "ipo", "kto", "vanilla-kto", "robust", "hinge", "exo", "sppo", "apo-zero", "bco", "nca",
            "simpo"),
    default_losses=("dpo", "cdpo", "kto"),
    params=(
        SimParam("flip", 0.2, 0.0, 0.5, "fraction of pairs whose label is swapped", slider_step=0.05),
        SimParam("beta", 0.5, 0.05, 5.0, "KL strength β", slider_step=0.05),
        SimParam("label_smoothing", 0.2, 0.01, 0.45, "cDPO's, rDPO's and EXO's assumed flip rate ε", slider_step=0.01),
        GAMMA,
    ),
    series=("accuracy", "weight_clean", "weight_flipped"),
    claim="DPO's per-pair gradient weight β·σ(−βh) is largest on pairs the policy ranks against their label, "
    "so once it learns the hidden reward it pulls hardest on the flipped pairs. cDPO, told the flip rate ε, "
    "pulls on them less. KTO's weight β·σ(u)·σ(−u) falls on both sides of its reference point, so here it "
    "weighs flipped and clean examples alike (within 10%). That does not make KTO the robust one: it ends "
    "with the lowest ranking accuracy (0.82, against 0.93 for DPO and 0.92 for cDPO at the defaults). Of the "
    "other losses (--losses): rDPO, told ε, ranks as well as DPO (0.93) but drifts furthest (KL 1.54 against "
    "0.83): its weight never falls below βε/(1−2ε); hinge pulls on every flipped pair with its full weight β to "
    "the end; APO-zero, KTO with its reference point at 0, follows KTO here (to 1e-6); IPO and SPPO, whose "
    "weights grow without bound on wrongly ranked pairs, stay nearest the reference (KL 0.05 and 0.06).",
    source="Rafailov et al. 2023, §4 (the DPO gradient weight); Ethayarajh et al. 2024 (arXiv:2402.01306), §4; "
    "Mitchell 2023",
    steps=200,
    lr=0.05,
    optimizer="adam",
    figure=figures.noisy_labels,
)
def noisy_labels(ctx):
    import torch

    from .policies import DTYPE, LogLinear

    prompts, responses, dims = 64, 6, 4
    gen = ctx.generator()
    phi = torch.randn(prompts, responses, dims, generator=gen, dtype=DTYPE)
    theta_true = torch.randn(dims, generator=gen, dtype=DTYPE)
    theta_true = 2.0 * theta_true / theta_true.norm()
    reward = phi @ theta_true  # (P, K) the hidden reward
    order = torch.stack([torch.randperm(responses, generator=gen)[:2] for _ in range(prompts)])
    a, b = order[:, 0], order[:, 1]
    rows = torch.arange(prompts)
    better = reward[rows, a] >= reward[rows, b]
    chosen, rejected = torch.where(better, a, b), torch.where(better, b, a)
    flipped = torch.zeros(prompts, dtype=torch.bool)
    flipped[torch.randperm(prompts, generator=gen)[: int(round(ctx.params["flip"] * prompts))]] = True
    chosen, rejected = torch.where(flipped, rejected, chosen), torch.where(flipped, chosen, rejected)
    # all K(K-1)/2 comparisons of every prompt, for the ranking accuracy against the hidden reward
    i, j = torch.triu_indices(responses, responses, 1)
    true_sign = torch.sign(reward[:, i] - reward[:, j])

    runs = {}
    for loss in ctx.losses:
        policy = LogLinear(phi, torch.zeros(dims, dtype=DTYPE))
        terms = 2 * prompts if loss in ("kto", "vanilla-kto") else prompts  # what the loss's mean divides by

        def on_step(rec, policy, lc, lr, terms=terms):
            with torch.no_grad():
                scores = policy.features @ policy.theta
                # a tie (the uniform reference) counts as half right
                agree = (0.5 * (1 + torch.sign(scores[:, i] - scores[:, j]) * true_sign)).mean()
                weight = terms * 0.5 * (lc.grad.abs() + lr.grad.abs())  # per-example weight |∂ℓ_i/∂log π|
                rec.add(accuracy=agree, weight_clean=weight[~flipped].mean(),
                        weight_flipped=weight[flipped].mean() if flipped.any() else float("nan"))

        series = train_pairs(ctx, loss, policy, rows, chosen, rejected, on_step)
        runs[loss] = Run(loss, loss_params(loss, ctx.params), series)
    return runs, np.arange(ctx.steps + 1), {"flipped": int(flipped.sum()), "pairs": prompts}


@scenario(
    name="trust-region",
    title="PPO's trust region over several epochs on one batch",
    policy="tiny autoregressive policy: 6 tokens (token 0 stops), up to 12 tokens, "
    "logits from a table indexed by (position, previous token)",
    data="128 sequences sampled once from π_old; reward = share of token 1 in the sequence; "
    "advantage = the reward standardised over the batch, on every token",
    losses=("ppo", "ppo-noclip", "ppo-dualclip"),
    default_losses=("ppo", "ppo-noclip", "ppo-dualclip"),
    params=(
        SimParam("clip_eps", 0.2, 0.01, 0.9, "clip ε of the trust region [1−ε, 1+ε]", slider_step=0.01),
        SimParam("dual_clip", 1.5, 1.05, 10.0, "dual clip c: the loss of A < 0 tokens is capped at −c·A", slider_step=0.05),
        SimParam("minibatches", 4, 1, 32, "updates per epoch (the batch split into this many minibatches)", integer=True),
    ),
    series=("clip_fraction", "zero_grad_fraction", "dual_clip_fraction", "max_abs_log_ratio", "max_log_ratio_negative",
            "max_push_negative", "log_ratio_q05", "log_ratio_q25", "log_ratio_median", "log_ratio_q75", "log_ratio_q95"),
    claim="Re-using a batch for several epochs, the clipped objective stops pushing a token once its ratio leaves "
    "[1−ε, 1+ε] in the direction its advantage favours, so the ratios drift less far than without clipping. "
    "They can still pass the edge: a clipped token shares its state's parameters with unclipped tokens, and "
    "Adam's momentum carries earlier steps. So an A < 0 token can end with r > c, when the same token in the "
    "same state has A > 0 in other sequences. Plain clipping pushes such a token down with a push of size w·r·|A| "
    "(w its share of the loss's mean), which grows with r; dual clip caps its loss at w·c·|A| and stops pushing it, "
    "so no A < 0 token is pushed with more than w·c·|A|.",
    source="Schulman et al. 2017 (arXiv:1707.06347), Eq. 7; Ye et al. 2020 (arXiv:1912.09729), dual-clip PPO",
    steps=8,
    lr=0.1,
    optimizer="adam",
    step_name="epoch",
    figure=figures.trust_region,
)
def trust_region(ctx):
    import torch

    from .policies import DTYPE, TinyAutoregressive

    batch, vocab, max_len, favoured = 128, 6, 12, 1
    gen = ctx.generator()
    old = TinyAutoregressive(vocab, max_len, gen)
    tokens, mask = old.sample(batch, gen)
    with torch.no_grad():
        old_logp = old.token_log_probs(tokens)
        old_state = old.state_log_probs(tokens)
    lengths = mask.sum(dim=1)
    reward = ((tokens == favoured).to(DTYPE) * mask).sum(dim=1) / lengths
    adv_seq = (reward - reward.mean()) / (reward.std() + 1e-8)
    advantages = adv_seq.unsqueeze(1).expand(-1, max_len).contiguous() * mask
    eps, dual = ctx.params["clip_eps"], ctx.params["dual_clip"]
    minibatches = min(int(ctx.params["minibatches"]), batch)
    shuffle_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    selected = mask.bool()

    runs, extra = {}, {"log_ratios": {}, "clip_eps": eps, "dual_clip": dual,
                       "negative": (advantages[selected] < 0).numpy()}  # the A < 0 tokens, in log_ratios' order
    for loss in ctx.losses:
        module = build_loss(loss, ctx.params)
        policy = TinyAutoregressive(vocab, max_len, torch.Generator())
        with torch.no_grad():
            policy.table.copy_(old.table)
        optimizer = ctx.optimizer(policy.parameters())
        order_gen = torch.Generator().manual_seed(shuffle_seed)  # the same minibatches for every loss
        # each token's share w_t of the loss (the production reduction): the gradient at r = 1, A = −1
        at_one = old_logp.clone().requires_grad_(True)
        module(at_one, old_logp, -torch.ones_like(advantages), mask).backward()
        share = at_one.grad[selected]
        rec, ratios = Recorder(), []
        for epoch in range(ctx.steps + 1):
            logp = policy.token_log_probs(tokens).detach().requires_grad_(True)
            value = module(logp, old_logp, advantages, mask)
            value.backward()
            with torch.no_grad():
                log_ratio = (logp - old_logp)[selected]
                adv = advantages[selected]
                ratio = log_ratio.exp()
                beyond = ((adv > 0) & (ratio > 1 + eps)) | ((adv < 0) & (ratio < 1 - eps))
                past_dual = (adv < 0) & (ratio > dual)
                negative = adv < 0
                # the size of the push −∂ℓ/∂log π_t on each A < 0 token (it points down), in units of w_t·|A_t|:
                # r_t where the loss still pushes the token, 0 where it stopped
                down = logp.grad[selected][negative] / (share[negative] * adv[negative].abs())
                if loss == "ppo-dualclip":
                    beyond |= past_dual
                zero = (logp.grad[selected] == 0).to(DTYPE)
                state = policy.state_log_probs(tokens)
                kl = ((state.exp() * (state - old_state)).sum(-1) * mask).sum() / mask.sum()
                q = torch.quantile(log_ratio, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=DTYPE))
            rec.add(loss=value.item(), kl=kl, clip_fraction=beyond.to(DTYPE).mean(), zero_grad_fraction=zero.mean(),
                    max_abs_log_ratio=log_ratio.abs().max(), log_ratio_q05=q[0], log_ratio_q25=q[1],
                    log_ratio_median=q[2], log_ratio_q75=q[3], log_ratio_q95=q[4],
                    dual_clip_fraction=past_dual.to(DTYPE).mean(),
                    max_log_ratio_negative=log_ratio[negative].max() if negative.any() else math.nan,
                    max_push_negative=down.max() if negative.any() else math.nan)
            ratios.append(log_ratio.numpy().copy())
            if epoch == ctx.steps:
                break
            for part in torch.randperm(batch, generator=order_gen).chunk(minibatches):
                optimizer.zero_grad()
                module(policy.token_log_probs(tokens[part]), old_logp[part], advantages[part], mask[part]).backward()
                optimizer.step()
            ctx.progress.update()
        runs[loss] = Run(loss, loss_params(loss, ctx.params), rec.arrays())
        extra["log_ratios"][loss] = ratios
    extra["tokens"] = int(selected.sum())
    return runs, np.arange(ctx.steps + 1), extra


LENGTHS = (4, 8, 16, 32)


def seen_margin(loss: str, h, mean_logp_gap, length, params):
    """The argument of the loss's sigmoid for a pair: βh (summed), βh/L (LN-DPO) or β·(ℓ̄_c − ℓ̄_r) − γ (SimPO)."""
    beta = params["beta"]
    if loss == "ln-dpo":
        return beta * h / length
    if loss == "ln-ipo":  # IPO's square sees h/L − 1/(2β); β·h/L keeps the axis of the others
        return beta * h / length
    if loss == "simpo":
        return beta * mean_logp_gap - params["gamma"]
    return beta * h


@scenario(
    name="length",
    title="Length: summed log-probs make DPO's margin grow with the response length",
    policy="tiny autoregressive policy without positions (a bigram model: 3 tokens, token 0 stops, the logits "
    "depend on the previous token only), started at a random reference",
    data=f"{len(LENGTHS)} pairs, one per length L = {', '.join(map(str, LENGTHS))}: y_c is token 1 repeated L − 1 times "
    "and the stop, y_r token 2 repeated L − 1 times and the stop; the same preference at every length",
    losses=("dpo", "ln-dpo", "simpo", "ln-ipo", "rpo"),
    default_losses=("dpo", "ln-dpo", "simpo"),
    params=(SimParam("beta", 1.0, 0.05, 5.0, "β of the preference losses", slider_step=0.05), GAMMA, ALPHA),
    series=tuple(f"{kind}_L{n}" for kind in ("seen", "margin", "push", "share") for n in LENGTHS),
    claim="A sequence log-prob is a sum over tokens, so the same per-token preference gives a pair of L tokens a "
    "margin h that grows like L: DPO's implicit reward favours long responses, at the start each pair pushes the "
    "shared logits in proportion to its length (a share L/ΣL), and the long pairs saturate first. LN-DPO divides "
    "each log-ratio by its length and SimPO uses mean log-probs: every pair starts with the same share, and the "
    "margin their sigmoid sees hardly grows with L (after 200 steps at the defaults, from L = 4 to L = 32: DPO's "
    "βh 3.5 → 46.9, LN-DPO's βh/L 1.7 → 2.9, SimPO's β·Δℓ̄ − γ 1.5 → 3.0; what is left comes from the first "
    "and the stop token, which weigh more in a short response).",
    source="Meng et al. 2024 (SimPO, arXiv:2405.14734), §2.1–2.2 and LN-DPO in §4; Park et al. 2024 (arXiv:2403.19159), §2",
    steps=200,
    lr=0.05,
    optimizer="sgd",
    figure=figures.length,
)
def length(ctx):
    import torch

    from .policies import DTYPE, TinyAutoregressive

    longest = max(LENGTHS)
    pairs = len(LENGTHS)
    lengths = torch.tensor(LENGTHS, dtype=DTYPE)
    positions = torch.arange(longest)
    mask = (positions.unsqueeze(0) < lengths.unsqueeze(1)).to(DTYPE)  # (pairs, T): the stop is a token of the response
    last = (positions.unsqueeze(0) == lengths.unsqueeze(1) - 1)
    chosen = torch.where(last, 0, 1) * mask.long()  # 1 1 … 1 0, then padding (0, masked out)
    rejected = torch.where(last, 0, 2) * mask.long()
    reference = TinyAutoregressive(3, longest, ctx.generator(), positional=False)

    both = torch.cat([chosen, rejected])  # one pass over the chosen and rejected responses
    both_mask = torch.cat([mask, mask])

    def forward(policy):
        """log π(·|state) at every position (2·pairs, T, 3) and the summed log-probs of y_c and y_r."""
        states = policy.state_log_probs(both)
        sums = (states.gather(-1, both.unsqueeze(-1)).squeeze(-1) * both_mask).sum(dim=1)
        return states, sums[:pairs], sums[pairs:]

    with torch.no_grad():
        ref_states, ref_chosen, ref_rejected = forward(reference)

    runs = {}
    for loss in ctx.losses:
        module = build_loss(loss, ctx.params)
        policy = TinyAutoregressive(3, longest, torch.Generator(), positional=False)
        with torch.no_grad():
            policy.table.copy_(reference.table)
        optimizer = ctx.optimizer(policy.parameters())
        rec = Recorder()
        for k in range(ctx.steps + 1):
            states, lc, lr = forward(policy)
            lc.retain_grad()
            lr.retain_grad()
            value = pair_loss(loss, module, lc, lr, ref_chosen, ref_rejected, chosen_lengths=lengths, rejected_lengths=lengths)
            optimizer.zero_grad()
            value.backward()
            with torch.no_grad():
                h = (lc - ref_chosen) - (lr - ref_rejected)
                kl = ((states.exp() * (states - ref_states)).sum(-1) * both_mask).sum() / both_mask.sum()
                push = -lc.grad  # −∂ℓ/∂log π of each chosen token of the pair (every token enters the sum once)
                total = lengths * push  # the pair's push summed over its tokens
                share = total / total.sum() if float(total.sum()) != 0.0 else total * math.nan
                gap = lc / lengths - lr / lengths
                rec.add(loss=value.item(), margin=h.mean(), logp_chosen=lc.mean(), logp_rejected=lr.mean(), kl=kl)
                for i, n in enumerate(LENGTHS):
                    rec.add(**{f"seen_L{n}": seen_margin(loss, float(h[i]), float(gap[i]), n, ctx.params),
                               f"margin_L{n}": h[i], f"push_L{n}": push[i], f"share_L{n}": share[i]})
            if k < ctx.steps:
                optimizer.step()
                ctx.progress.update()
        runs[loss] = Run(loss, loss_params(loss, ctx.params), rec.arrays())
    return runs, np.arange(ctx.steps + 1), {"lengths": LENGTHS}
