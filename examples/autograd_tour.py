"""From a clone, ``python -m examples.autograd_tour`` runs the code in ``minigrad/chapter/autograd_tour.py``.

Installed, the same command is ``minigrad-autograd-tour`` or ``python -m minigrad.chapter.autograd_tour``.
"""

import sys

from minigrad.chapter.autograd_tour import main

if __name__ == "__main__":
    sys.exit(main())
