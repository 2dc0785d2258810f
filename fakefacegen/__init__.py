"""FakeFaceGen's libraries, beneath the commands at the top of the repository (train.py, generate.py, ...).

Here: the command-line machinery (cli), atomic files (files), image grids (grids), where a run's files live
(runs), every training setting (settings), the networks (network), sampling (sampling), the checkpoint layout
(checkpoint), exported generators (export) and the collapse checks (collapse). Beneath: data/, training/,
metrics/, editing/, reports/.

Every command imports this package first, so an older Python stops here with one line rather than a traceback
from a module it lacks (tomllib) or a package that never installed on it. This file stays in syntax that
Python 3.6 reads, so the line is what such a Python shows.
"""
import sys

PYTHON_NEEDED = (3, 11)

if sys.version_info[:2] < PYTHON_NEEDED:
    sys.stderr.write(f"error: FakeFaceGen needs Python 3.11 or newer, and this is Python {sys.version.split()[0]} "
                     f"({sys.executable}): run it with python3.11 or later (make setup PYTHON=python3.11 makes "
                     ".venv with it; remove a .venv made by an older one first)\n")
    sys.exit(2)
