"""The fast path, in a wing of its own: the chapter's training step planned ahead, and a CUDA-graph recorder.

Nothing in the lesson (``ops``, ``nn``, ``optim``, ``train``'s eager loop) depends on this package; ``Trainer``
runs it by default where the model fits and the eager ops otherwise (or when asked, ``Trainer(eager=True)``).

- ``plan``: the planned training and evaluation steps (``PlannedStep``, ``PlannedEval``) and the rules for
  what they handle (``plan_problem``, ``loader_problem``);
- ``training``: ``PlannedTraining``, the epochs and evaluations ``Trainer`` runs with them;
- ``graphs``: ``RecordedStep``, which records any step as a CUDA graph and replays it, knowing nothing of
  training;
- ``gemm``: the float32 matrix product a CUDA graph can record (capture forbids cuBLAS through CuPy).
"""

from .graphs import GraphMismatch, RecordedStep
from .plan import PlannedEval, PlannedStep, loader_problem, plan_problem
from .training import PlannedTraining, PlanProblem

__all__ = [
    "GraphMismatch",
    "PlanProblem",
    "PlannedEval",
    "PlannedStep",
    "PlannedTraining",
    "RecordedStep",
    "loader_problem",
    "plan_problem",
]
