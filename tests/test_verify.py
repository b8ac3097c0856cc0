"""`lossviz verify`: every entry passes on CPU in every dtype, and verification fails loudly when it should."""

import json

import pytest
import torch

import lossviz
from lossviz.cli import main
from lossviz.registry import get, names
from lossviz.verification import TOLERANCES, VerifyError, verify


@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize("name", names())
def test_every_entry_passes_on_cpu(name, dtype):
    report = verify(name, device="cpu", dtype=dtype)
    result = report[name]
    assert result.passed, result.failures
    assert result.points > 0 and result.gradcheck and result.fd_rel_err < 1e-6
    assert result.max_rel_err <= TOLERANCES[dtype]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU: torch.cuda.is_available() is False")
@pytest.mark.parametrize("dtype", list(TOLERANCES))
def test_every_entry_passes_on_cuda(dtype):
    report = verify(None, device="cuda", dtype=dtype)
    assert report.ok, report.table()
    assert all(r.device == "cuda" for r in report.results)


def _wrong_card():
    """A cDPO card whose loss weights the flipped label twice: its gradient is wrong."""
    from lossviz.cards.dpo import CDPO, margin
    from lossviz.symbolic import LogSigmoid

    class WrongCDPO(CDPO):
        def loss(self, p):
            beta, eps = p["beta"], p["label_smoothing"]
            return -(1 - eps) * LogSigmoid(beta * margin()) - 2 * eps * LogSigmoid(-beta * margin())

    return WrongCDPO()


def _buggy_production_card():
    """The DPO card with a production module that scales the rejected log-probs by 1.01 (a bug)."""
    from lossviz.cards.dpo import DPO
    from lossviz.losses import DPOLoss

    class BuggyDPOLoss(DPOLoss):
        def forward(self, pc, pr, rc, rr):
            return super().forward(pc, pr * 1.01, rc, rr)

    class BuggyDPO(DPO):
        def batches(self, rng, p):
            specs = super().batches(rng, p)
            for s in specs:
                s.make_module = lambda device, p=p: BuggyDPOLoss(**self.production_kwargs(p))
            return specs

    return BuggyDPO()


def test_wrong_card_gradient_is_caught_and_named():
    result = verify(_wrong_card(), device="cpu").results[0]
    assert not result.passed and result.entry == "cdpo"
    assert result.max_rel_err > 1e-3
    text = " ".join(result.failures)
    assert "loss" in text and "policy_chosen_logps" in text


def test_buggy_production_module_is_caught_and_names_the_variable():
    result = verify(_buggy_production_card(), device="cpu", dtype="float32").results[0]
    assert not result.passed and result.entry == "dpo"
    assert "policy_rejected_logps" in result.worst or "loss" in result.worst
    assert any("policy_rejected_logps" in f for f in result.failures)


def test_cli_exits_1_and_prints_the_failing_entry(monkeypatch, capsys):
    import lossviz.registry as registry

    real_get = registry.get
    monkeypatch.setattr(registry, "get", lambda n: _buggy_production_card() if n == "dpo" else real_get(n))
    assert main(["verify", "dpo", "pairwise", "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "1 passed, 1 failed"
    assert "FAIL dpo:" in out and "policy_rejected_logps" in out


def test_cli_table_and_json(capsys):
    assert main(["verify", "ipo", "ppo-value", "--device", "cpu", "--dtype", "float32", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "entry" in out and "max rel err" in out and "gradcheck" in out
    assert out.strip().splitlines()[-1] == "2 passed, 0 failed"
    assert main(["verify", "kto", "--json", "--device", "cpu"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] == 1 and data["results"][0]["entry"] == "kto" and data["results"][0]["tolerance"] == 1e-9


@pytest.mark.parametrize("argv,needle", [
    (["verify", "nope"], "unknown loss 'nope'"),
    (["verify", "dpo", "--device", "tpu"], "invalid choice: 'tpu'"),
    (["verify", "dpo", "--dtype", "float16"], "invalid choice: 'float16'"),
    (["verify"], "give entry names"),
    (["verify", "dpo", "--all"], "not both"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_one_line_exit_2(capsys):
    assert main(["verify", "dpo", "--device", "cuda"]) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err
    with pytest.raises(VerifyError):
        verify("dpo", device="cuda")


def test_python_api_and_params():
    report = lossviz.verify("cdpo", device="cpu", dtype="float64", beta=0.7, label_smoothing=0.3)
    assert report.ok and report.results[0].entry == "cdpo"
    auto = lossviz.verify(get("basics"))
    assert auto.results[0].device == ("cuda" if torch.cuda.is_available() else "cpu")


# --- parameter sampling, replay, branch coverage -------------------------------------------------


def test_parameters_are_sampled_across_their_ranges_and_printed():
    from lossviz.verification import SAMPLES

    report = verify(["kto", "ppo-policy", "ppo-value", "cdpo", "pairwise"], device="cpu")
    kto = report["kto"]
    assert len(kto.param_sets) == 1 + SAMPLES and kto.param_sets[0] == {"beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0}
    assert any(abs(s["desirable_weight"] - s["undesirable_weight"]) > 0.5 for s in kto.param_sets[1:])
    assert len({s["beta"] for s in kto.param_sets}) == 1 + SAMPLES
    ppo = report["ppo-policy"].param_sets[1:]
    for name in ("clip_eps_low", "clip_eps_high", "dual_clip", "log_ratio_max"):
        assert any(s[name] is not None for s in ppo) and any(s[name] is None for s in ppo), name
    value = report["ppo-value"].param_sets
    assert any(all(v is None for v in s.values()) for s in value)  # the unclipped value loss
    assert any(s["clip_eps_low"] is not None and s["clip_eps_high"] is not None for s in value)
    assert any(s["label_smoothing"] > 0.2 for s in report["cdpo"].param_sets)
    assert any(s["margin"] < 0 for s in report["pairwise"].param_sets) and any(s["margin"] > 0 for s in report["pairwise"].param_sets)
    table = report.table()
    assert "drawn from seed 0" in table and "undesirable_weight=" in table and "dual_clip=" in table


def test_the_same_seed_replays_and_another_seed_differs():
    a, b, c = (verify("ppo-policy", device="cpu", seed=s).results[0] for s in (7, 7, 8))
    assert a.param_sets == b.param_sets and a.max_abs_err == b.max_abs_err and a.points == b.points
    assert a.param_sets != c.param_sets
    assert a.seed == 7 and '"seed": 7' in verify("dpo", device="cpu", seed=7).to_json()


def test_fixed_parameters_stay_fixed_and_samples_zero_runs_them_alone():
    kept = verify("cdpo", device="cpu", beta=0.7).results[0]
    assert all(s["beta"] == 0.7 for s in kept.param_sets) and len({s["label_smoothing"] for s in kept.param_sets}) > 1
    alone = verify("cdpo", device="cpu", samples=0, beta=0.7, label_smoothing=0.3).results[0]
    assert alone.passed and alone.param_sets == [{"beta": 0.7, "label_smoothing": 0.3}]


@pytest.mark.parametrize("kwargs,needle", [({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"), ({"samples": -2}, "samples")])
def test_bad_seed_or_samples_is_a_verify_error(kwargs, needle):
    with pytest.raises(VerifyError, match=needle):
        verify("dpo", device="cpu", **kwargs)


def _ppo_branches(seed):
    """Which branches of the policy loss the verification batches of ``seed`` reach, over all parameter sets."""
    import math

    import numpy as np

    from lossviz.verification import parameter_sets

    card = get("ppo-policy")
    hits = set()
    for p, rng in zip(*parameter_sets(card, seed)):  # exactly the sets and streams that verify uses
        low, high = (p["clip_eps_low"] or p["clip_eps"]), (p["clip_eps_high"] or p["clip_eps"])
        for spec in card.batches(rng, p):
            lp, old, adv, mask = spec.args
            hits.add("fully masked sequence") if (mask.sum(-1) == 0).any() else None
            hits.add("advantages (B, 1)") if adv.shape[-1] == 1 else None
            for x, a, m in zip((lp - old).ravel(), np.broadcast_to(adv, lp.shape).ravel(), mask.ravel()):
                if not m:
                    continue
                if p["log_ratio_max"] is not None and x > p["log_ratio_max"]:
                    hits.add("log-ratio clamp")
                    x = p["log_ratio_max"]
                if a >= 0 and x > math.log(1 + high):
                    hits.add("clipped above")
                elif a < 0 and x < math.log(1 - low):
                    hits.add("clipped below")
                elif a < 0 and p["dual_clip"] is not None and x > math.log(p["dual_clip"]):
                    hits.add("dual clip")
                else:
                    hits.add("inside")
    return hits


def test_ppo_batches_reach_every_branch():
    assert _ppo_branches(0) == {"fully masked sequence", "advantages (B, 1)", "log-ratio clamp", "clipped above",
                                "clipped below", "dual clip", "inside"}


def test_kto_batches_have_positive_and_clamped_reference_points():
    """Each batch's reference points have the sign its label states, at least 0.1 from the clamp, for any seed."""
    import numpy as np

    sign = lambda z: "> 0" if z > 0.1 else "clamped to 0" if z < -0.1 else "near the kink"
    for seed in range(5):
        kto = get("kto").batches(np.random.default_rng(seed), get("kto").resolve({}))
        assert [sign(np.mean(s.args[2] - s.args[5])) for s in kto] == ["> 0", "clamped to 0", "clamped to 0", "> 0"]
        assert [s.label.split(", ")[1] for s in kto] == ["reference point > 0", "reference point clamped to 0",
                                                          "reference point clamped", "reference point > 0"]
        vanilla = get("vanilla-kto").batches(np.random.default_rng(seed), get("vanilla-kto").resolve({}))
        for s in vanilla:
            chosen_mean, rejected_mean = np.mean(s.args[0] - s.args[2]), np.mean(s.args[1] - s.args[3])
            # the chosen examples are scored against the rejected side's mean, and the other way round
            assert f"chosen reference point {sign(rejected_mean)}, rejected {sign(chosen_mean)}" in s.label
        assert {s.label.split("; ")[1] for s in vanilla} == {f"chosen reference point {a}, rejected {b}"
                                                             for a in ("> 0", "clamped to 0") for b in ("> 0", "clamped to 0")}


# --- mutants that verify at default parameters alone let through ---------------------------------


def _with_module(card_cls, module_cls):
    class Mutant(card_cls):
        def batches(self, rng, p):
            specs = super().batches(rng, p)
            for s in specs:
                inner = s.make_module
                s.make_module = lambda device, inner=inner: module_cls.wrap(inner(device))
            return specs

    return Mutant()


class _SwapWeights:
    """KTOLoss with w_D and w_U swapped (equal at the defaults, so only sampled weights see it)."""

    @staticmethod
    def wrap(module):
        module.desirable_weight, module.undesirable_weight = module.undesirable_weight, module.desirable_weight
        return module


class _ClampOffByOne:
    """PolicyLoss whose clamp sits 0.1 above the asked log_ratio_max (never reached at the defaults)."""

    @staticmethod
    def wrap(module):
        if module.log_ratio_max is not None:
            module.log_ratio_max += 0.1
        return module


class _DetachedVanillaReference:
    """VanillaKTOLoss computed with detached reference points (the same loss, wrong gradient where a mean is > 0)."""

    @staticmethod
    def wrap(module):
        from lossviz.losses import VanillaKTOLoss

        class Detached(VanillaKTOLoss):
            def forward(self, pc, pr, rc, rr):
                from lossviz.losses import KTOLoss

                zc, zr = (pc - rc).mean().clamp(min=0).detach(), (pr - rr).mean().clamp(min=0).detach()
                losses = torch.cat((torch.sigmoid(-self.beta * (pc - rc - zr)), torch.sigmoid(-self.beta * (zc - (pr - rr))))).mean()
                return losses, self.beta * (pc - rc).detach(), self.beta * (pr - rr).detach()

        return Detached(module.beta)


@pytest.mark.parametrize("card_name,mutant", [("kto", _SwapWeights), ("ppo-policy", _ClampOffByOne), ("vanilla-kto", _DetachedVanillaReference)],
                         ids=["kto weights swapped", "ppo clamp off by 0.1", "vanilla KTO reference detached"])
def test_sampled_parameters_and_branch_batches_catch_mutants(card_name, mutant):
    card = _with_module(type(get(card_name)), mutant)
    caught = verify(card, device="cpu").results[0]
    assert not caught.passed and caught.failures
    assert any("#" in f for f in caught.failures)  # the failure names its parameter set
