"""The closed-form facts each lesson needs, as sympy finds them, against the papers' formulas.

Each check is a function of a derivation; it passes on the real card and must fail on a card
whose loss was deliberately altered (the mutation tests at the bottom).
"""

import pytest
import sympy as sp

from lossviz.cards.base import Derivation
from lossviz.registry import derive, get
from lossviz.symbolic import Sigmoid, elementary

beta = sp.Symbol("beta", positive=True)
eps = sp.Symbol("label_smoothing", nonnegative=True)
h = sp.Symbol("h", real=True)


def same(a, b):
    """Equal as functions: sympy simplifies the difference to 0, or it vanishes (to 1e-12) at random
    points where every symbol lies in (0.05, 0.45), inside every parameter's range (ε, p, β, m, Δ ...)."""
    diff = elementary(sp.sympify(a)) - elementary(sp.sympify(b))
    if sp.simplify(diff) == 0:
        return True
    rng = __import__("random").Random(0)
    for _ in range(5):
        point = {s: sp.Float(rng.uniform(0.05, 0.45), 30) for s in diff.free_symbols}
        if abs(complex(diff.subs(point).evalf(30))) > 1e-12:
            return False
    return True


def check_basics(d):
    x = sp.Symbol("x", real=True)
    assert same(d.fact("gradient").value, Sigmoid(x) - 1)
    assert d.fact("identity").value == 0
    assert d.fact("gradient_limit_neg_inf").value == -1 and d.fact("gradient_limit_pos_inf").value == 0


def check_dpo(d):
    """DPO paper Eq. 7: ∇L = -β σ(-βh) (∇ log π_c - ∇ log π_r)."""
    assert same(d.fact("gradient_weight").value, beta * Sigmoid(-beta * h))
    assert d.fact("weight_wrong_order").value == beta and d.fact("weight_right_order").value == 0


def check_cdpo(d):
    """cDPO: the minimum at β h* = log((1 - ε)/ε); ε = 0 is DPO."""
    assert same(d.fact("beta_times_minimum").value, sp.log((1 - eps) / eps))
    assert same(d.fact("minimum").value, sp.log((1 - eps) / eps) / beta)
    assert d.fact("epsilon_zero_is_dpo").value == 0


def check_ipo(d):
    """IPO (Azar et al.) Eq. 17: (h - 1/(2β))², zero gradient at h = 1/(2β)."""
    assert same(d.fact("target").value, 1 / (2 * beta))


def check_kto(d):
    w = sp.Symbol("desirable_weight" if d.params["arm"] == "desirable" else "undesirable_weight", nonnegative=True)
    delta, z = sp.Symbol("Delta", real=True), sp.Symbol("z_ref", real=True)
    u = beta * (delta - z)
    sign = -1 if d.params["arm"] == "desirable" else 1  # desirable loss falls with Δ, undesirable rises
    assert same(d.fact("gradient_in_delta").value, sign * w * beta * Sigmoid(u) * Sigmoid(-u))
    assert same(d.fact("gradient_peak").value, z)
    assert same(d.fact("gradient_peak_value").value, sign * w * beta / 4)
    assert d.fact("gradient_limit_neg_inf").value == 0 and d.fact("gradient_limit_pos_inf").value == 0
    assert d.fact("kl_gradient").value == 0


def check_vanilla_kto(d):
    """The sides decouple only where both reference points are clamped to 0; above 0 the loss is σ(-βh)."""
    assert d.fact("mixed_partial").value == 0
    assert d.fact("mixed_partial_both_positive").value != 0
    assert d.fact("both_positive_minus_dpo_sigmoid").value == 0
    assert d.fact("dpo_mixed_partial").value != 0


def check_ppo_policy(d):
    """PPO paper's clipped objective: no gradient once r leaves [1-ε, 1+ε] on the side A favours."""
    assert d.fact("zero_gradient_ratios_A_positive").value == sp.Interval.open(sp.Rational(6, 5), sp.oo)
    assert d.fact("zero_gradient_ratios_A_negative").value == sp.Interval.open(0, sp.Rational(4, 5))
    A, r = sp.Symbol("A", real=True), sp.Symbol("r", positive=True)  # A is the signed advantage in both facts
    assert same(d.fact("gradient_inside_A_positive").value, -A * r)
    assert same(d.fact("gradient_inside_A_negative").value, -A * r)


def check_ppo_value(d):
    v_old, R = sp.Symbol("old_values", real=True), sp.Symbol("returns", real=True)
    e = sp.Rational(1, 5)
    assert d.fact("flat_zone_above").value == sp.Interval.open(v_old + e, 2 * R - v_old - e)
    assert d.fact("flat_zone_below").value == sp.Interval.open(2 * R - v_old + e, v_old - e)
    assert same(d.fact("unclipped_gradient").value, sp.Symbol("values", real=True) - R)


def check_pairwise(d):
    m = sp.Symbol("margin", real=True)
    gap = sp.Symbol("Delta", real=True)
    assert d.fact("shift").value == 0
    assert same(d.fact("gradient_in_gap").value, -Sigmoid(m - gap))
    assert same(d.fact("fade_point").value, m + sp.log(9))


def check_logexp(d):
    check_pairwise(d)
    assert d.fact("equals_pairwise").value == 0


def check_prm(d):
    p = sp.Symbol("p", nonnegative=True)
    dd = sp.Symbol("d", real=True)
    assert same(d.fact("optimum").value, sp.log(p / (1 - p)))
    assert same(d.fact("gradient_in_d").value, Sigmoid(dd) - p)


def check_gptlm(d):
    assert d.fact("gradient_minus_softmax_onehot").value == sp.zeros(3, 1)


def check_kd(d):
    assert d.fact("gradient_minus_student_minus_teacher").value == sp.zeros(3, 1)
    assert d.fact("kl_minus_ce_plus_entropy").value == 0
    assert d.fact("loss_minus_ce").value == 0


# --- preference and distillation types (issue 14): each against the formula as its paper states it ---------


def _numeric(expr, values):
    """A sympy expression at a point (a dict of symbol -> number), to 30 digits."""
    return complex(elementary(sp.sympify(expr)).subs(values).evalf(30))


def _sigma(x):
    return 1 / (1 + sp.exp(-x))


_rc, _rr = sp.Symbol("rho_c", real=True), sp.Symbol("rho_r", real=True)


def check_dpo_robust(d):
    """rDPO (Chowdhury et al. 2024): [(1-ε)ℓ(βh) - εℓ(-βh)]/(1-2ε) with ℓ(z) = log(1 + e^{-z}); unbiased under flips."""
    paper = ((1 - eps) * sp.log(1 + sp.exp(-beta * h)) - eps * sp.log(1 + sp.exp(beta * h))) / (1 - 2 * eps)
    assert same(d.fact("expected_over_flips").value, sp.log(1 + sp.exp(-beta * h)))  # the clean DPO loss
    assert same(d.fact("gradient_in_h").value, sp.diff(paper, h))
    assert same(d.fact("gradient_right_order").value, -eps * beta / (1 - 2 * eps))
    assert same(d.fact("gradient_wrong_order").value, -(1 - eps) * beta / (1 - 2 * eps))


def check_dpo_hinge(d):
    """SLiC / RSO: max(0, 1 - βh), subgradient -β below the hinge h = 1/β and 0 above."""
    assert d.fact("pushing_margins").value == sp.Interval.open(-sp.oo, 1 / beta)
    assert d.fact("zero_gradient_margins").value == sp.Interval(1 / beta, sp.oo)
    assert same(d.fact("hinge").value, 1 / beta)
    g = d.fact("gradient_in_h").value
    assert same(g.subs(h, 1 / (2 * beta)), -beta) and same(g.subs(h, 3 / beta), 0)


def check_dpo_exo(d):
    """EXO (pair): KL([p, 1-p] ‖ [1-ε, ε]) with p = σ(βh); zero at p = 1 - ε."""
    eps = sp.Symbol("label_smoothing", positive=True)  # EXO needs ε > 0
    p = _sigma(beta * h)
    paper = p * sp.log(p / (1 - eps)) + (1 - p) * sp.log((1 - p) / eps)
    assert same(d.fact("gradient_in_h").value, sp.diff(paper, h))
    assert same(d.fact("beta_times_minimum").value, sp.log((1 - eps) / eps))
    assert same(d.fact("minimum").value, sp.log((1 - eps) / eps) / beta)
    assert d.fact("minimum_value").value == 0


def check_dpo_nca(d):
    """NCA (pair): -log σ(βρ_c) - ½log σ(-βρ_c) - ½log σ(-βρ_r)."""
    paper = -sp.log(_sigma(beta * _rc)) - sp.log(_sigma(-beta * _rc)) / 2 - sp.log(_sigma(-beta * _rr)) / 2
    assert same(d.fact("chosen_gradient").value, sp.diff(paper, _rc))
    assert same(d.fact("rejected_gradient").value, sp.diff(paper, _rr))
    assert d.fact("mixed_partial").value == 0
    assert same(d.fact("chosen_optimum").value, sp.log(2) / beta)
    assert same(d.fact("split_minimum").value, 2 * sp.log(3) / beta)


def check_dpo_bco(d):
    """BCO (pair, δ = 0): -log σ(βρ_c) - log σ(-βρ_r)."""
    assert same(d.fact("chosen_gradient").value, -beta * _sigma(-beta * _rc))
    assert same(d.fact("rejected_gradient").value, beta * _sigma(beta * _rr))
    assert d.fact("mixed_partial").value == 0
    assert d.fact("chosen_limit_wrong").value == -beta and d.fact("rejected_limit_wrong").value == beta
    assert d.fact("split_gradient_wrong_order").value == -beta


def check_dpo_sppo(d):
    """SPPO with hard labels: the log-ratios regressed onto ±η/2 with η = 1/β."""
    assert same(d.fact("chosen_target").value, 1 / (2 * beta))
    assert same(d.fact("rejected_target").value, -1 / (2 * beta))
    assert d.fact("mixed_partial").value == 0
    assert same(d.fact("split_minimum").value, 1 / beta)


def check_dpo_apo_zero(d):
    """APO-zero (D'Oosterlinck et al. 2024): 1 - σ(βρ_c) + σ(βρ_r); chosen up, rejected down, independently."""
    bell = lambda x: _sigma(beta * x) * (1 - _sigma(beta * x))
    assert same(d.fact("chosen_gradient").value, -beta * bell(_rc))  # < 0: the chosen log-ratio is pushed up
    assert same(d.fact("rejected_gradient").value, beta * bell(_rr))  # > 0: the rejected one down
    assert d.fact("mixed_partial").value == 0  # each without regard to the other
    assert d.fact("chosen_peak").value == 0 and same(d.fact("chosen_peak_value").value, -beta / 4)


def check_dpo_apo_down(d):
    """APO-down: σ(βρ_c) + 1 - σ(β(ρ_c - ρ_r))."""
    paper = _sigma(beta * _rc) + 1 - _sigma(beta * (_rc - _rr))
    assert same(d.fact("chosen_gradient").value, sp.diff(paper, _rc))
    assert same(d.fact("rejected_gradient").value, sp.diff(paper, _rr))
    assert d.fact("chosen_gradient_rejected_at_reference").value == 0
    assert d.fact("mixed_partial").value != 0


def check_dpo_discopop(d):
    """DiscoPOP (Lu et al. 2024): (1 - σ(z/τ))·log(1 + e^{-z}) + σ(z/τ)·e^{-z}, z = βh; τ = 0.05 here.
    Its stationary points are found here by mpmath from the paper's formula; nothing assumes it decreases."""
    import mpmath

    tau = mpmath.mpf("0.05")
    loss = lambda z: (1 - 1 / (1 + mpmath.exp(-z / tau))) * mpmath.log(1 + mpmath.exp(-z)) + mpmath.exp(-z) / (1 + mpmath.exp(-z / tau))
    with mpmath.workdps(30):
        low = mpmath.findroot(lambda z: mpmath.diff(loss, z), -0.12)
        high = mpmath.findroot(lambda z: mpmath.diff(loss, z), 0.07)
        assert mpmath.diff(loss, low, 2) > 0 > mpmath.diff(loss, high, 2)  # a minimum, then a maximum
        assert loss(high) > loss(low)  # the loss rises with the margin between them
    assert abs(float(d.fact("local_minimum_u").value) - float(low)) < 1e-9 and abs(float(low) + 0.12) < 0.01
    assert abs(float(d.fact("local_maximum_u").value) - float(high)) < 1e-9 and abs(float(high) - 0.07) < 0.01
    assert same(d.fact("local_minimum").value, float(low) / beta)
    t = sp.Rational(1, 20)
    assert same(d.fact("slope_at_zero").value, (1 - sp.log(2)) / (4 * t) - sp.Rational(3, 4))
    assert same(d.fact("tau_of_flat_start").value, (1 - sp.log(2)) / 3)


def check_dpo_ln(d):
    """LN-DPO: -log σ(β(ρ_c/L_c - ρ_r/L_r))."""
    lc, lr = sp.Symbol("chosen_length", positive=True), sp.Symbol("rejected_length", positive=True)
    pc, pr, rc, rr = (sp.Symbol(n, real=True) for n in ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps"))
    m = (pc - rc) / lc - (pr - rr) / lr
    assert same(d.fact("chosen_gradient_times_length").value, -beta * _sigma(-beta * m))
    assert same(d.fact("gradient_ratio").value, -lr / lc)
    assert d.fact("length_scaling").value == 0
    assert same(d.fact("gradient_at_zero").value, -beta / 2)


def check_rpo(d):
    """RPO (Pang et al. 2024): DPO + α·NLL of the chosen response, per token."""
    alpha, lc = sp.Symbol("nll_loss_coef", nonnegative=True), sp.Symbol("chosen_length", positive=True)
    assert same(d.fact("chosen_gradient").value, -beta * _sigma(-beta * h) - alpha / lc)
    assert same(d.fact("rejected_gradient").value, beta * _sigma(-beta * h))
    assert same(d.fact("chosen_push_right_order").value, alpha / lc)
    assert same(d.fact("nll_term").value, -alpha * sp.Symbol("policy_chosen_logps", real=True) / lc)


def check_simpo(d):
    """SimPO Eq. 6: -log σ(β m - γ), m the per-token margin; the target reward margin γ sits at m = γ/β."""
    g, m = sp.Symbol("gamma", nonnegative=True), sp.Symbol("m", real=True)
    paper = -(1 - eps) * sp.log(_sigma(beta * m - g)) - eps * sp.log(_sigma(g - beta * m))
    assert same(d.fact("gradient_in_m").value, sp.diff(paper, m))
    assert same(d.fact("target_margin").value, g / beta)
    assert d.fact("shift").value == 0
    assert d.fact("chosen_gradient_times_length").value == 0


def check_cpo(d):
    """CPO Eq. 3-4: -log σ(β(π_c - π_r)) + α·NLL(y_c) (per token)."""
    alpha, lc = sp.Symbol("alpha", nonnegative=True), sp.Symbol("chosen_length", positive=True)
    paper = -(1 - eps) * sp.log(_sigma(beta * h)) - eps * sp.log(_sigma(-beta * h)) - alpha * h / lc  # with π_r = 0, π_c = h
    assert same(d.fact("chosen_gradient").value, sp.diff(paper, h))
    assert same(d.fact("margin_gradient_sum").value, -alpha / lc)
    assert same(d.fact("chosen_push_right_order").value, alpha / lc)


def check_orpo(d):
    """ORPO Eq. 6-11: NLL - λ log σ(log odds ratio); ∇ = δ(d)·[∇log P_c/(1 - P_c) - ∇log P_r/(1 - P_r)], δ = (1 + odds_c/odds_r)^{-1}."""
    lam = sp.Symbol("beta", positive=True)
    c, r = sp.Symbol("lbar_c", negative=True), sp.Symbol("lbar_r", negative=True)
    odds = lambda x: sp.exp(x) / (1 - sp.exp(x))
    delta = 1 / (1 + odds(c) / odds(r))
    want_c, want_r = -1 - lam * delta / (1 - sp.exp(c)), lam * delta / (1 - sp.exp(r))  # NLL slope -1, then the odds ratio
    import random

    rng = random.Random(0)
    for _ in range(5):  # mean log-probs are negative: compare at negative points
        point = {lam: rng.uniform(0.05, 2), c: -rng.uniform(0.01, 4), r: -rng.uniform(0.01, 4)}
        for fact, want in (("chosen_gradient", want_c), ("rejected_gradient", want_r),
                           ("odds_slope", 1 / (1 - sp.exp(c))), ("nll_term", -c)):
            got = _numeric(d.fact(fact).value, point)
            assert abs(got - _numeric(want, point)) < 1e-12 * max(1, abs(got)), fact
    assert d.fact("rejected_push_near_zero").value == sp.oo


def check_kto_apo_zero(d):
    """APO-zero, unpaired: desirable 1 - σ(βΔ), undesirable σ(βΔ); no reference point."""
    w = sp.Symbol("desirable_weight" if d.params["arm"] == "desirable" else "undesirable_weight", nonnegative=True)
    delta = sp.Symbol("Delta", real=True)
    sign = -1 if d.params["arm"] == "desirable" else 1
    assert same(d.fact("gradient_in_delta").value, sign * w * beta * _sigma(beta * delta) * (1 - _sigma(beta * delta)))
    assert d.fact("gradient_peak").value == 0
    assert same(d.fact("gradient_peak_value").value, sign * w * beta / 4)
    assert d.fact("gradient_limit_neg_inf").value == 0 and d.fact("gradient_limit_pos_inf").value == 0


def _gkd_reference(values, b, tau):
    """GKD (Agarwal et al. 2024, §3): the generalised JSD and its gradient in the student logits, in mpmath."""
    import mpmath

    z = [mpmath.mpf(values[f"logits_{k}"]) / tau for k in range(3)]
    t = [mpmath.mpf(values[f"teacher_logits_{k}"]) / tau for k in range(3)]
    s_norm, t_norm = mpmath.fsum(mpmath.exp(v) for v in z), mpmath.fsum(mpmath.exp(v) for v in t)
    ps, pt = [mpmath.exp(v) / s_norm for v in z], [mpmath.exp(v) / t_norm for v in t]
    kl = lambda p, q: mpmath.fsum(a * mpmath.log(a / c) for a, c in zip(p, q))
    if b == 0:
        return kl(pt, ps), [(ps[k] - pt[k]) / tau for k in range(3)]
    if b == 1:
        rev = kl(ps, pt)
        return rev, [ps[k] * (mpmath.log(ps[k] / pt[k]) - rev) / tau for k in range(3)]
    m = [b * a + (1 - b) * c for a, c in zip(pt, ps)]
    value = b * kl(pt, m) + (1 - b) * kl(ps, m)
    mean = mpmath.fsum(ps[j] * mpmath.log(ps[j] / m[j]) for j in range(3))
    return value, [(1 - b) / tau * ps[k] * (mpmath.log(ps[k] / m[k]) - mean) for k in range(3)]


def check_gkd(d):
    """β = 0 and β = 1 are the two KLs exactly; the gradient in the student logits is (1-β)/τ·p_S,k(log(p_S,k/m_k) - Σ_j p_S,j log(p_S,j/m_j))."""
    import mpmath
    import numpy as np

    assert d.fact("beta_zero").value == 0 and d.fact("beta_one").value == 0
    rng = np.random.default_rng(0)
    for b, tau in ((0.0, 1.0), (1.0, 0.7), (0.3, 2.0), (0.9, 1.0)):
        at = Derivation(d.card, d.card.resolve({"beta": b, "temperature": tau}))
        for _ in range(3):
            values = {n: float(v) for n, v in zip([f"logits_{k}" for k in range(3)] + [f"teacher_logits_{k}" for k in range(3)], rng.normal(size=6) * 2)}
            with mpmath.workdps(40):
                want, grad = _gkd_reference(values, b if b in (0.0, 1.0) else mpmath.mpf(str(b)), mpmath.mpf(str(tau)))  # derive reads 0.7 as 7/10
                assert abs(at.evaluate(values, "loss", "mpmath") - want) < mpmath.mpf("1e-30")
                for k in range(3):
                    assert abs(at.evaluate(values, f"logits_{k}", "mpmath") - grad[k]) < mpmath.mpf("1e-30"), (b, k)
    # the interior formula over β tends to the forward KL as β -> 0 (so β = 0 is that KL, not the formula's limit 0)
    small = Derivation(d.card, d.card.resolve({"beta": 1e-12, "temperature": 1.0}))
    values = {n: float(v) for n, v in zip([f"logits_{k}" for k in range(3)] + [f"teacher_logits_{k}" for k in range(3)], rng.normal(size=6))}
    with mpmath.workdps(40):
        forward, _ = _gkd_reference(values, 0, mpmath.mpf(1))
        assert abs(small.evaluate(values, "loss", "mpmath") / mpmath.mpf("1e-12") - forward) < 1e-9 * forward


PREFERENCE_CHECKS = {
    "dpo-robust": (check_dpo_robust, {}), "dpo-hinge": (check_dpo_hinge, {}), "dpo-exo": (check_dpo_exo, {}),
    "dpo-nca": (check_dpo_nca, {}), "dpo-bco": (check_dpo_bco, {}), "dpo-sppo": (check_dpo_sppo, {}),
    "dpo-apo-zero": (check_dpo_apo_zero, {}), "dpo-apo-down": (check_dpo_apo_down, {}),
    "dpo-discopop": (check_dpo_discopop, {"discopop_tau": 0.05}), "dpo-ln": (check_dpo_ln, {}), "rpo": (check_rpo, {}),
    "simpo": (check_simpo, {}), "cpo": (check_cpo, {}), "orpo": (check_orpo, {}), "kto-apo-zero": (check_kto_apo_zero, {}),
    "gkd": (check_gkd, {}),
}


# --- GRPO family and KL estimators (issue 13): each against the formula as its paper states it -------------

_MODE_WEIGHTS = {  # (1-token answer, 2-token answer) in one batch of B = 2, padded T = 2; then the worked example
    # GRPO §4.1.1: 1/G · 1/|o_i|; DAPO §3.3: 1/Σ|o_i|; verl's token sum: 1/B; Dr. GRPO §3.1 (TRL dr_grpo): 1/(B · L_max)
    "token-mean": ((sp.Rational(1, 3), sp.Rational(1, 3)), (sp.Rational(1, 110), sp.Rational(1, 110))),
    "seq-mean-token-mean": ((sp.Rational(1, 2 * 1), sp.Rational(1, 2 * 2)), (sp.Rational(1, 2 * 10), sp.Rational(1, 2 * 100))),
    "seq-mean-token-sum": ((sp.Rational(1, 2), sp.Rational(1, 2)), (sp.Rational(1, 2), sp.Rational(1, 2))),
    "seq-mean-token-sum-norm": ((sp.Rational(1, 2 * 2), sp.Rational(1, 2 * 2)), (sp.Rational(1, 2 * 100), sp.Rational(1, 2 * 100))),
}


def _check_weights(d, mode):
    (short, long_), (correct, wrong) = _MODE_WEIGHTS[mode]
    assert d.fact("weight_short").value == short and d.fact("weight_long").value == long_, mode
    assert d.fact("weight_ratio").value == short / long_
    assert d.fact("worked_example_weight_correct").value == correct and d.fact("worked_example_weight_wrong").value == wrong, mode
    assert d.fact("worked_example_ratio").value == correct / wrong  # 10 : 1 for GRPO's 1/|o_i|, 1 : 1 otherwise


def check_grpo(d):
    _check_weights(d, d.params["loss_agg_mode"])
    for mode in _MODE_WEIGHTS:
        _check_weights(derive("grpo", loss_agg_mode=mode, clip_eps=0.2), mode)


def check_dr_grpo(d):
    _check_weights(d, "seq-mean-token-sum-norm")
    scaled = derive("dr-grpo", loss_scale_factor=5.0)  # C = 5: every token 1/(B C) = 1/10
    assert scaled.fact("weight_short").value == scaled.fact("weight_long").value == sp.Rational(1, 10)


def check_dapo(d):
    """DAPO §3.1: clip-higher [1 - 0.2, 1 + 0.28]; §3.3: token-level mean."""
    assert d.fact("zero_gradient_ratios_A_positive").value == sp.Interval.open(sp.Rational(32, 25), sp.oo)
    assert d.fact("zero_gradient_ratios_A_negative").value == sp.Interval.open(0, sp.Rational(4, 5))
    assert same(d.fact("largest_favoured_probability").value, sp.Rational(32, 25) * sp.Symbol("p_old", positive=True))
    assert d.fact("worked_example_weight").value == sp.Rational(1, 110) and d.fact("worked_example_ratio").value == 1


def check_gspo(d):
    """GSPO §4: s = (Π_t r_t)^{1/|y|}; the clip on s; ∇ of every token -A s/|y| inside it."""
    r = [sp.Symbol(f"r_{t}", positive=True) for t in range(3)]
    assert same(d.fact("sequence_ratio").value, (r[0] * r[1] * r[2]) ** sp.Rational(1, 3))
    A, s = sp.Symbol("advantages", real=True), sp.Symbol("s", positive=True)
    assert same(d.fact("token_gradient_inside").value, -A * s / 3)
    assert d.fact("one_token_clip_high").value == sp.Rational(10004, 10000) ** 3  # paper ε_h = 4e-4
    wide = derive("gspo", clip_eps_low=0.2, clip_eps_high=0.2)  # one token alone: s = r^{1/3} leaves [0.8, 1.2] at r = 1.2³, 0.8³
    assert wide.fact("zero_gradient_one_token_ratios_A_positive").value == sp.Interval.open(sp.Rational(6, 5) ** 3, sp.oo)
    assert wide.fact("zero_gradient_one_token_ratios_A_negative").value == sp.Interval.open(0, sp.Rational(4, 5) ** 3)


def check_gmpo(d):
    """GMPO: token log-ratios clipped to [-ε_l, ε_h] (ε = 0.4) on the side A favours; -A·G/|o| per unclipped token."""
    A, G = sp.Symbol("advantages", real=True), sp.Symbol("G", positive=True)
    assert same(d.fact("token_gradient_inside").value, -A * G / 3)
    e = sp.Rational(2, 5)
    assert d.fact("zero_gradient_token_ratios_A_positive").value == sp.Interval.open(sp.exp(e), sp.oo)
    assert d.fact("zero_gradient_token_ratios_A_negative").value == sp.Interval.open(0, sp.exp(-e))


def check_gpg(d):
    """GPG: -A log π, gradient -A."""
    assert d.fact("gradient").value == -sp.Symbol("advantages", real=True)
    assert d.fact("old_policy_gradient").value == 0


def check_sapo(d):
    """SAPO: f(r) = (4/τ)σ(τ(r - 1)), f(1) = 2/τ, f'(1) = 1."""
    for arm, tau in (("A_positive", sp.Symbol("tau_pos", positive=True)), ("A_negative", sp.Symbol("tau_neg", positive=True))):
        r = sp.Symbol("r", positive=True)
        f = 4 / tau * _sigma(tau * (r - 1))
        assert same(d.fact(f"gate_at_one_{arm}").value, f.subs(r, 1)) and same(d.fact(f"gate_at_one_{arm}").value, 2 / tau)
        assert same(d.fact(f"gate_slope_at_one_{arm}").value, sp.diff(f, r).subs(r, 1)) and d.fact(f"gate_slope_at_one_{arm}").value == 1
    assert d.fact("gradient_at_one").value == -sp.Symbol("advantages", real=True)
    for arm, tau in (("A_positive", 1.0), ("A_negative", 1.05)):  # f'(r) = f'(1)/2 at τ(r - 1) = 2·atanh(1/√2)
        import math
        assert abs(float(derive("sapo", tau_pos=1.0, tau_neg=1.05).fact(f"half_gradient_ratio_{arm}").value)
                   - (1 + 2 * math.atanh(1 / math.sqrt(2)) / tau)) < 1e-12, arm


def check_cispo(d):
    """MiniMax-M1 §3.1 (verl's clip): ∇ = -sg(clip(r, ·, 1 + ε_h))·A, never 0 for A ≠ 0."""
    A, r = sp.Symbol("advantages", real=True), sp.Symbol("r", positive=True)
    g = d.fact("gradient").value
    for ratio in (sp.Rational(1, 10), 1, 3, 7):  # ε_h = 4: the cap r̂ ≤ 5
        assert sp.simplify(g.subs(r, ratio) - (-sp.Min(ratio, 5) * A)) == 0, ratio
    assert d.fact("zero_gradient_ratios_A_positive").value == sp.EmptySet
    assert d.fact("zero_gradient_ratios_A_negative").value == sp.EmptySet
    assert d.fact("gradient_above_cap").value == -5 * A
    low = derive("cispo", clip_eps_high=0.28, clip_eps_low=0.2)  # with a lower bound: r̂ ≥ 0.8
    assert sp.simplify(low.fact("gradient").value.subs(r, sp.Rational(1, 2)) + sp.Rational(4, 5) * A) == 0


def _tabular_kl_gradients():
    """∇_θ KL(π‖q) and ∇_θ KL(q‖π) for π = softmax(θ) over 3 actions, at π = p (θ = log p), summed over the actions."""
    theta = [sp.Symbol(f"t{a}", real=True) for a in range(3)]
    p0, p1, q0, q1 = (sp.Symbol(n, positive=True) for n in ("p_0", "p_1", "q_0", "q_1"))
    p, q = [p0, p1, 1 - p0 - p1], [q0, q1, 1 - q0 - q1]
    z = sum(sp.exp(t) for t in theta)
    pi = [sp.exp(t) / z for t in theta]
    reverse = sum(pi[a] * sp.log(pi[a] / q[a]) for a in range(3))
    forward = sum(q[a] * sp.log(q[a] / pi[a]) for a in range(3))
    at = {t: sp.log(pa) for t, pa in zip(theta, p)}
    grad = lambda f: [sp.diff(f, t).subs(at) for t in theta]
    return grad(reverse), grad(forward), sum(p[a] * sp.log(p[a] / q[a]) for a in range(3))


def check_kl_estimators(d):
    """Schulman (2020) values; Tang & Munos (2025) §3: as loss terms k1 → 0, k2 → ∇KL(π‖π_ref), k3 → ∇KL(π_ref‖π)."""
    reverse, forward, kl = _tabular_kl_gradients()
    dd = sp.Symbol("d", real=True)
    want = {"k1": ([0, 0, 0], dd), "k2": (reverse, dd ** 2 / 2), "k3": (forward, sp.exp(-dd) - 1 + dd)}
    for name, (grad, value) in want.items():
        at = derive("kl-estimators", kl_estimator=name)
        assert same(at.fact("estimator").value, value), name
        got = at.fact("expected_gradient").value
        for k in range(3):
            assert same(got[k], grad[k]), (name, k)
        if name != "k2":  # k1 and k3 are unbiased estimates of KL(π‖π_ref); k2 is not
            assert same(at.fact("expected_value").value, kl), name
    assert not same(derive("kl-estimators", kl_estimator="k2").fact("expected_value").value, kl)
    ab = derive("kl-estimators", kl_estimator="abs").fact("gradient_in_d").value
    assert ab.subs(dd, 2) == 1 and ab.subs(dd, -2) == -1


def check_kl_straight_through(d):
    """verl's k1+ / k3+: the value of k1 / k3 with the gradient of k2, so as loss terms ∇KL(π‖π_ref), unbiased values."""
    reverse, _, kl = _tabular_kl_gradients()
    dd = sp.Symbol("d", real=True)
    for name, value in (("k1+", dd), ("k3+", sp.exp(-dd) - 1 + dd)):
        at = derive("kl-estimators", kl_estimator=name)
        assert same(at.fact("estimator").value, value), name
        assert same(at.fact("gradient_in_d").value, dd), name  # k2' = d
        got = at.fact("expected_gradient").value
        for k in range(3):
            assert same(got[k], reverse[k]), (name, k)
        assert same(at.fact("expected_value").value, kl), name


def test_kl_straight_through_estimators():
    check_kl_straight_through(None)


def test_card_order_ranks_entries_inside_a_family():
    """Card.order (default 0) ranks a family's entries before the module name; a non-int order is refused."""
    from lossviz import registry
    from lossviz.cards.base import CardError

    names = registry.names()
    grpo = [n for n in names if registry.get(n).family == "grpo"]
    assert grpo == ["grpo", "dr-grpo", "dapo", "gspo", "cispo", "sapo", "gmpo", "gpg", "group-advantages"]
    assert names.index("gkd") > names.index("kd") > names.index("gptlm")
    bad = type("Bad", (type(registry.get("gpg")),), {"order": "1"})
    with pytest.raises(CardError, match=r"^gpg: order must be an int"):
        registry.check_card_class(bad)


def check_group_advantages(d):
    """GRPO §4.1.2 (R - mean)/std, Dr. GRPO §3.1 R - mean, RLOO: R_i - mean of the others = G/(G-1)(R_i - mean)."""
    rs = [sp.Symbol(f"rewards_{i}", real=True) for i in range(4)]
    e = sp.Symbol("eps", positive=True)
    mean = sum(rs) / 4
    std = sp.sqrt(sum((x - mean) ** 2 for x in rs) / 3)  # the sample std (torch.std)
    assert d.fact("rloo_over_dr_grpo").value == sp.Rational(4, 3)
    assert same(d.fact("grpo_over_dr_grpo").value, 1 / (std + e))
    assert d.fact("std_of_one_correct").value == sp.Rational(1, 2)
    want = {"grpo": sp.Rational(3, 4) / (sp.Rational(1, 2) + e), "dr_grpo": sp.Rational(3, 4), "rloo": 1}
    for method, value in want.items():
        at = derive("group-advantages", method=method)
        assert same(at.fact("one_correct_advantage").value, value), method
        assert at.fact("sum_of_advantages").value == 0, method


RL_CHECKS = {
    "grpo": (check_grpo, {"clip_eps": 0.2}), "dr-grpo": (check_dr_grpo, {}), "dapo": (check_dapo, {"clip_eps_low": 0.2, "clip_eps_high": 0.28}),
    "gspo": (check_gspo, {"clip_eps_low": 3e-4, "clip_eps_high": 4e-4}), "gmpo": (check_gmpo, {"clip_eps_low": 0.4, "clip_eps_high": 0.4}),
    "gpg": (check_gpg, {}), "sapo": (check_sapo, {}), "cispo": (check_cispo, {"clip_eps_high": 4.0}),
    "kl-estimators": (check_kl_estimators, {}), "group-advantages": (check_group_advantages, {}),
}


CHECKS = {
    "basics": (check_basics, {}), "gptlm": (check_gptlm, {}), "kd": (check_kd, {}), "dpo": (check_dpo, {}),
    "cdpo": (check_cdpo, {}), "ipo": (check_ipo, {}), "kto": (check_kto, {}), "vanilla-kto": (check_vanilla_kto, {}),
    "ppo-policy": (check_ppo_policy, {"clip_eps": 0.2}), "ppo-value": (check_ppo_value, {"clip_eps": 0.2}),
    "pairwise": (check_pairwise, {}), "logexp": (check_logexp, {}), "prm": (check_prm, {}),
}
CHECKS.update(PREFERENCE_CHECKS)
CHECKS.update(RL_CHECKS)


@pytest.mark.parametrize("name", list(CHECKS))
def test_fact_matches_known_formula(name):
    check, given = CHECKS[name]
    check(derive(name, **given))


def test_every_entry_has_a_fact_check():
    from lossviz.registry import names

    assert set(names()) == set(CHECKS)


def test_numeric_cdpo_minimum_and_undesirable_kto_arm():
    d = derive("cdpo", beta=0.1, label_smoothing=0.1)
    assert float(d.fact("minimum").value) == pytest.approx(10 * 2.1972245773362196, rel=1e-15)  # log(9)/0.1
    check_kto(derive("kto", arm="undesirable"))


# --- mutations: the checks must fail on a wrong loss ------------------------------------


def mutated(name, new_loss, **given):
    card = get(name)
    bad = type(f"Mutated{type(card).__name__}", (type(card),), {"loss": lambda self, p: new_loss(p)})()
    return Derivation(bad, bad.resolve(given, symbolic=True))


def _pair():
    from lossviz.cards.dpo import margin

    return margin()


MUTATIONS = {
    "dpo: β inside dropped": ("dpo", lambda p: -sp.log(Sigmoid(_pair()))),
    "cdpo: weights swapped": ("cdpo", lambda p: -p["label_smoothing"] * sp.log(Sigmoid(p["beta"] * _pair())) - (1 - p["label_smoothing"]) * sp.log(Sigmoid(-p["beta"] * _pair()))),
    "ipo: target 1/β": ("ipo", lambda p: (_pair() - 1 / p["beta"]) ** 2),
    "pairwise: margin added": ("pairwise", lambda p: -sp.log(Sigmoid(sp.Symbol("chosen_reward", real=True) - sp.Symbol("reject_reward", real=True) + p["margin"]))),
    "prm: targets swapped": ("prm", lambda p: -(1 - p["p"]) * sp.log(Sigmoid(sp.Symbol("logits_0", real=True) - sp.Symbol("logits_1", real=True))) - p["p"] * sp.log(Sigmoid(sp.Symbol("logits_1", real=True) - sp.Symbol("logits_0", real=True)))),
}


@pytest.mark.parametrize("label", list(MUTATIONS))
def test_fact_checks_fail_on_a_mutated_loss(label):
    name, loss = MUTATIONS[label]
    check, given = CHECKS[name]
    with pytest.raises(AssertionError):
        check(mutated(name, loss))


def test_ppo_check_fails_on_unclipped_surrogate():
    from lossviz.cards.ppo import PPOPolicy

    class NoClip(PPOPolicy):
        def surrogate(self, p, clamp):
            lp, old, adv = (sp.Symbol(n, real=True) for n in ("log_probs", "old_log_probs", "advantages"))
            return sp.Piecewise((-adv * sp.exp(lp - old), True))

    card = NoClip()
    with pytest.raises(AssertionError):
        check_ppo_policy(Derivation(card, card.resolve({"clip_eps": 0.2})))


def test_value_check_fails_with_min_instead_of_max():
    from lossviz.cards.ppo import PPOValue

    class MinValue(PPOValue):
        def facts(self, d):
            v_old, R = sp.Symbol("old_values", real=True), sp.Symbol("returns", real=True)
            # the zone a min() would produce: the clip side *away* from R
            facts = super().facts(d)
            facts[1] = type(facts[1])("flat_zone_above", "", sp.Interval.open(2 * R - v_old - sp.Rational(1, 5), v_old + sp.Rational(1, 5)))
            return facts

    card = MinValue()
    with pytest.raises(AssertionError):
        check_ppo_value(Derivation(card, card.resolve({"clip_eps": 0.2})))


# --- where a card meets production: parameters and defaults that verify at defaults alone would miss ---


def test_cdpo_minimum_at_epsilon_zero_is_at_infinity():
    """ε = 0 is DPO: ∂L/∂h = -βσ(-βh) < 0 everywhere, so there is no finite minimum (h* = ∞)."""
    d = derive("cdpo", beta=0.5, label_smoothing=0.0)
    assert d.fact("beta_times_minimum").value == sp.oo
    assert d.fact("minimum").value == sp.oo
    # just above 0 the minimum is finite again and far out: β h* = log((1 - ε)/ε)
    assert float(derive("cdpo", beta=0.5, label_smoothing=1e-6).fact("beta_times_minimum").value) == pytest.approx(
        __import__("math").log((1 - 1e-6) / 1e-6), rel=1e-12)


def test_kto_card_weights_reach_production():
    """The card's w_D and w_U end up in KTOLoss (desirable and undesirable each on its own side)."""
    import numpy as np

    card = get("kto")
    for arm in ("desirable", "undesirable"):
        p = card.resolve({"desirable_weight": 2.5, "undesirable_weight": 0.4, "arm": arm})
        ex = card.example(card.sample(np.random.default_rng(0), p), p)
        assert (ex.module.desirable_weight, ex.module.undesirable_weight) == (2.5, 0.4)
        d = Derivation(card, p)
        point = card.sample(np.random.default_rng(1), p)
        ex = card.example(point, p)
        assert ex.module(*ex.args)[0].item() == pytest.approx(d.evaluate(point), rel=1e-12)


def test_ppo_card_clamp_matches_production():
    """The card's log-ratio clamp is production's: float64's default (3/4 log finfo.max) and a given log_ratio_max."""
    import torch

    from lossviz.cards.ppo import FLOAT64_LOG_RATIO_MAX
    from lossviz.losses import log_ratio_limit

    assert FLOAT64_LOG_RATIO_MAX == log_ratio_limit(torch.float64)
    card = get("ppo-policy")
    for given, log_ratios in [({}, (500.0, 540.0, 600.0)), ({"log_ratio_max": 1.0}, (0.5, 1.5)), ({"log_ratio_max": 1.0, "dual_clip": 2.0}, (0.5, 1.5))]:
        p = card.resolve(given)
        d = Derivation(card, p)
        for x in log_ratios:
            for adv in (-0.5, 0.7):
                point = {"log_probs": x, "old_log_probs": 0.0, "advantages": adv}
                ex = card.example(point, p)
                ex.args[0].requires_grad_()
                loss = ex.module(*ex.args)
                (g,) = torch.autograd.grad(loss, [ex.args[0]])
                assert loss.item() == pytest.approx(float(d.evaluate(point)), rel=1e-12), (given, x, adv)
                assert g.item() == pytest.approx(float(d.evaluate(point, "log_probs")), rel=1e-12, abs=0), (given, x, adv)


def test_prm_card_hard_labels_default_to_the_first_reward_token():
    """--labels hard without --p means the label '+' (p = 1): the example's label is the first reward id."""
    import numpy as np

    from lossviz.cards.prm import REWARD_IDS

    card = get("prm")
    p = card.resolve({"labels": "hard"})
    assert p["p"] == 1.0
    point = card.sample(np.random.default_rng(0), p)
    ex = card.example(point, p)
    assert ex.args[2].tolist() == [[REWARD_IDS[0]]]
    d = Derivation(card, p)
    assert ex.module(*ex.args).item() == pytest.approx(float(d.evaluate(point)), rel=1e-12)
    diff = point["logits_0"] - point["logits_1"]
    assert float(d.evaluate(point)) == pytest.approx(__import__("math").log1p(__import__("math").exp(-diff)), rel=1e-12)
    assert card.resolve({"labels": "hard", "p": 0.0})["p"] == 0.0


# --- mutations of the preference and distillation types: each check must fail on a one-line change -------


def _pref_mutations():
    from lossviz.cards._pairwise import margin, rho_c, rho_r
    from lossviz.cards.dpo_discopop import discopop_loss
    from lossviz.cards.gkd import generalised_jsd, kl, log_softmax
    from lossviz.cards.sft import STUDENT, TEACHER
    from lossviz.symbolic import LogSigmoid, LogSumExp

    s = lambda n: sp.Symbol(n, real=True)

    def gkd_swapped(p):  # the mixture with the weights swapped: (1-β) p_T + β p_S
        b, tau = p["beta"], p["temperature"]
        if b == 0 or b == 1:  # the two ends stay the KLs; the interior is mutated
            return generalised_jsd(b, tau)
        ls, lt = log_softmax(STUDENT, tau), log_softmax(TEACHER, tau)
        lm = [LogSumExp(sp.log(1 - b) + t, sp.log(b) + x) for x, t in zip(ls, lt)]
        return b * kl(lt, lm) + (1 - b) * kl(ls, lm)

    return {
        "dpo-robust: no 1/(1-2ε)": ("dpo-robust", {}, lambda p: -(1 - p["label_smoothing"]) * LogSigmoid(p["beta"] * margin())
                                    + p["label_smoothing"] * LogSigmoid(-p["beta"] * margin())),
        "dpo-hinge: hinge at 2": ("dpo-hinge", {}, lambda p: sp.Piecewise((2 - p["beta"] * margin(), p["beta"] * margin() < 2), (0, True))),
        "dpo-exo: ε and 1-ε swapped": ("dpo-exo", {}, lambda p: Sigmoid(p["beta"] * margin()) * (LogSigmoid(p["beta"] * margin()) - sp.log(p["label_smoothing"]))
                                       + Sigmoid(-p["beta"] * margin()) * (LogSigmoid(-p["beta"] * margin()) - sp.log(1 - p["label_smoothing"]))),
        "dpo-nca: ½ dropped on the chosen": ("dpo-nca", {}, lambda p: -LogSigmoid(p["beta"] * rho_c()) - LogSigmoid(-p["beta"] * rho_c())
                                             - LogSigmoid(-p["beta"] * rho_r()) / 2),
        "dpo-bco: rejected classified as good": ("dpo-bco", {}, lambda p: -LogSigmoid(p["beta"] * rho_c()) - LogSigmoid(p["beta"] * rho_r())),
        "dpo-sppo: targets ±1/β": ("dpo-sppo", {}, lambda p: (rho_c() - 1 / p["beta"]) ** 2 + (rho_r() + 1 / p["beta"]) ** 2),
        "dpo-apo-zero: chosen term on the margin": ("dpo-apo-zero", {}, lambda p: 1 - Sigmoid(p["beta"] * margin()) + Sigmoid(p["beta"] * rho_r())),
        "dpo-apo-down: chosen term flipped": ("dpo-apo-down", {}, lambda p: Sigmoid(-p["beta"] * rho_c()) + 1 - Sigmoid(p["beta"] * margin())),
        "dpo-discopop: τ doubled in the modulation": ("dpo-discopop", {"discopop_tau": 0.05},
                                                      lambda p: discopop_loss(p["beta"] * margin(), 2 * p["discopop_tau"])),
        "dpo-ln: chosen divided by L_r": ("dpo-ln", {}, lambda p: -LogSigmoid(p["beta"] * (rho_c() - rho_r()) / p["rejected_length"])),
        "rpo: summed NLL": ("rpo", {}, lambda p: -LogSigmoid(p["beta"] * margin()) - p["nll_loss_coef"] * s("policy_chosen_logps")),
        "simpo: γ/β inside": ("simpo", {}, lambda p: -LogSigmoid(p["beta"] * (s("policy_chosen_logps") / p["chosen_length"]
                                                                             - s("policy_rejected_logps") / p["rejected_length"]) - p["gamma"] / p["beta"])),
        "cpo: NLL on the rejected": ("cpo", {}, lambda p: -LogSigmoid(p["beta"] * (s("policy_chosen_logps") - s("policy_rejected_logps")))
                                     - p["alpha"] * s("policy_rejected_logps") / p["chosen_length"]),
        "kto-apo-zero: desirable pushed down": ("kto-apo-zero", {}, lambda p: p["desirable_weight"] * Sigmoid(p["beta"] * (s("policy_chosen_logps") - s("reference_chosen_logps")))),
        "orpo: log-probs in place of log odds": ("orpo", {}, lambda p: -s("policy_chosen_logps") / p["chosen_length"] - p["beta"] * LogSigmoid(
            s("policy_chosen_logps") / p["chosen_length"] - s("policy_rejected_logps") / p["rejected_length"])),
        "gkd: mixture weights swapped": ("gkd", {}, gkd_swapped),
    }


@pytest.mark.parametrize("label", list(_pref_mutations()))
def test_preference_fact_checks_fail_on_a_mutated_loss(label):
    name, given, loss = _pref_mutations()[label]
    check, _ = CHECKS[name]
    with pytest.raises(AssertionError):
        check(mutated(name, loss, **given))

