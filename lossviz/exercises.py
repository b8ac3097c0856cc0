"""The exercises of notebooks 00-06, with their solutions (kept out of the notebook cells).

Importing this module registers every exercise with :func:`lossviz.teaching.exercise`.
Expected values are lazy and, where the lesson has one, come from the card's sympy
derivation (a fact, a solved equation, the derived gradient evaluated at a point); the
others are computed here from their definition (a token count, a float32 limit).
"""

from __future__ import annotations

import math

from .teaching import exercise


def _derive(name, **params):
    from .registry import derive

    return derive(name, **params)


def _zeros(**values):
    """A DPO-style pair with every log-prob 0 except those given."""
    pair = dict.fromkeys(("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps"), 0.0)
    pair.update(values)
    return pair


# --- 00 basics -------------------------------------------------------------------------------

def _basics_fifth():
    import sympy as sp

    from .symbolic import elementary

    d = _derive("basics")
    x = d.symbols["x"]
    roots = sp.solve(sp.Eq(-elementary(d.gradient["x"]), sp.Rational(1, 5)), x)
    (root,) = roots
    return root


exercise("basics-1", _basics_fifth, what="the x where the push -∂ℓ/∂x is 1/5",
         hint="the push is σ(-x); solve σ(-x) = 1/5, or find the root of push(x) - 0.2 with bisect(f, -10, 10)")
exercise("basics-2", lambda: _derive("basics").evaluate({"x": -1.5}, "loss"), what="the loss ℓ at x = -1.5",
         hint="ℓ(x) = log(1 + e^{-x}); or d.evaluate({\"x\": -1.5}, \"loss\")")
exercise("basics-3", lambda: -_derive("basics").evaluate({"x": 3.0}, "x"), what="the push at x = 3",
         hint="push(3.0), or σ(-3) = 1/(1 + e^3) by hand")

# --- 01 SFT and distillation -------------------------------------------------------------------

_STUDENT, _TEACHER = (0.5, -1.0, 2.0), (1.0, 0.0, -1.0)


def _kl():
    """KL(q‖p) = CE(q, p) - H(q): the KD card's loss (the cross-entropy) minus the teacher entropy."""
    d = _derive("kd", temperature=1.0)  # τ = 1: the plain cross-entropy of notebook 01
    values = {f"logits_{k}": v for k, v in enumerate(_STUDENT)} | {f"teacher_logits_{k}": v for k, v in enumerate(_TEACHER)}
    z = sum(math.exp(t) for t in _TEACHER)
    q = [math.exp(t) / z for t in _TEACHER]
    entropy = -sum(qk * math.log(qk) for qk in q)
    return float(d.evaluate(values, "loss")) - entropy


exercise("sft-1", lambda: _derive("gptlm", label="0").evaluate({"logits_0": 2.0, "logits_1": 0.0, "logits_2": -1.0}, "logits_0"),
         what="∂L/∂z₀ for z = (2, 0, -1) and target 0",
         hint="softmax(z)₀ - 1: the gradient is softmax minus one-hot")
exercise("sft-2", _kl, what="KL(q‖p) for the student and teacher logits given",
         hint="KDLoss is the cross-entropy CE(q, p); subtract the teacher entropy H(q) = -Σ q log q")

# --- 02 DPO, cDPO, IPO ---------------------------------------------------------------------------


def _cdpo_half_loss():
    """The cDPO loss at ε = 1/2 (outside the production range) from the card, at β = 1 and h = 2."""
    import sympy as sp

    d = _derive("cdpo", beta=1.0)
    eps = d.card.param("label_smoothing").symbol
    loss = d.loss.subs(eps, sp.Rational(1, 2)).subs({d.symbols["policy_chosen_logps"]: 2, **{d.symbols[k]: 0 for k in
                                                    ("policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps")}})
    from .symbolic import elementary

    return sp.N(elementary(loss), 30)


exercise("dpo-1", lambda: -_derive("dpo", beta=0.5).evaluate(_zeros(policy_chosen_logps=2.0), "policy_chosen_logps"),
         what="the push on π^c at h = 2 for β = 0.5", hint="-∂L/∂π^c = β σ(-βh); here βh = 1")
exercise("dpo-2", lambda: _derive("cdpo", beta=0.3, label_smoothing=0.2).fact("minimum").value,
         what="the cDPO minimum h* for β = 0.3, ε = 0.2",
         hint="find where the cDPO gradient crosses 0 (bisect over h in [-100, 100]), or solve βh* = log((1-ε)/ε)")
exercise("dpo-3", _cdpo_half_loss, what="the ε = 0.5 loss at βh = 2",
         hint="-(1/2)·log σ(2) - (1/2)·log σ(-2); it equals log(2·cosh(βh/2))")
exercise("dpo-4", lambda: _derive("ipo", beta=0.4).fact("target").value, what="the IPO target margin for β = 0.4",
         hint="the IPO gradient 2(h - 1/(2β)) vanishes at the target")

# --- 03 KTO ----------------------------------------------------------------------------------------


def _kto_peak():
    import sympy as sp

    peak = _derive("kto", symbolic=False, beta=0.3).fact("gradient_peak").value
    (z,) = [s for s in peak.free_symbols if s.name == "z_ref"]  # the reference point
    return peak.subs(z, 1)


exercise("kto-1", _kto_peak, what="the Δ where the desirable arm's push is largest (β = 0.3, z = 1)",
         hint="the push -∂ℓ/∂Δ is bell-shaped; find where its slope is 0, or scan Δ and take the argmax", tolerance=1e-3)
exercise("kto-2", lambda: -_derive("kto", symbolic=False, beta=0.3, desirable_weight=1.5).fact("gradient_peak_value").value,
         what="the largest push of the desirable arm (β = 0.3, w_D = 1.5)",
         hint="evaluate the push at its peak; σ(u)σ(-u) is largest at u = 0", tolerance=1e-6)
exercise("kto-3", lambda: _derive("vanilla-kto", beta=0.5).evaluate(_zeros(policy_chosen_logps=2.0, policy_rejected_logps=-1.0), "loss"),
         what="the vanilla KTO loss for Δ_c = 2, Δ_r = -1, β = 0.5",
         hint="z_c = max(0, mean Δ_c) = 2 but z_r = max(0, mean Δ_r) = 0; average 1 - σ(β(Δ_c - z_r)) and 1 - σ(β(z_c - Δ_r))")

# --- 04 PPO ----------------------------------------------------------------------------------------


def _ratio_edge(**params):
    return _derive("ppo-policy", **params).fact("zero_gradient_ratios_A_positive").value.inf


def _dual_clip_edge():
    import sympy as sp

    zone = _derive("ppo-policy", clip_eps=0.2, dual_clip=2.5).fact("zero_gradient_ratios_A_negative").value
    upper = [part for part in (zone.args if isinstance(zone, sp.Union) else (zone,)) if part.sup == sp.oo]
    return upper[0].inf


#: per-token advantages of the token-level exercise (rows: sequences; None: masked out)
TOKEN_MEAN_ADVANTAGES = ((2.0, None, None, None), (-1.0, 0.5, 1.0, 0.5))


def _token_level_mean():
    """At r = 1 every unclipped token's loss is -A: the token-level mean is the mean over unmasked tokens."""
    losses = [-a for row in TOKEN_MEAN_ADVANTAGES for a in row if a is not None]
    return sum(losses) / len(losses)


exercise("ppo-1", lambda: _ratio_edge(clip_eps=0.3), what="the ratio from which the A > 0 gradient is zero (ε = 0.3)",
         hint="scan the card's gradient over r for A = +1 and find where it becomes 0", tolerance=1e-3)
exercise("ppo-2", lambda: _ratio_edge(clip_eps_low=0.2, clip_eps_high=0.28),
         what="the same edge with clip-higher (ε_low = 0.2, ε_high = 0.28)",
         hint="with asymmetric clipping the upper edge is 1 + ε_high", tolerance=1e-3)
exercise("ppo-3", _dual_clip_edge, what="the ratio above which dual clip (c = 2.5) stops the A < 0 gradient",
         hint="for A < 0 the loss is capped at -cA; scan r for A = -1 and find where the gradient becomes 0 again", tolerance=1e-3)
exercise("ppo-4", _token_level_mean, what="the token-level mean loss of the batch at r = 1",
         hint="at r = 1 each unmasked token's loss is -A; average over all unmasked tokens of the batch")
def _flat_zone_end():
    d = _derive("ppo-value", clip_eps=0.3)
    return d.fact("flat_zone_above").value.subs({d.symbols["old_values"]: 0, d.symbols["returns"]: 1}).sup


exercise("ppo-5", _flat_zone_end,
         what="where the value loss's flat zone ends (v_old = 0, R = 1, ε = 0.3)",
         hint="scan v above v_old + ε and find where the gradient becomes non-zero again", tolerance=1e-3)


# --- 05 reward models -------------------------------------------------------------------------------


def _float16_overflow_gap():
    import numpy as np

    return -math.log(float(np.finfo(np.float16).max))


exercise("rm-1", lambda: _derive("pairwise", margin=1.5).fact("fade_point").value,
         what="the gap where the push has fallen to 1/10 (m = 1.5)",
         hint="the push on r_c is σ(m - Δ); solve σ(m - Δ) = 0.1, or bisect push(Δ) - 0.1", tolerance=1e-6)
exercise("rm-2", _float16_overflow_gap, what="the gap Δ below which the naive float16 log(1 + e^{-Δ}) is inf",
         hint="e^{-Δ} overflows once -Δ exceeds log of the largest float16 (np.finfo(np.float16).max)", tolerance=0.01)

# --- 06 PRM ---------------------------------------------------------------------------------------------


#: new lines for the exercises of notebook 06 (the tokenizers are trained on MATH_SHEPHERD_STYLE, not on these);
#: the second separates its steps by a space instead of a newline
NEW_LINES = (
    "Ali has 6 coins and finds 4. How many coins does he have? Step 1: 6 + 4 = 10 ки\nStep 2: He has 10 coins ки\n"
    "Step 3: The answer is 10 ки",
    "A bag holds 9 balls. How many balls are in 3 bags? Step 1: 9 * 3 = 27 ки Step 2: The answer is 27 ки",
)


def _steps_kept(special_tokens=()):
    from .teaching import train_bpe

    tokenizer = train_bpe(special_tokens=special_tokens)
    (placeholder,) = tokenizer.encode("ки").ids  # the placeholder encoded alone, as OpenRLHF's PRM dataset finds its id
    return sum(tokenizer.encode(text).ids.count(placeholder) for text in NEW_LINES)


def _steps_in_data():
    return sum(text.count("ки") for text in NEW_LINES)


exercise("prm-1", lambda: _derive("prm", p=0.9).fact("optimum").value, what="the soft-label optimum d* for p = 0.9",
         hint="the gradient σ(d) - p vanishes where σ(d) = p")
exercise("prm-2", _steps_in_data, what="the number of steps in NEW_LINES", hint="count the placeholders in the texts", tolerance=0)
exercise("prm-3", _steps_kept, what="the steps PRMLoss would train on with the unprotected tokenizer",
         hint="the placeholder's id is the id of \"ки\" encoded alone; count it in the encodings of the lines", tolerance=0)
exercise("prm-4", lambda: _steps_kept(special_tokens=["ки"]), what="the steps kept with the placeholder protected",
         hint="count the placeholder's id in the protected tokenizer's encodings", tolerance=0)

# --- 10 the preference zoo ------------------------------------------------------------------------------


def _zoo_simulated(loss, **params):
    from .dynamics.engine import simulate

    return float(simulate("deterministic-preferences", losses=loss, progress=False, **params)[loss]["margin"][-1])


def _zoo_displacement_alpha(beta: float, ches: float) -> float:
    """RPO's first step at the uniform reference raises log π(y_c) iff β/2 + α > (β/2)(1 + ches)."""
    return beta * ches / 2


exercise("zoo-1", lambda: 1 / (2 * 1.4), what="SPPO's chosen log-ratio ρ_c at β = 1.4",
         hint="SPPO regresses ρ_c on 1/(2β) and ρ_r on −1/(2β); a tabular policy can reach it while π(y_c) ≤ 1", tolerance=1e-4)
exercise("zoo-2", lambda: math.log(2) / 3, what="NCA's resting ρ_c at β = 3",
         hint="the slope of −log σ(x) − ½ log σ(−x) is −σ(−x) + ½σ(x); it is 0 where σ(x) = 2/3, x = βρ_c", tolerance=1e-4)
exercise("zoo-3", lambda: _zoo_simulated("discopop", beta=0.25), what="DiscoPOP's resting margin h at β = 0.25",
         hint="read z* = βh from the β = 0.5 run (h times 0.5), then h = z*/β at β = 0.25", tolerance=2e-3)
exercise("zoo-4", lambda: 0.5 * 0.2 / (1 - 2 * 0.2), what="the floor of rDPO's push at β = 0.5, ε = 0.2",
         hint="the push is β[(1−ε)σ(−βh) + εσ(βh)]/(1−2ε); let βh → ∞", tolerance=1e-6)
exercise("zoo-5", lambda: math.log(3) / 0.5, what="DPO's final margin with a quarter of the labels flipped (β = 0.5)",
         hint="the batch mean is ¾·(−log σ(βh)) + ¼·(−log σ(−βh)); its slope vanishes where σ(βh) = ¾", tolerance=1e-4)
exercise("zoo-6", lambda: _zoo_displacement_alpha(0.5, 1.3), what="the smallest α for which RPO's first step raises log π(y_c)",
         hint="Δ log π(y_c) ∝ w·‖φ_c‖² − w_r·φ_r·φ_c = (β/2 + α) − (β/2)(1 + CHES) at the uniform start", tolerance=1e-6)
exercise("zoo-7", lambda: 20 / (5 + 10 + 20), what="the 20-token pair's share of DPO's first push",
         hint="at h = 0 every chosen token of every pair gets the same push β σ(0)/N; a pair of L tokens gets L of them", tolerance=1e-6)

# --- 11 distillation -----------------------------------------------------------------------------------------

_P, _Q = (0.7, 0.2, 0.1), (0.4, 0.4, 0.2)  # teacher p, student q


def _kl(a, b) -> float:
    return sum(x * math.log(x / y) for x, y in zip(a, b))


def _jsd(beta: float) -> float:
    m = [beta * p + (1 - beta) * q for p, q in zip(_P, _Q)]
    return beta * _kl(_P, m) + (1 - beta) * _kl(_Q, m)


def _other_mode_reverse_kl() -> float:
    """The reverse KL of notebook 11's teacher for a student equal to its first mode, from the production GKDLoss."""
    import torch

    from .losses import GKDLoss

    v = torch.arange(21, dtype=torch.float64)
    teacher = torch.logaddexp(-(v - 5) ** 2 / 2, -(v - 15) ** 2 / 2 + math.log(0.8)).reshape(1, 1, -1)
    student = (-(v - 5) ** 2 / 2).reshape(1, 1, -1)
    return float(GKDLoss(beta=1.0)(student, teacher, torch.zeros(1, 1, dtype=torch.long)))


exercise("gkd-1", _other_mode_reverse_kl, what="the reverse KL of a student on the mode at token 5",
         hint="on one mode the student copies that mode's component q; the teacher there is q/(1 + 0.8) (the other mode is negligible)",
         tolerance=1e-4)
exercise("gkd-2", lambda: _kl(_P, _Q), what="the forward KL(p‖q)", hint="Σ p log(p/q) over the three tokens", tolerance=1e-6)
exercise("gkd-3", lambda: _kl(_Q, _P), what="the reverse KL(q‖p)", hint="Σ q log(q/p) over the three tokens", tolerance=1e-6)
exercise("gkd-4", lambda: _jsd(0.5), what="the JSD at β = 0.5",
         hint="m = (p + q)/2; ½KL(p‖m) + ½KL(q‖m)", tolerance=1e-6)
def _temperature_ratio(tau: float = 3.0) -> float:
    """|∂KDLoss/∂z| / |∂GKDLoss(β=0)/∂z| at temperature τ on notebook 11's input, from the production classes."""
    import torch

    from .losses import GKDLoss, KDLoss

    z = torch.tensor([[[2.0, 1.0, 0.0, -1.0]]], dtype=torch.float64)
    t = torch.tensor([[[0.0, 2.0, 1.0, -2.0]]], dtype=torch.float64)
    sizes = []
    for module in (KDLoss(temperature=tau), GKDLoss(beta=0.0, temperature=tau)):
        zz = z.clone().requires_grad_(True)
        module(zz, t, torch.zeros(1, 1, dtype=torch.long)).backward()
        sizes.append(float(zz.grad.norm()))
    return sizes[0] / sizes[1]


exercise("gkd-5", _temperature_ratio, what="KDLoss's gradient over GKDLoss's at τ = 3",
         hint="both gradients are proportional to p_S^τ − p_T^τ; KDLoss carries the extra factor τ²", tolerance=1e-6)

# --- 08 GRPO family (notebooks/grpo_family.py) -------------------------------------------------------


def _sapo_push(ratio: float, tau: float = 1.0) -> float:
    """−∂ℓ/∂log π of SAPO's token loss −f(r)·A at A = 1: r·f′(r), f(r) = (4/τ)·σ(τ(r − 1)), so r·4·σ(x)σ(−x), x = τ(r − 1)."""
    x = tau * (ratio - 1.0)
    s = 1.0 / (1.0 + math.exp(-x))
    return ratio * 4.0 * s * (1.0 - s)


def _grpo_advantage(rewards, i: int, eps: float = 1e-6) -> float:
    """(R_i − mean)/(sample std + ε) of one group."""
    mean = sum(rewards) / len(rewards)
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / (len(rewards) - 1))
    return (rewards[i] - mean) / (std + eps)


def _length_bias_push(method: str, mode: str) -> float:
    from .dynamics.engine import simulate

    return simulate("length-bias", losses=f"{method}/{mode}", steps=1, progress=False).extra["exact_table"][(method, mode)]


exercise("grpo-1", lambda: (1 / (2 * 20)) / (1 / (2 * 60)), tolerance=1e-9,
         what="the per-token weight of the correct answer over that of the wrong one under seq-mean-token-mean",
         hint="each token of answer i weighs 1/(B·L_i) with B = 2; divide the two weights")
exercise("grpo-2", lambda: 1 / (2 * 60), tolerance=1e-6,
         what="the per-token weight under seq-mean-token-sum-norm (padded length 60)",
         hint="Dr. GRPO divides every token by B·T, the same constant for every answer: B = 2, T = 60")
exercise("grpo-3", lambda: _grpo_advantage((1.0, 0.0, 0.0, 0.0, 1.0, 0.0), 0), tolerance=1e-6,
         what="the GRPO advantage of the first answer of the group (1, 0, 0, 0, 1, 0)",
         hint="(R − mean)/(std + 1e-6) with the sample std (divisor G − 1), or group_advantages(rewards, 6)")
exercise("grpo-4", lambda: _sapo_push(1.5), tolerance=1e-6,
         what="the push −∂ℓ/∂log π of SAPO (τ = 1) on a token with A = +1 at r = 1.5",
         hint="the loss is −f(r)·A with f(r) = 4σ(r − 1); ∂r/∂log π = r, so the push is r·f′(r) = r·4σ(x)σ(−x), x = r − 1")
exercise("grpo-5", lambda: _length_bias_push("dr_grpo", "seq-mean-token-mean"), tolerance=1e-6,
         what="the exact expected push on the wrong answers' length with Dr. GRPO advantages under seq-mean-token-mean",
         hint="simulate(\"length-bias\", ...).extra[\"exact_table\"] holds it for every (estimator, mode) at the start")

# --- 09 KL estimators (notebooks/kl_estimators.py) ---------------------------------------------------


def _kl_grad_theta0(kind: str) -> float:
    """∂/∂θ_0 of KL for π = (0.6, 0.4), π_ref = (0.8, 0.2): reverse π_0·(log(π_0/q_0) − KL(π‖q)), forward π_0 − q_0."""
    p, q = (0.6, 0.4), (0.8, 0.2)
    if kind == "forward":
        return p[0] - q[0]
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    return p[0] * (math.log(p[0] / q[0]) - kl)


def _forward_optimum(beta: float, q_star: float = 0.1) -> float:
    """π(y*) of argmax π(y*) − β·KL(π_ref‖π) for a reward 1 on y*: π(y*) = βq*/(μ − 1), μ² − (1 + β)μ + β(1 − q*) = 0."""
    mu = ((1 + beta) + math.sqrt((1 + beta) ** 2 - 4 * beta * (1 - q_star))) / 2
    return beta * q_star / (mu - 1)


exercise("kl-1", lambda: math.exp(1.0) - 1.0 - 1.0, tolerance=1e-6, what="the value of k3 at d = −1",
         hint="k3 = e^{−d} − 1 + d")
exercise("kl-2", lambda: _kl_grad_theta0("forward"), tolerance=1e-6,
         what="the expected gradient of a k3 loss term on θ_0 for π = (0.6, 0.4), π_ref = (0.8, 0.2)",
         hint="k3's expected gradient is ∇KL(π_ref‖π), and ∂KL(π_ref‖π)/∂θ_j = π_j − π_ref(j) for a softmax")
exercise("kl-3", lambda: _kl_grad_theta0("reverse"), tolerance=1e-6,
         what="the expected gradient of a k2 loss term on θ_0 for the same π and π_ref",
         hint="k2's expected gradient is ∇KL(π‖π_ref): ∂/∂θ_j = π_j·(log(π_j/π_ref(j)) − KL(π‖π_ref))")
exercise("kl-4", 0.0, tolerance=1e-9, what="the expected gradient of a k1 loss term on any logit",
         hint="E_π[∇ log π] = Σ_y ∇π(y) = ∇ Σ_y π(y) = ∇1")
exercise("kl-5", lambda: 0.1 * math.e / (0.1 * math.e + 0.9), tolerance=1e-6,
         what="π(y*) where a k2 loss term stops at β = 1",
         hint="k2 is the reverse KL: the optimum is π_ref·e^{r/β}/Z with π_ref(y*) = 0.1 and r = 1 on y* only")
exercise("kl-6", lambda: _forward_optimum(1.0), tolerance=1e-6,
         what="π(y*) where a k3 loss term stops at β = 1",
         hint="stationarity of π(y*) − β·KL(π_ref‖π): r_y + β·π_ref(y)/π(y) = μ; solve Σ_y π(y) = 1 for μ")
