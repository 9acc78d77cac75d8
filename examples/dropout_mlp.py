"""From a clone, ``python -m examples.dropout_mlp`` runs the code in ``minigrad/chapter/dropout_mlp.py``.

Installed, the same command is ``minigrad-dropout-mlp`` or ``python -m minigrad.chapter.dropout_mlp``.
"""

import sys

from minigrad.chapter.dropout_mlp import main

if __name__ == "__main__":
    sys.exit(main())
