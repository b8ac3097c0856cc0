import os
import sys

# the test helpers (references.py, cases.py) import each other by module name
sys.path.insert(0, os.path.dirname(__file__))

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_figure_cache(tmp_path_factory):
    """The figure cache of `lossviz plot` goes to a temporary folder, never the user's ~/.cache."""
    os.environ["LOSSVIZ_CACHE_DIR"] = str(tmp_path_factory.mktemp("lossviz-cache"))
    yield
