"""Section 4.6 of *Dive into Deep Learning*, "Dropout", as programs: the lesson's code, installed with minigrad.

- ``model``: the chapter's MLP and settings, stated once, with ``dropout_layer``, ``ScratchMLP`` (section
  4.6.4) and ``concise_mlp`` (section 4.6.5);
- ``dropout_mlp``: the chapter end to end (``minigrad-dropout-mlp``, or ``python -m minigrad.chapter.dropout_mlp``);
- ``autograd_tour``: the engine step by step on a tiny network (``minigrad-autograd-tour``);
- ``dropout_experiments`` and ``experiments``: the chapter's exercises (``minigrad-dropout-experiments``).

From a clone, ``python -m examples.dropout_mlp`` (and the other two) run the same code.
"""
