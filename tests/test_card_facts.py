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


CHECKS = {
    "basics": (check_basics, {}), "gptlm": (check_gptlm, {}), "kd": (check_kd, {}), "dpo": (check_dpo, {}),
    "cdpo": (check_cdpo, {}), "ipo": (check_ipo, {}), "kto": (check_kto, {}), "vanilla-kto": (check_vanilla_kto, {}),
    "ppo-policy": (check_ppo_policy, {"clip_eps": 0.2}), "ppo-value": (check_ppo_value, {"clip_eps": 0.2}),
    "pairwise": (check_pairwise, {}), "logexp": (check_logexp, {}), "prm": (check_prm, {}),
}


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
