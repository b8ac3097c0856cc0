"""Bad requests on the command line exit 2 with one line naming the argument; the Python API raises
a lossviz error naming the Python argument. Nothing the user had is replaced, nothing crashes."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import lossviz
from lossviz.cli import main
from lossviz.errors import LossvizError
from lossviz.plots import cache
from lossviz.plots.core import COLORS


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def refused(capsys, *argv, naming):
    """Exit 2, nothing on stdout, exactly one line on stderr, and that line names ``naming``."""
    code, out, err = run(capsys, *argv)
    lines = err.splitlines()
    assert code == 2 and out == "", (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("lossviz: error: "), err
    assert naming in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def here(tmp_path, monkeypatch):
    """Run in an empty folder; afterwards nothing may have been written there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- flags an entry does not have ---------------------------------------------------------------


@pytest.mark.parametrize("argv,flag", [
    (["plot", "basics", "--beta", "1"], "--beta"),
    (["derive", "basics", "--beta", "1"], "--beta"),
    (["plot", "gpg", "--clip-eps", "0.2"], "--clip-eps"),
    (["derive", "gpg", "--clip-eps=0.2"], "--clip-eps"),
])
def test_a_flag_on_an_entry_without_parameters(capsys, here, argv, flag):
    line = refused(capsys, *argv, naming=flag)
    assert "takes no parameters" in line
    assert list(here.iterdir()) == []


def test_the_python_api_names_the_argument_not_the_flag():
    with pytest.raises(LossvizError) as info:
        lossviz.derive("basics", beta=1)
    assert str(info.value) == "basics takes no parameters; got beta"
    with pytest.raises(LossvizError) as info:
        lossviz.derive("cdpo", label_smoothing=0.7)
    assert str(info.value) == "label_smoothing must be in [0, 0.5); got 0.7"
    with pytest.raises(LossvizError) as info:
        lossviz.derive("dpo", bta=0.1)
    assert str(info.value) == "dpo has no parameter bta; valid: beta"


def test_the_subprocess_prints_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "lossviz", "derive", "basics", "--beta", "1"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr == "lossviz: error: basics takes no parameters; got --beta\n"


# --- outputs that are not a regular file we may write ------------------------------------------


@pytest.mark.parametrize("out", ["/proc/x.png", "/sys/x.png"])
def test_an_unwritable_folder(capsys, here, out):
    if not Path(out).parent.is_dir():
        pytest.skip(f"{Path(out).parent} does not exist here")
    line = refused(capsys, "plot", "dpo", "--out", out, naming="--out")
    assert "cannot write" in line and not Path(out).exists()


def test_a_directory(capsys, here):
    line = refused(capsys, "plot", "dpo", "--out", str(here), naming="--out")
    assert "is a directory" in line


@pytest.mark.parametrize("extra", [[], ["--format", "png"], ["--format", "png", "--force"]])
def test_dev_null_is_never_replaced(capsys, here, extra):
    before = os.lstat("/dev/null")
    line = refused(capsys, "plot", "dpo", "--out", "/dev/null", *extra, naming="--out")
    assert "is a device" in line
    after = os.lstat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


@pytest.mark.parametrize("command", [["plot", "dpo"], ["compare", "dpo", "ipo"]])
def test_force_never_replaces_a_fifo_or_a_link(capsys, here, command):
    fifo = here / "pipe.png"
    os.mkfifo(fifo)
    line = refused(capsys, *command, "--out", str(fifo), "--force", naming="--out")
    assert "fifo" in line and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    target = here / "mine.png"
    target.write_bytes(b"my picture")
    (here / "link.png").symlink_to(target)
    line = refused(capsys, *command, "--out", str(here / "link.png"), "--force", naming="--out")
    assert "symbolic link" in line and (here / "link.png").is_symlink() and target.read_bytes() == b"my picture"


def test_save_in_python_names_its_argument(here):
    from matplotlib.figure import Figure

    from lossviz.plots import PlotError, resolve_output, save

    os.mkfifo(here / "pipe.png")
    with pytest.raises(PlotError, match=r"^path 'pipe.png' is a fifo"):
        save(Figure(), "pipe.png", "png", force=True)
    with pytest.raises(PlotError, match=r"^out '/dev/null' is a device"):
        resolve_output("/dev/null", None, "x")
    with pytest.raises(PlotError, match=r"^dpi must be"):
        save(Figure(), "x.png", "png", dpi=5)


# --- numbers and repeated options ---------------------------------------------------------------


@pytest.mark.parametrize("seed", ["-1", "1.5", "x", str(2**63)])
def test_verify_seed_must_be_a_whole_number_from_0(capsys, seed):
    line = refused(capsys, "verify", "dpo", "--seed", seed, naming="--seed")
    assert repr(seed) in line


def test_a_second_sweep_is_refused(capsys, here):
    line = refused(capsys, "plot", "dpo", "--sweep", "beta=0.1,0.3", "--sweep", "beta=1", naming="--sweep")
    assert "given twice" in line and list(here.iterdir()) == []


def test_a_repeated_parameter_or_out_is_refused(capsys, here):
    refused(capsys, "plot", "dpo", "--beta", "0.1", "--beta", "0.3", naming="--beta")
    refused(capsys, "plot", "dpo", "--out", "a.png", "--out", "b.png", naming="--out")
    assert list(here.iterdir()) == []


@pytest.mark.parametrize("argv,needle", [
    (["plot", "dpo", "cdpo"], "`lossviz compare dpo cdpo`"),
    (["plot", "dpo", "--beta", "0.3", "cdpo", "ipo"], "`lossviz compare dpo cdpo ipo`"),
    (["derive", "dpo", "cdpo"], "derive takes one entry"),
    (["plot", "dpo", "nonsense"], "unexpected argument 'nonsense'"),
])
def test_a_second_entry_name_points_to_compare(capsys, here, argv, needle):
    refused(capsys, *argv, naming=needle)


def test_negative_numbers_are_values(capsys, here):
    code, out, err = run(capsys, "plot", "dpo", "--x-range", "-1e6", "1e6")
    assert code == 0 and err == "" and Path(out.strip()).name == "dpo_beta-0.1_x-range--1000000-1000000.png"
    code, out, err = run(capsys, "plot", "pairwise", "--margin", "-1")
    assert code == 0 and Path(out.strip()).name == "pairwise_margin--1.png"
    # parsed as a value, so the range check (not argparse) speaks
    refused(capsys, "plot", "dpo", "--x-range", "-1e-3", "-2e6", naming="--x-range needs LO < HI")
    refused(capsys, "plot", "dpo", "--x-range", "-inf", "1", naming="--x-range")
    code, out, _ = run(capsys, "derive", "pairwise", "--margin", "-1e6", "--format", "json")
    assert code == 0 and json.loads(out)["params"] == {"margin": -1e6}


# --- output names -------------------------------------------------------------------------------


def test_every_parameter_that_changes_the_figure_is_in_the_name(capsys, here):
    requests = [
        ["plot", "dpo"],
        ["plot", "dpo", "--x-range", "-5", "5"],
        ["plot", "dpo", "--x-range", "-5", "6"],
        ["plot", "dpo", "--beta", "0.1234567"],
        ["plot", "dpo", "--beta", "0.1234568"],  # equal to 6 digits
        ["compare", "dpo", "ipo"],
        ["compare", "dpo", "ipo", "--beta", "0.5"],
        ["compare", "dpo", "ipo", "--x-range", "-3", "3"],
        ["compare", "dpo", "ipo", "--what", "loss"],
    ]
    written = []
    for argv in requests:
        code, out, err = run(capsys, *argv)
        assert code == 0 and err == "", (argv, err)
        written.append(out.strip())
    assert len(set(written)) == len(written), written
    assert all(Path(p).exists() for p in written)
    assert Path(written[7]).name == "compare_dpo_ipo_grad_x-range--3-3.png"


# --- pipes and the cache switch -----------------------------------------------------------------


@pytest.mark.parametrize("command", ["list", "demo"])
def test_a_closed_pipe_is_not_a_traceback(command):
    """`lossviz list | head -1`: the reader is gone before lossviz writes."""
    proc = subprocess.Popen([sys.executable, "-m", "lossviz", command], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141 and err == ""


@pytest.mark.parametrize("value,off", [
    ("1", True), ("true", True), ("yes", True), ("on", True),
    ("0", False), ("false", False), ("False", False), ("no", False), ("off", False), ("", False), (None, False),
])
def test_only_a_true_value_of_lossviz_no_cache_turns_the_cache_off(monkeypatch, value, off):
    if value is None:
        monkeypatch.delenv("LOSSVIZ_NO_CACHE", raising=False)
    else:
        monkeypatch.setenv("LOSSVIZ_NO_CACHE", value)
    assert (cache.cache_dir() is None) == off


# --- sweeps -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sweep,needle", [
    ("beta=0.1,,0.3", "empty value"),
    ("beta=0.1,0.3,", "empty value"),
    ("beta=0.1,0.1", "repeats beta=0.1"),
    ("arm=desirable,desirable", "repeats arm=desirable"),
    ("beta=1,1.0", "repeats beta=1:"),  # the same number written twice
    ("beta=" + ",".join(str(k) for k in range(1, len(COLORS) + 2)), f"at most {len(COLORS)}"),
    ("beta=0.1", "at least two values"),
])
def test_bad_sweeps_are_refused(capsys, here, sweep, needle):
    line = refused(capsys, "plot", "kto" if sweep.startswith("arm") else "dpo", "--sweep", sweep, naming="--sweep")
    assert needle in line and list(here.iterdir()) == []


def test_the_python_sweep_names_its_argument():
    from lossviz.plots import request

    with pytest.raises(LossvizError, match=r"^sweep repeats beta=0.1"):
        request("dpo", ("beta", [0.1, 0.1]))
    with pytest.raises(LossvizError, match=rf"^sweep has {len(COLORS) + 1} values"):
        request("dpo", ("beta", [k + 1.0 for k in range(len(COLORS) + 1)]))
    with pytest.raises(LossvizError, match=r"^x_range must be finite"):
        request("dpo", None, (float("-inf"), 1.0))
    assert len(request("dpo", ("beta", [k + 1.0 for k in range(len(COLORS))])).param_sets) == len(COLORS)
