import os
import sys

# the test helpers (references.py, cases.py) import each other by module name
sys.path.insert(0, os.path.dirname(__file__))
