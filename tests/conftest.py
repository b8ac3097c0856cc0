import os
import sys

# the test helpers (references.py, cases.py) import each other by module name
sys.path.insert(0, os.path.dirname(__file__))

import pytest


def _memoise_simplify():
    """One ``sympy.simplify`` per distinct expression for the whole test session.

    The same entry is derived at its defaults by many tests (derive in every format, the constants
    notes, the README tables, the explorers, the figures), and simplify is most of a derivation's
    time. simplify is a pure function of its arguments (sympy expressions are immutable and compare
    by value), so handing back the result it gave for an equal call changes no value any test sees;
    a call whose arguments cannot be hashed goes to sympy as before. ``Basic.simplify`` and
    ``Matrix.simplify`` import the function from its module at each call, so they share the memo.
    """
    import importlib

    import sympy

    module = importlib.import_module("sympy.simplify.simplify")
    original = module.simplify
    if getattr(original, "_memo", None) is not None:
        return
    memo = {}

    def simplify(expr, *args, **kwargs):
        try:
            key = (type(expr), expr, args, tuple(sorted(kwargs.items())))
            hit = memo.get(key)
        except TypeError:  # unhashable arguments
            return original(expr, *args, **kwargs)
        if hit is None:
            hit = memo[key] = original(expr, *args, **kwargs)
        return hit

    simplify.__doc__, simplify.__wrapped__, simplify._memo = original.__doc__, original, memo
    module.simplify = simplify
    importlib.import_module("sympy.simplify").simplify = simplify
    sympy.simplify = simplify


_memoise_simplify()


@pytest.fixture(autouse=True, scope="session")
def _private_figure_cache(tmp_path_factory):
    """The figure cache of `lossviz plot` goes to a temporary folder, never the user's ~/.cache."""
    os.environ["LOSSVIZ_CACHE_DIR"] = str(tmp_path_factory.mktemp("lossviz-cache"))
    yield
