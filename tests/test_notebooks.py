"""The notebooks: generated from make_notebooks.py, committed without outputs, exercises left blank,
and every notebook runs top to bottom both as committed and with the solutions filled in.

The exercise convention is documented at the top of notebooks/make_notebooks.py: an answer line
is exactly ``answer_N = ...  # comment`` and its ``check("<key>", answer_N)`` comes in the same or a
later cell.
"""

import json
import re
from pathlib import Path

import pytest

FOLDER = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))
EXPECTED = ["00_basics", "01_sft_and_distillation", "02_dpo_cdpo_ipo", "03_kto", "04_ppo_policy_and_value",
            "05_reward_models", "06_process_reward_model"]
if (FOLDER / "training_dynamics.py").exists():  # notebook 07's cells live there
    EXPECTED.append("07_training_dynamics")
EXPECTED += ["08_grpo_family", "09_kl_estimators", "10_preference_zoo", "11_distillation"]

ANSWER = re.compile(r"^(answer_\d+) = \.\.\.(\s+#.*)?$")
ANY_ANSWER = re.compile(r"^\s*(answer_\d+)\s*=")
CHECK = re.compile(r"""check\(\s*["']([^"']+)["']\s*,\s*(answer_\d+)\s*\)""")


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def answer_keys(nb) -> dict:
    """{answer name: exercise key}, pairing each blank answer with the first later check of it."""
    cells = code_cells(nb)
    pairs = {}
    for i, cell in enumerate(cells):
        for line in cell.source.splitlines():
            m = ANSWER.match(line)
            if not m:
                continue
            name = m.group(1)
            keys = [key for later in cells[i:] for key, used in CHECK.findall(later.source) if used == name]
            assert keys, f"{name} has no check(\"<key>\", {name}) in its cell or a later one"
            pairs[name] = keys[0]
    return pairs


def with_solutions(cell, keys: dict) -> str:
    """A cell's source with each blank answer replaced by ``solution("<key>")``."""
    return "\n".join(ANSWER.sub(lambda m: f'{m.group(1)} = solution("{keys[m.group(1)]}")', line)
                     for line in cell.source.splitlines())


def has_blank(cell) -> bool:
    return any(ANSWER.match(line) for line in cell.source.splitlines())


def texts(cells) -> str:
    errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, "\n".join(f"{e['ename']}: {e['evalue']}" for e in errors)
    return "\n".join(o.get("text", "") for c in cells for o in c.get("outputs", []))


def read(path):
    import nbformat

    return nbformat.read(path, as_version=4)


def test_the_curriculum_is_complete():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing"


def test_notebooks_match_their_generator():
    """notebooks/make_notebooks.py is the source; the committed files are exactly what it writes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_notebooks", FOLDER / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert sorted(module.NOTEBOOKS) == EXPECTED
    for name, cells in module.NOTEBOOKS.items():
        committed = read(FOLDER / f"{name}.ipynb")
        assert [c.source for c in committed.cells] == [c.source for c in cells], name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercises_are_blank_and_registered(path):
    """Every answer line is a blank `answer_N = ...`, every check names a registered exercise, and no cell holds a solution."""
    from lossviz.teaching import keys

    nb = read(path)
    registered = set(keys())
    for cell in code_cells(nb):
        for line in cell.source.splitlines():
            if ANY_ANSWER.match(line):
                assert ANSWER.match(line), f"{path.stem}: an answer line must be `answer_N = ...  # comment`, got {line!r}"
        assert "solution(" not in cell.source, f"{path.stem}: a cell calls solution(); solutions stay in lossviz"
        for key, _ in CHECK.findall(cell.source):
            assert key in registered, f"{path.stem}: check({key!r}, ...) names no registered exercise"
    checks = [key for c in code_cells(nb) for key, _ in CHECK.findall(c.source)]
    if path.stem != "07_training_dynamics":  # 07's exercises are its module's business
        assert checks, f"{path.stem} has no exercise"
    assert len(answer_keys(nb)) == len(checks), f"{path.stem}: every check needs exactly one blank answer"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_unanswered_then_with_the_solutions(path, tmp_path):
    """As committed (what a student opens) the notebook runs top to bottom without an error, every
    check waits for an answer, and nothing printed above the exercises states an answer. Then, in the same kernel, the exercise cells run again with each blank
    replaced by its solution, and every check prints its tick: the exercises are solvable and proven.
    (One kernel for both passes halves the time; only the exercise cells differ between them.)"""
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell

    nb = read(path)
    cells = code_cells(nb)
    checks = sum(len(CHECK.findall(c.source)) for c in cells)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        text = texts(cells)
        assert text.count("not answered yet") == checks
        assert "✓" not in text and "✗" not in text
        if path.stem != "07_training_dynamics":  # what the cells above the exercises print states no answer
            above = [c for c in nb.cells[:first_exercise(nb)] if c.cell_type == "code"]
            assert not revealing(texts(above), nb)

        keys = answer_keys(nb)
        solved = [new_code_cell("from lossviz.teaching import solution")]
        solved += [new_code_cell(with_solutions(c, keys)) for c in cells if has_blank(c) or CHECK.search(c.source)]
        for cell in solved:
            nb.cells.append(cell)
            client.execute_cell(cell, len(nb.cells) - 1)
    text = texts(solved)
    ticks = [line for line in text.splitlines() if line.startswith("✓")]
    assert len(ticks) == checks, text
    assert "✗" not in text and "not answered yet" not in text


# --- no give-aways: nothing shown above an exercise states its answer ----------------------------------------------

EXERCISED = [p for p in NOTEBOOKS if p.stem != "07_training_dynamics"]  # 07's exercises are its module's business
NUMBER = re.compile(r"(?<![\w.])[-−]?\d+\.\d+(?![\d.eE])")  # not the mantissa of 1.7e-10


def first_exercise(nb) -> int:
    """The index of the first cell holding a blank answer."""
    return next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and has_blank(c))


def revealing(text: str, nb) -> list:
    """The numbers in ``text`` that state a non-integer solution of one of the notebook's exercises, to the
    precision they are written with (0.1345 states 0.13447; 1.39 states log 4 = 1.3863)."""
    from lossviz.teaching import solution

    answers = {key: float(solution(key)) for key in answer_keys(nb).values()}
    found = []
    for written in NUMBER.findall(text):
        shown = float(written.replace("−", "-"))
        digits = len(written.lstrip("-−0.").replace(".", ""))  # significant digits written
        decimals = len(written.split(".")[1])
        for key, value in answers.items():
            exact = f"{value:.10g}"
            short = len(exact.lstrip("-0.").replace(".", "")) <= 2  # an answer like 2.5 counts only when written exactly
            if value == round(value) or (shown != value if short else digits < 3):
                continue
            if abs(shown - value) <= 0.5 * 10 ** -decimals + 1e-12:
                found.append(f"{written} states {key} = {value:.6g}")
    return found


def shown_before_the_exercises(nb) -> str:
    """The markdown above the first exercise, the facts of its explorers at their defaults, and the texts of its figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import lossviz

    shown, figures = [], []
    namespace = {"lossviz": lossviz, "show": figures.append}
    exec("from lossviz.plots import figure", namespace)
    for cell in nb.cells[:first_exercise(nb)]:
        if cell.cell_type == "markdown" and cell.source.startswith("## Exercises"):
            continue  # the questions themselves state their parameters (dual clip's edge is its c)
        if cell.cell_type == "markdown":
            shown.append(cell.source)
        elif cell.source.startswith("lossviz.explore("):
            explorers = eval(cell.source, namespace)
            for explorer in getattr(explorers, "explorers", [explorers]):
                shown += [f"{name} {value}" for name, value in explorer.fact_values().items()]
        elif "show(" in cell.source:
            exec(cell.source, namespace)
    for fig in figures:
        texts = [t.get_text().strip() for t in fig.findobj(matplotlib.text.Text)]
        shown += [t for t in texts if not NUMBER.fullmatch(t)]  # a bare number is a tick label, not a statement
        plt.close(fig)
    return "\n".join(shown)


def test_the_revealing_check_finds_a_stated_answer():
    """The check below would catch the answer written at the usual precisions (and ignores other numbers)."""
    nb = read(FOLDER / "00_basics.ipynb")
    assert revealing("the push falls to 1/5 at x = 1.39", nb) == ["1.39 states basics-1 = 1.38629"]
    assert revealing("x = 1.3863 or 1.701", nb) == ["1.3863 states basics-1 = 1.38629", "1.701 states basics-2 = 1.70141"]
    assert revealing("x = 0: gradient -0.5, loss 0.6931, about 1.4 or 0.05, error 1.39e-17", nb) == []


@pytest.mark.slow
@pytest.mark.parametrize("path", EXERCISED, ids=lambda p: p.stem)
def test_no_markdown_explorer_or_figure_above_an_exercise_states_its_answer(path):
    nb = read(path)
    assert not revealing(shown_before_the_exercises(nb), nb)
