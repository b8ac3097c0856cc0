"""Every card, parametrised over the registry: gradient == sympy.diff, == mpmath finite differences,
== torch autograd of the production class; stable lowerings == the 50-digit mpmath oracle."""

import itertools

import mpmath
import numpy as np
import pytest
import sympy as sp
import torch

from lossviz.cards.base import Derivation
from lossviz.registry import cards, derive, get


def all_cases():
    """(id, derivation at default values) for every card and every value of its case parameters."""
    out = []
    for card in cards():
        case_params = [p for p in card.params if p.is_case]
        for combo in itertools.product(*[p.choices for p in case_params]):
            given = {p.name: v for p, v in zip(case_params, combo)}
            label = card.name + "".join(f"[{v}]" for v in combo)
            out.append((label, Derivation(card, card.resolve(given))))
    # parameter variants that switch on other branches
    for name, given in [("ppo-policy", dict(clip_eps_low=0.1, clip_eps_high=0.3, dual_clip=2.0)),
                        ("ppo-value", dict(clip_eps_low=0.1, clip_eps_high=0.4)),
                        ("ppo-value", dict(clip_eps="none")),
                        ("pairwise", dict(margin=1.5)), ("logexp", dict(margin=-0.5)),
                        ("cdpo", dict(label_smoothing=0.3, beta=2.0)), ("prm", dict(labels="hard", p=0.0))]:
        card = get(name)
        out.append((f"{name}{given}", Derivation(card, card.resolve(given))))
    return out


CASES = all_cases()
IDS = [c[0] for c in CASES]


def test_registry_has_every_required_entry():
    required = {"basics", "gptlm", "kd", "dpo", "cdpo", "ipo", "kto", "vanilla-kto", "ppo-policy", "ppo-value", "pairwise", "logexp", "prm",
                # the GRPO family and KL estimators, the preference and distillation zoo
                "grpo", "dapo", "dr-grpo", "gspo", "cispo", "sapo", "gmpo", "gpg", "kl-estimators", "group-advantages",
                "dpo-robust", "dpo-hinge", "dpo-exo", "dpo-nca", "dpo-bco", "dpo-sppo", "dpo-apo-zero", "dpo-apo-down",
                "dpo-discopop", "dpo-ln", "rpo", "simpo", "cpo", "orpo", "kto-apo-zero", "gkd"}
    assert required <= {c.name for c in cards()}
    assert get("vanilla_kto").name == "vanilla-kto" and get("DPOLoss").name == "dpo" and get("PolicyLoss").name == "ppo-policy"


@pytest.mark.parametrize("label,d", CASES, ids=IDS)
def test_gradient_equals_sympy_diff(label, d):
    rng = np.random.default_rng(0)
    for v in d.variables:
        raw = d.raw_gradient[v]
        if not raw.has(sp.Piecewise) and not raw.has(sp.Function):
            assert sp.simplify(d.gradient[v] - raw) == 0, v
        tidy = d.function(v, "mpmath")
        plain = Derivation(d.card, d.params)  # fresh, untidied lowering of the raw diff
        from lossviz.symbolic import lower

        raw_fn = lower(raw, list(d.variables), "mpmath")
        for _ in range(5):
            point = d.card.sample(rng, d.params)
            args = [point[n] for n in d.variables]
            assert abs(tidy(*args) - raw_fn(*args)) <= 1e-30 * max(1, abs(raw_fn(*args))), (v, point)
        del plain


@pytest.mark.parametrize("label,d", CASES, ids=IDS)
def test_gradient_equals_high_precision_finite_differences(label, d):
    """Independent of sympy.diff: central differences of the loss at 50 digits, step 1e-20."""
    rng = np.random.default_rng(1)
    loss = d.function("loss", "mpmath")
    for _ in range(4):
        point = d.card.sample(rng, d.params)
        for v in d.variables:
            if v in d.card.detached:
                assert d.gradient[v] == 0
                continue
            with mpmath.workdps(50):
                h = mpmath.mpf("1e-20")
                up = dict(point); up[v] = mpmath.mpf(point[v]) + h
                dn = dict(point); dn[v] = mpmath.mpf(point[v]) - h
                fd = (loss(*[up[n] for n in d.variables]) - loss(*[dn[n] for n in d.variables])) / (2 * h)
                exact = d.function(v, "mpmath")(*[point[n] for n in d.variables])
                assert abs(fd - exact) <= mpmath.mpf("1e-15") * max(1, abs(exact)), (v, point)


@pytest.mark.parametrize("label,d", CASES, ids=IDS)
def test_card_matches_production_autograd(label, d):
    """Loss and input gradients of the production class on a one-example batch, rel 1e-9."""
    rng = np.random.default_rng(2)
    for _ in range(5):
        point = d.card.sample(rng, d.params)
        ex = d.card.example(point, d.params)
        for i, a in enumerate(ex.args):
            if isinstance(a, torch.Tensor) and a.is_floating_point() and i in {w[0] for w in ex.where.values()}:
                a.requires_grad_()
        out = ex.module(*ex.args)
        loss = out[0] if isinstance(out, tuple) else out
        expected = d.evaluate(point)
        assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-12), point
        leaves = sorted({w[0] for w in ex.where.values()})
        grads = dict(zip(leaves, torch.autograd.grad(loss, [ex.args[i] for i in leaves], allow_unused=True)))
        for v, (arg, index) in ex.where.items():
            g = grads[arg]
            got = 0.0 if g is None else g[index].item()
            want = d.evaluate(point, v)
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (v, point)


EXTREMES = [1e4, 50.0, 0.0]


@pytest.mark.parametrize("magnitude", EXTREMES, ids=lambda m: f"|x|={m:g}")
@pytest.mark.parametrize("label,d", CASES, ids=IDS)
def test_lowerings_agree_with_mpmath_oracle(label, d, magnitude):
    """numpy and torch lowerings: finite and equal to the 50-digit oracle at |x| = 1e4, 50 and 0."""
    rng = np.random.default_rng(3)
    n = len(d.variables)
    signs = rng.choice([-1.0, 1.0], size=(12, n))
    points = signs * magnitude
    for key in ["loss", *d.variables]:
        np_fn, mp_fn = d.function(key, "numpy"), d.function(key, "mpmath")
        torch_fn = d.function(key, "torch")
        got_np = np_fn(*[points[:, j] for j in range(n)])
        got_torch = torch_fn(*[torch.tensor(points[:, j], dtype=torch.float64) for j in range(n)]).numpy()
        for k in range(len(points)):
            want = float(mp_fn(*points[k]))
            assert np.isfinite(want)
            for backend, got in (("numpy", got_np[k]), ("torch", got_torch[k])):
                assert np.isfinite(got), (backend, key, points[k])
                # relative 1e-9, or absolute rounding where terms cancel: exp of a difference of size |x|
                # carries relative error ~eps*|x|, and it multiplies log-probabilities of size |x|
                assert got == pytest.approx(want, rel=1e-9, abs=1e-15 * max(1.0, magnitude) ** 2), (backend, key, points[k])


def test_naive_lowering_would_overflow():
    """The reason for the stable lowering: lambdify of the logexp loss overflows at a gap of 1e4."""
    d = derive("logexp", margin=0.0)
    naive = sp.lambdify([sp.Symbol(v, real=True) for v in d.variables], d.loss, "numpy")
    with np.errstate(over="ignore"):
        assert np.isinf(naive(0.0, 1e4))
    assert d.evaluate({"chosen_reward": 0.0, "reject_reward": 1e4}) == 1e4


def test_every_cited_paper_is_in_the_bibliography():
    """A card's `references` name anchors of docs/references.md; a typo or a missing entry fails here."""
    import re
    from pathlib import Path

    from lossviz.registry import BUILTIN, cards, origin

    text = (Path(__file__).resolve().parent.parent / "docs" / "references.md").read_text()
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', text))
    cited = {(c.name, r) for c in cards() for r in c.references if origin(c.name) == BUILTIN}  # a plugin cites its own docs
    assert cited, "no card cites a paper"
    missing = sorted((name, r) for name, r in cited if r not in anchors)
    assert not missing, f"cited but not in docs/references.md: {missing}"
