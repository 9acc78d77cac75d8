"""From a clone, ``python -m examples.dropout_mlp`` runs ``minigrad/chapter/dropout_mlp.py``, where the code lives.

Installed, the same command is ``minigrad-dropout-mlp`` or ``python -m minigrad.chapter.dropout_mlp``.
"""
import sys

from minigrad.chapter.dropout_mlp import main

if __name__ == "__main__":
    sys.exit(main())
