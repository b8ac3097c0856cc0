"""Packaging promises: a light import for training jobs, and the demo main job."""

import subprocess
import sys

from lossviz.cli import main


def test_import_losses_pulls_in_torch_only():
    code = "import sys, lossviz.losses; print(sorted(m for m in ('sympy', 'matplotlib', 'mpmath') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_import_lossviz_is_torch_free():
    code = "import sys, lossviz; print('torch' in sys.modules, 'sympy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"


def test_demo_prints_every_loss(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    for name in ("GPTLMLoss", "KDLoss", "DPOLoss", "KTOLoss", "VanillaKTOLoss", "PolicyLoss", "ValueLoss",
                 "PairWiseLoss", "LogExpLoss", "PRMLoss"):
        assert name in out
    assert "= 10000" in out


def test_unknown_command_is_one_line_exit_2(capsys):
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lossviz: error:") and len(err.strip().splitlines()) == 1


def test_ci_runs_exactly_the_readme_test_command():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parent.parent
    command = re.search(r"TEST_COMMAND='([^']+)'", (root / ".ci" / "run").read_text()).group(1)
    assert command in (root / "README.md").read_text()


def test_readme_has_no_unfilled_placeholder_and_its_local_links_exist():
    """Every `{{...}}` is filled, and every relative link of the README points at a file in the repository."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    text = (root / "README.md").read_text()
    assert not re.findall(r"\{\{\w+\}\}", text)
    links = re.findall(r"\]\(((?!https?:|#)[^)#\s]+)(?:#[^)]*)?\)", text)
    assert links, "the README links no local file"
    missing = sorted({link for link in links if not (root / link).exists()})
    assert not missing, f"README links files that do not exist: {missing}"
