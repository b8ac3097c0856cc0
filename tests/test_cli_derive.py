"""`lossviz list` and `lossviz derive`: every entry, every format, JSON that sympify parses back, clean errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp

import lossviz
from lossviz.cli import main
from lossviz.registry import cards, derive, names


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_shows_every_entry_with_parameters_and_cases(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    for card in cards():
        line = next(l for l in out.splitlines() if l.startswith(card.name + " "))
        for p in card.params:
            assert (p.name in line) or (p.is_case and card.cases_doc in line)
    assert "arm=desirable|undesirable" in out and "labels=soft|hard" in out


@pytest.mark.parametrize("name", names())
@pytest.mark.parametrize("fmt", ["text", "latex"])
def test_derive_every_entry_in_text_and_latex(capsys, name, fmt):
    code, out, err = run(capsys, "derive", name, "--format", fmt)
    assert code == 0 and err == ""
    if fmt == "latex":
        assert r"\mathcal{L} &=" in out and r"\frac{\partial \mathcal{L}}" in out
    else:
        assert out.startswith(f"{name}:") and "gradient:" in out


@pytest.mark.parametrize("name", names())
def test_json_round_trips_through_sympify(capsys, name):
    code, out, _ = run(capsys, "derive", name, "--format", "json", "--defaults")
    assert code == 0
    data = json.loads(out)
    assert set(data) >= {"name", "params", "variables", "loss", "gradient", "latex"}
    assert data["name"] == name and data["symbolic"] == []
    d = derive(name, symbolic=False, **{k: v for k, v in data["params"].items() if v is not None})
    local = {v: sp.Symbol(v, real=True) for v in data["variables"]}
    rng = np.random.default_rng(0)
    for key, text in [("loss", data["loss"]), *data["gradient"].items()]:
        parsed = sp.sympify(text, locals=local)
        assert {s.name for s in parsed.free_symbols} <= set(data["variables"])
        for _ in range(3):
            point = d.card.sample(rng, d.params)
            want = d.evaluate(point, key)
            got = float(parsed.subs({local[v]: point[v] for v in data["variables"]}).evalf(30))
            assert got == pytest.approx(want, rel=1e-10, abs=1e-14), (key, point)


def test_symbolic_parameters_stay_symbolic_in_json(capsys):
    code, out, _ = run(capsys, "derive", "cdpo", "--format", "json", "--beta", "0.1")
    data = json.loads(out)
    assert data["params"] == {"beta": 0.1, "label_smoothing": None} and data["symbolic"] == ["label_smoothing"]
    minimum = sp.sympify(data["facts"]["minimum"]["value"], locals={"label_smoothing": sp.Symbol("label_smoothing")})
    assert float(minimum.subs("label_smoothing", 0.1)) == pytest.approx(10 * np.log(9), rel=1e-12)


@pytest.mark.parametrize("argv,needle", [
    (["derive", "dpx"], "unknown loss 'dpx'; valid: dpo,"),
    (["derive", "dpo", "--bta", "0.1"], "dpo has no parameter --bta; valid: --beta"),
    (["derive", "dpo", "--beta", "-1"], "--beta must be in (0, 100]; got -1"),
    (["derive", "cdpo", "--label-smoothing", "0.7"], "--label-smoothing must be in [0, 0.5); got 0.7"),
    (["derive", "dpo", "--beta", "abc"], "--beta must be a number"),
    (["derive", "dpo", "--beta"], "--beta needs a value"),
    (["derive", "kto", "--arm", "maybe"], "--arm must be one of desirable, undesirable"),
    (["derive", "prm", "--labels", "hard", "--p", "0.5"], "--p must be 0 or 1"),
    (["derive", "dpo", "--format", "yaml"], "invalid choice: 'yaml'"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err, err


def test_unknown_name_lists_closest_first(capsys):
    _, _, err = run(capsys, "derive", "ppo_polcy")
    assert err.split("valid: ")[1].startswith("ppo-policy")


def test_aliases_and_class_names(capsys):
    for alias in ("vanilla_kto", "VanillaKTOLoss", "PolicyLoss", "ppo_value"):
        assert run(capsys, "derive", alias)[0] == 0


def test_subprocess_error_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "lossviz", "derive", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.startswith("lossviz: error:")


def test_python_api():
    d = lossviz.derive("dpo", beta=0.1)
    assert d.params == {"beta": 0.1} and d.variables[0] == "policy_chosen_logps"
    assert d.evaluate({"policy_chosen_logps": 1.0, "policy_rejected_logps": 0.0, "reference_chosen_logps": 0.0,
                       "reference_rejected_logps": 0.0}) == pytest.approx(-np.log(1 / (1 + np.exp(-0.1))), rel=1e-15)
    with pytest.raises(ValueError, match="unknown loss"):
        lossviz.derive("nope")
    with pytest.raises(ValueError, match=r"^beta must be in \(0, 100\]; got 0$"):  # the Python argument, not the CLI flag
        lossviz.derive("dpo", beta=0)


def test_powers_of_the_stable_functions_typeset():
    """sympy hands a power to the function's printer (σ(x)² in DiscoPOP's gradient at τ = 1): it must typeset."""
    import sympy as sp

    from lossviz.symbolic import LogSigmoid, LogSumExp, Sigmoid

    x = sp.Symbol("x")
    assert sp.latex(Sigmoid(x) ** 2) == r"\sigma\left(x\right)^{2}"
    assert sp.latex(LogSigmoid(x) ** 3) == r"\left(\log\sigma\left(x\right)\right)^{3}"
    assert sp.latex(LogSumExp(x, 0) ** 2) == r"\operatorname{LSE}\left(x, 0\right)^{2}"
    assert sp.latex(Sigmoid(x)) == r"\sigma\left(x\right)"
