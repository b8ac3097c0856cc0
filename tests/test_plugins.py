"""Cards from other packages (entry-point group ``lossviz.cards``) and the discovery of built-in cards.

Each test builds a temporary distribution the way an installed package looks to
``importlib.metadata``: a ``*.dist-info`` folder with ``METADATA`` and ``entry_points.txt`` on
``sys.path``, beside the plugin's module. Nothing is installed. The good plugin is
``tests/plugins/squared_hinge.py``: a squared hinge on the reward gap with its own production
``nn.Module``.
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import lossviz
from lossviz import plugins, registry
from lossviz.cards.base import CardError
from lossviz.cli import build_parser, main
from lossviz.errors import PluginError, PluginWarning

HERE = Path(__file__).parent
# the built-in entries in teaching order: by family (registry.FAMILIES), then each card's `order`
BUILTIN_ORDER = ["basics", "gptlm", "kd", "gkd",
                 "dpo", "cdpo", "ipo", "dpo-robust", "dpo-hinge", "dpo-exo", "dpo-nca", "dpo-bco", "dpo-sppo",
                 "dpo-apo-zero", "dpo-apo-down", "dpo-discopop", "dpo-ln", "rpo",
                 "simpo", "cpo", "orpo", "kto", "vanilla-kto", "kto-apo-zero", "ppo-policy", "ppo-value",
                 "grpo", "dr-grpo", "dapo", "gspo", "cispo", "sapo", "gmpo", "gpg", "group-advantages",
                 "kl-estimators", "pairwise", "logexp", "prm"]
HINGE = "lossviz_squared_hinge"


def make_distribution(site: Path, name: str, entry_points: dict, modules: dict = None, version: str = "0.1") -> Path:
    """A distribution as ``importlib.metadata`` finds it: ``site/<name>-<version>.dist-info`` and the modules beside it."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = ["[lossviz.cards]"] + [f"{key} = {value}" for key, value in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module, source in (modules or {}).items():
        (site / f"{module}.py").write_text(source)
    return info


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path for temporary distributions; the registry is rediscovered before and after."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)
    registry.reset()
    yield folder
    for module in set(sys.modules) - before:
        if module.startswith("lossviz_"):
            del sys.modules[module]
    monkeypatch.undo()
    registry.reset()


def hinge_source() -> str:
    return (HERE / "plugins" / "squared_hinge.py").read_text()


@pytest.fixture
def hinge(site):
    make_distribution(site, "lossviz-squared-hinge", {"squared-hinge": f"{HINGE}:SquaredHinge"}, {HINGE: hinge_source()})
    return site


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- a working plugin appears in every face -----------------------------------------------------------
def test_plugin_card_is_listed_after_the_built_in_entries(hinge, capsys):
    assert registry.names() == BUILTIN_ORDER + ["squared-hinge"]
    assert registry.problems() == []
    assert registry.origin("SquaredHingeLoss") == f"plugin 'squared-hinge' ({HINGE}:SquaredHinge from lossviz-squared-hinge 0.1)"
    assert registry.origin("dpo") == "built-in"
    code, out, err = run(capsys, "list")
    assert code == 0 and err == ""
    row = next(line for line in out.splitlines() if line.startswith("squared-hinge"))
    assert "reward" in row and "margin=1.0" in row and f"{HINGE}:SquaredHingeLoss" in row
    assert out.endswith(f"from plugins (entry-point group lossviz.cards):\n  squared-hinge: {registry.origin('squared-hinge')}\n")


def test_plugin_card_derives(hinge, capsys):
    code, out, err = run(capsys, "derive", "squared-hinge", "--margin", "1.5", "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["variables"] == ["chosen_reward", "reject_reward"]
    assert data["facts"]["hinge"]["value"] == "3/2"
    assert data["facts"]["gradient_at_zero_gap"]["value"] == "-3"
    d = lossviz.derive("squared_hinge", symbolic=False, margin=1.5)
    for gap in (-2.0, 0.5, 1.4):  # below the hinge: ∂ℓ/∂r_c = -2(m - Δ), ∂ℓ/∂r_r = +2(m - Δ)
        point = {"chosen_reward": gap + 0.3, "reject_reward": 0.3}
        assert d.evaluate(point, "chosen_reward") == pytest.approx(-2 * (1.5 - gap), rel=1e-12)
        assert d.evaluate(point, "reject_reward") == pytest.approx(2 * (1.5 - gap), rel=1e-12)
        assert d.evaluate(point) == pytest.approx((1.5 - gap) ** 2, rel=1e-12)
    assert d.evaluate({"chosen_reward": 2.0, "reject_reward": 0.0}, "chosen_reward") == 0.0
    code, out, err = run(capsys, "derive", "squared-hinge", "--margin", "-1")  # the plugin's Param range, one line
    assert code == 2 and out == "" and err.count("\n") == 1 and "--margin must be in [0, inf)" in err


def test_plugin_card_verifies_against_its_production_module(hinge, capsys):
    report = lossviz.verify("squared-hinge", device="cpu", samples=2)
    result = report["squared-hinge"]
    assert result.passed, result.failures
    assert result.max_rel_err < 1e-12 and result.gradcheck and result.points >= 8
    code, out, err = run(capsys, "verify", "squared-hinge", "--device", "cpu", "--seed", "3")
    assert code == 0 and "1 passed, 0 failed" in out, out + err


def _line(fig, prefix):
    return next(a for ax in fig.axes for a in ax.get_lines() if (a.get_gid() or "").startswith(prefix))


def test_plugin_card_plots_from_its_declared_figure(hinge, capsys, tmp_path):
    from lossviz.plots import figure
    from lossviz.plots.layout_check import collisions

    fig = figure("squared-hinge", margin=0.5)
    xs, ys = (np.asarray(v, dtype=float) for v in _line(fig, "loss:").get_data())
    np.testing.assert_allclose(ys, np.maximum(0.0, 0.5 - xs) ** 2, rtol=1e-12, atol=1e-14)
    xs, gs = (np.asarray(v, dtype=float) for v in _line(fig, "grad:").get_data())
    np.testing.assert_allclose(gs, np.where(xs < 0.5, -2 * (0.5 - xs), 0.0), rtol=1e-12, atol=1e-14)
    assert float(np.asarray(_line(fig, "marker:hinge").get_xdata())[0]) == pytest.approx(0.5, rel=1e-12)
    assert collisions(fig) == []
    out_file = tmp_path / "hinge.png"
    code, out, err = run(capsys, "plot", "squared-hinge", "--sweep", "margin=0.5,1", "--out", str(out_file))
    assert code == 0 and out_file.stat().st_size > 1000, err


def test_editing_a_plugin_card_misses_the_plot_cache(hinge, capsys, tmp_path):
    """`lossviz plot` caches built figures; the key holds a hash of the plugin's module (conftest points the cache at a tmp dir)."""
    first, again, edited = (tmp_path / f"{n}.png" for n in ("first", "again", "edited"))
    assert run(capsys, "plot", "squared-hinge", "--out", str(first))[0] == 0
    assert run(capsys, "plot", "squared-hinge", "--out", str(again))[0] == 0
    assert again.read_bytes() == first.read_bytes()  # the same request: the same figure (a cache hit, or rebuilt alike)
    module = hinge / f"{HINGE}.py"
    module.write_text(module.read_text().replace('title = "squared hinge on the reward gap"', 'title = "edited hinge"'))
    sys.modules.pop(HINGE, None)
    registry.reset()
    code, out, err = run(capsys, "plot", "squared-hinge", "--out", str(edited))
    assert code == 0, err
    assert edited.read_bytes() != first.read_bytes()  # the edited title is drawn: not served from the cache


def test_plugin_card_compares_with_built_in_entries(hinge, capsys, tmp_path):
    from lossviz.plots import compare_figure
    from lossviz.plots.layout_check import collisions

    fig = compare_figure(["squared-hinge", "pairwise"], "grad")
    xs, push = (np.asarray(v, dtype=float) for v in _line(fig, "grad:squared-hinge").get_data())
    np.testing.assert_allclose(push, np.where(xs < 1.0, 2 * (1.0 - xs), 0.0), rtol=1e-12, atol=1e-14)  # push = -∂ℓ/∂Δ, m = 1
    assert collisions(fig) == []
    out_file = tmp_path / "cmp.png"
    code, out, err = run(capsys, "compare", "squared-hinge", "dpo", "--what", "loss", "--out", str(out_file))
    assert code == 0 and out_file.exists(), err


def test_plugin_card_is_in_the_gallery(hinge):
    from lossviz.plots import gallery

    shots = [item for item in gallery.items() if item.name == "squared-hinge"]
    assert [s.stem for s in shots] == ["squared-hinge"]
    fig = gallery.build(shots[0])
    assert _line(fig, "loss:") is not None


def test_plugin_card_explores(hinge):
    from lossviz.widgets import Explorer

    e = Explorer("squared-hinge", margin=0.5)  # from the card's axis and figure alone: it declares no controls
    xs = np.asarray(e.xs, dtype=float)
    np.testing.assert_allclose(e.loss_line.get_ydata(), np.maximum(0.0, 0.5 - xs) ** 2, rtol=1e-10, atol=1e-12)
    assert list(e.sliders) == ["margin"] and [label for label, _ in e.lowered.markers] == ["hinge Δ = m"]  # its parameter, its marked fact
    assert float(e.marker_lines[0][1].get_xdata()[0]) == pytest.approx(0.5)
    e.set(margin=1.0)
    np.testing.assert_allclose(e.loss_line.get_ydata(), np.maximum(0.0, 1.0 - xs) ** 2, rtol=1e-10, atol=1e-12)
    assert float(e.marker_lines[0][1].get_xdata()[0]) == pytest.approx(1.0)


# --- broken and clashing plugins never take down the built-in entries ---------------------------------
BAD_MODULE = '''
from lossviz.cards.base import Card, Param
import sympy as sp


class NotACard:
    name = "not-a-card"


class BadDefault(Card):
    name = "bad-default"
    family = "test"
    title = "a card whose default lies outside its range"
    lesson = "none"
    params = (Param("scale", -1.0, "a scale", low=0.0),)

    def variables(self, p):
        return ("x",)

    def loss(self, p):
        return sp.Symbol("x", real=True) ** 2


class ClashesWithDPO(BadDefault):
    name = "my-dpo"
    aliases = ("DPOLoss",)  # the built-in dpo's alias
    params = ()


class SecondHinge(BadDefault):
    name = "hinge-two"
    aliases = ("squared_hinge",)  # the other plugin's name, spelled with an underscore
    params = ()
'''
RAISES_MODULE = 'raise RuntimeError("the plugin needs CUDA 99\\nsecond line of the message")\n'


@pytest.fixture
def broken(hinge):
    make_distribution(hinge, "broken-cards", {
        "missing": "lossviz_no_such_module:Card",
        "raises": "lossviz_raising_plugin:Card",
        "not-a-card": "lossviz_bad_plugin:NotACard",
        "bad-default": "lossviz_bad_plugin:BadDefault",
        "my-dpo": "lossviz_bad_plugin:ClashesWithDPO",
    }, {"lossviz_bad_plugin": BAD_MODULE, "lossviz_raising_plugin": RAISES_MODULE})
    make_distribution(hinge, "zz-second-hinge", {"hinge-two": "lossviz_bad_plugin:SecondHinge"})
    return hinge


EXPECTED_PROBLEMS = [  # (plugin, what the message says), in discovery order: distribution, then entry point name
    ("bad-default", "bad-default: the default of parameter 'scale' is invalid (scale must be in [0, inf); got -1)"),
    ("missing", "importing it failed: ModuleNotFoundError: No module named 'lossviz_no_such_module'"),
    ("my-dpo", "its alias 'DPOLoss' is already taken by the built-in entry dpo"),
    ("not-a-card", "lossviz_bad_plugin.NotACard is not a subclass of lossviz.cards.base.Card"),
    ("raises", "importing it failed: RuntimeError: the plugin needs CUDA 99"),
    ("hinge-two", "its alias 'squared_hinge' is already taken by the entry squared-hinge of plugin 'squared-hinge' "
                  f"({HINGE}:SquaredHinge from lossviz-squared-hinge 0.1)"),
]


def test_broken_plugins_are_skipped_with_one_line_each(broken):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = registry.names()
    assert names == BUILTIN_ORDER + ["squared-hinge"]
    messages = [str(w.message) for w in caught if issubclass(w.category, PluginWarning)]
    assert messages == [str(p) for p in registry.problems()]
    assert len(messages) == len(EXPECTED_PROBLEMS)
    for message, (plugin, why) in zip(messages, EXPECTED_PROBLEMS):
        assert "\n" not in message
        assert message.startswith(f"plugin {plugin!r} (") and message.endswith(f" skipped: {why}"), message
    assert all(isinstance(p, PluginError) for p in registry.problems())
    # the built-in entries are untouched, and a skipped plugin's name says why it is missing
    assert registry.get("DPOLoss").name == "dpo"
    tied = dict.fromkeys(("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps"), 0.0)
    assert lossviz.derive("dpo", symbolic=False).evaluate(tied) == pytest.approx(np.log(2), rel=1e-15)
    with pytest.raises(CardError, match=r"^loss 'bad-default' is not available: plugin 'bad-default' .* skipped: "):
        registry.get("bad-default")
    with pytest.raises(CardError, match=r"^loss 'missing' is not available: plugin 'missing' .*importing it failed"):
        registry.get("missing")


def test_cli_warns_on_stderr_and_still_works(broken, capsys):
    code, out, err = run(capsys, "list")
    assert code == 0
    assert all(name in out for name in BUILTIN_ORDER + ["squared-hinge"])
    lines = err.splitlines()
    assert len(lines) == len(EXPECTED_PROBLEMS) and all(line.startswith("lossviz: warning: plugin '") for line in lines), err
    registry.reset()
    code, out, err = run(capsys, "derive", "dpo", "--beta", "0.1")
    assert code == 0 and "facts (computed by sympy)" in out and err.count("lossviz: warning: plugin") == len(EXPECTED_PROBLEMS)
    code, out, err = run(capsys, "derive", "not-a-card")
    assert code == 2 and err.splitlines()[-1].startswith("lossviz: error: loss 'not-a-card' is not available: plugin 'not-a-card' ")


def test_console_script_prints_one_line_per_broken_plugin(broken):
    env = {**os.environ, "PYTHONPATH": str(broken)}
    done = subprocess.run([sys.executable, "-m", "lossviz", "list"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0
    assert "squared-hinge" in done.stdout and "prm" in done.stdout
    assert [line.split(" (")[0] for line in done.stderr.splitlines()] == [f"lossviz: warning: plugin {p!r}" for p, _ in EXPECTED_PROBLEMS]


# --- the checks of a card class -----------------------------------------------------------------------
def _hinge_class():
    namespace = {"__name__": "hinge_for_checks"}
    exec(compile(hinge_source(), "squared_hinge.py", "exec"), namespace)
    return namespace["SquaredHinge"]


def _variant(**attributes):
    return type("Variant", (_hinge_class(),), attributes)


def _param(**changes):
    from dataclasses import replace

    return (replace(_hinge_class().params[0], **changes),)


@pytest.mark.parametrize("attributes,needle", [
    ({"name": "Squared Hinge"}, "name must be lower-case letters and digits joined by single hyphens"),
    ({"name": ""}, "name must be lower-case"),
    ({"title": "two\nlines"}, "title must be a one-line, non-empty string"),
    ({"lesson": ""}, "lesson must be a one-line, non-empty string"),
    ({"aliases": "squared"}, "aliases must be a tuple of non-empty strings"),
    ({"production": "lossviz_squared_hinge.SquaredHingeLoss"}, "production must be 'module:Class'"),
    ({"params": _param(default=-0.5)}, "the default of parameter 'margin' is invalid"),
    ({"params": _param(name="out")}, "parameter 'out' would be read as the command-line option --out"),
    ({"params": _param(name="d")}, "parameter 'd' would be read as the command-line option --defaults"),
    ({"params": _param() * 2}, "parameter 'margin' is declared twice"),
    ({"params": _param(choices=("a", "b"), default="c")}, "case parameter 'margin' has default 'c'"),
    ({"params": ("margin",)}, "params must hold Param objects"),
    ({"axis": {"chosen_reward": "Delta"}}, "axis must be an Axis"),
    ({"figure": "lossviz.plots.custom:prm"}, "figure must be a LessonFigure or CustomFigure"),
    ({"detached": "x"}, "detached must be a tuple of strings"),
])
def test_invalid_card_attributes_are_named(attributes, needle):
    with pytest.raises(CardError, match=r"^squared-hinge: |^name must") as info:
        registry.check_card_class(_variant(**attributes))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_card_must_implement_its_loss():
    from lossviz.cards.base import Card

    bare = type("Bare", (Card,), {"name": "bare", "family": "f", "title": "t", "lesson": "l", "variables": lambda self, p: ("x",)})
    with pytest.raises(CardError, match=r"^bare: the card does not implement loss\(\)$"):
        registry.check_card_class(bare)
    registry.check_card_class(_hinge_class())  # the plugin card itself is valid


def test_cli_flags_cover_every_option_a_card_parameter_could_shadow():
    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
    options = {flag for command in ("derive", "plot", "compare") for action in sub.choices[command]._actions
               for flag in action.option_strings if flag.startswith("--")}
    assert options == set(registry.CLI_FLAGS)


# --- built-in discovery -------------------------------------------------------------------------------
def test_built_in_cards_come_in_teaching_order():
    assert [c.name for c in registry.builtin_classes()] == BUILTIN_ORDER == [n for n in registry.names() if n in BUILTIN_ORDER]


def test_a_new_card_module_in_the_package_is_discovered(tmp_path, monkeypatch):
    """Adding a loss is one card file: a module in lossviz.cards (here a second folder of the package)."""
    import lossviz.cards

    extra = tmp_path / "cards"
    extra.mkdir()
    source = hinge_source().replace('name = "squared-hinge"', 'name = "new-hinge"').replace('aliases = ("SquaredHingeLoss",)', "aliases = ()")
    (extra / "zz_new_hinge.py").write_text(source)
    monkeypatch.setattr(lossviz.cards, "__path__", [*lossviz.cards.__path__, str(extra)])
    registry.reset()
    try:
        names = registry.names()
        assert names[:len(BUILTIN_ORDER) - 1] == BUILTIN_ORDER[:-1]  # the reward family grows in place...
        assert names.index("new-hinge") == names.index("logexp") + 1 and names[-1] == "prm"  # ...before the next family
        assert registry.origin("new-hinge") == "built-in"
        assert registry.derive("new-hinge", margin=2).fact("hinge").value == 2
    finally:
        monkeypatch.undo()
        sys.modules.pop("lossviz.cards.zz_new_hinge", None)
        registry.reset()


def test_fingerprint_changes_with_the_plugin_source_and_version(site):
    make_distribution(site, "lossviz-squared-hinge", {"squared-hinge": f"{HINGE}:SquaredHinge"}, {HINGE: hinge_source()})
    first = plugins.fingerprint()
    assert [row[:3] for row in first] == [["squared-hinge", f"{HINGE}:SquaredHinge", "lossviz-squared-hinge 0.1"]]
    assert HINGE not in sys.modules  # fingerprinting imports nothing
    (site / f"{HINGE}.py").write_text(hinge_source() + "\n# edited\n")
    assert plugins.fingerprint()[0][3] != first[0][3]
