"""From a clone, ``python -m examples.dropout_experiments`` runs ``minigrad/chapter/dropout_experiments.py``.

Installed, the same command is ``minigrad-dropout-experiments`` or ``python -m minigrad.chapter.dropout_experiments``.
"""

import sys

from minigrad.chapter.dropout_experiments import main

if __name__ == "__main__":
    sys.exit(main())
