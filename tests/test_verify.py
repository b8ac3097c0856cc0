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
