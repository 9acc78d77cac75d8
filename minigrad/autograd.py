"""The reverse-mode autograd engine: grad mode, and backward through the recorded graph.

Every op (``ops.py``) is a :class:`~minigrad.tensor.Function` with ``forward`` and ``backward``
side by side. Run on Tensors in grad mode, an op links its output to itself (``output.grad_fn``)
and itself to its inputs (``fn.inputs``): those links are the graph.

:func:`backward` walks the graph in reverse topological order. Each op receives dL/d(output) and
returns dL/d(input) for each input (the chain rule, one link at a time); gradients of a tensor used
twice are added. Leaves (tensors made by the user, such as parameters) keep the sum in ``.grad``,
an array of their own in their own dtype. The graph is freed as it is consumed.

The engine knows tensors only by their attributes (``data``, ``grad``, ``grad_fn``,
``requires_grad``), so it imports nothing from ``_tensor.py``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._tensor import Tensor
    from .backend import Array

# ---------------------------------------------------------------------------------------
# Modes: whether ops record a graph (per thread), and whether checks that read values run.


class _GradMode(threading.local):
    """Whether ops record the graph, per thread as in PyTorch: a new thread starts with it on."""

    enabled = True


_grad_mode = _GradMode()


def is_grad_enabled() -> bool:
    """True when ops in this thread record the graph that backward() needs."""
    return _grad_mode.enabled


class set_grad_enabled:  # noqa: N801 (PyTorch's name; it is a class so that it works three ways)
    """Turn graph recording on or off in this thread: at once as a call (``set_grad_enabled(False)``), for a
    block as a context manager (restored on exit), or for a function as a decorator."""

    def __init__(self, mode: bool) -> None:
        if not isinstance(mode, bool):
            raise TypeError(f"set_grad_enabled(mode): mode must be True or False, got {mode!r}")
        self.previous = _grad_mode.enabled
        self.mode = mode
        _grad_mode.enabled = mode

    def __enter__(self):
        _grad_mode.enabled = self.mode  # (set again: the object may be entered long after it was made)
        return self

    def __exit__(self, *exc_info):
        _grad_mode.enabled = self.previous

    def __call__(self, function):
        _grad_mode.enabled = self.previous  # used as a decorator: the call above changed nothing for good
        return _run_with_grad_mode(function, self.mode)


class _GradModeBlock:
    """``no_grad`` and ``enable_grad``: a context manager, a decorator ``@no_grad()``, or a bare ``@no_grad``."""

    mode: bool | None = None

    def __new__(cls, function=None):
        if function is not None:  # @no_grad without parentheses: Python passes the function
            if not callable(function):
                raise TypeError(f"{cls.__name__}() takes no arguments (or decorates a function), got {function!r}")
            return _run_with_grad_mode(function, cls.mode)
        return super().__new__(cls)

    def __enter__(self):
        self.previous = _grad_mode.enabled
        _grad_mode.enabled = self.mode

    def __exit__(self, *exc_info):
        _grad_mode.enabled = self.previous

    def __call__(self, function):
        return _run_with_grad_mode(function, self.mode)


def _run_with_grad_mode(function, mode):
    @functools.wraps(function)
    def run(*args, **kwargs):
        previous = _grad_mode.enabled
        _grad_mode.enabled = mode
        try:
            return function(*args, **kwargs)
        finally:
            _grad_mode.enabled = previous

    return run


class no_grad(_GradModeBlock):  # noqa: N801 (PyTorch's name)
    """No graph is recorded inside (this thread only): for evaluation and updates. Also a decorator."""

    mode = False


class enable_grad(_GradModeBlock):  # noqa: N801 (PyTorch's name)
    """The graph is recorded inside, even within ``no_grad``. Also a decorator."""

    mode = True


_value_checks = True


def value_checks_enabled() -> bool:
    """True when entry points check input values, not only shapes and dtypes (see set_value_checks)."""
    return _value_checks


def set_value_checks(enabled: bool) -> bool:
    """Turn on or off the checks that must read an array's values (cross_entropy's labels in [0, C)).

    On by default, on both devices. Reading values from a GPU waits for it, once per call: turn them
    off for speed on a GPU once the data is known to be good. Returns the previous setting.
    """
    global _value_checks
    previous, _value_checks = _value_checks, bool(enabled)
    return previous


# In-place changes (x += 1, an optimizer's step) are counted by a clock. An op notes the time it ran;
# a tensor's array notes the time it last changed, in a Version that the tensor shares with every view of it
# (x[0], x.reshape(...), x.T, x.detach()): a change through any of them is a change of all (PyTorch's shared
# version counter). Backward refuses an op whose input, or whose saved output, changed after it ran.
_clock = 0


class Version:
    """When an array (and every view of it) was last changed in place: a value of the clock, 0 for never."""

    __slots__ = ("changed_at",)

    def __init__(self) -> None:
        self.changed_at = 0


def mark_changed_in_place(tensor: Tensor) -> None:
    """Record that ``tensor``'s array was just changed in place: ops that used it, or a view of it, may not
    backward."""
    global _clock
    _clock += 1
    tensor._version.changed_at = _clock


def _check_unmodified(fn):
    """Refuse to run ``fn.backward`` when an input (or the output it saved) was changed in place after ``fn`` ran."""
    if fn.ran_at == _clock:  # nothing at all changed in place since: the usual case, one comparison
        return
    for position, tensor in enumerate(fn.inputs):
        if tensor._version.changed_at > fn.ran_at:
            _refuse(fn, f"input {position} (shape {tensor.shape})")
    if fn.saved_output_version is not None and fn.saved_output_version.changed_at > fn.ran_at:
        _refuse(fn, "its output, which it saved for backward,")


def _refuse(fn, what):
    raise RuntimeError(
        f"{type(fn).__name__}: {what} was modified in place (directly or through a view) after the "
        f"op used it, so backward would use the new values. Modify a copy (y = x + 1), or do the "
        f"in-place update after backward()"
    )


# ---------------------------------------------------------------------------------------
# Backward


def unbroadcast(grad: Array, shape: tuple[int, ...], op_name: str = "an op") -> Array:
    """Sum ``grad`` down to ``shape``: the adjoint of NumPy broadcasting.

    Broadcasting prepends axes and stretches axes of length 1; their gradient is the sum over
    the copies. Axes are matched from the right, as NumPy does, so a ``(256,)`` bias against an
    ``(N, 256)`` batch sums over the batch axis. A gradient that ``shape`` does not broadcast to
    is a bug in ``op_name``'s backward: it is refused, never reshaped into place.
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0 or any(n != 1 and n != g for n, g in zip(shape, grad.shape[extra:])):
        raise RuntimeError(
            f"{op_name}.backward returned a gradient of shape {grad.shape} for an input of shape "
            f"{shape}: the input does not broadcast to it (a bug in {op_name}.backward)"
        )
    stretched = tuple(extra + i for i, n in enumerate(shape) if n == 1 and grad.shape[extra + i] != 1)
    grad = grad.sum(axis=tuple(range(extra)) + stretched, keepdims=True)
    return grad.reshape(shape)


def topological_order(root: Tensor) -> list[Tensor]:
    """Every tensor that ``root`` depends on through ops that need grad, each after its inputs.

    An iterative depth-first search (an explicit stack, no recursion, so a 10,000-op chain
    works): a tensor is appended once all its inputs are. backward() walks the list reversed.
    Tensors are tracked by ``id``: ``==`` on tensors compares their values.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        fn = node.grad_fn
        if fn is not None:
            if fn.inputs is None:
                raise RuntimeError(
                    "backward() through a graph that was already freed: pass "
                    "retain_graph=True to the first backward() to go through it twice"
                )
            stack.extend((parent, False) for parent in fn.inputs if parent.requires_grad and id(parent) not in visited)
    return order


def backward(
    root: Tensor,
    grad: Array,
    grad_is_shared: bool,
    retain_graph: bool = False,
    hook: Callable[[Tensor, Array], None] | None = None,
) -> None:
    """Add d(root)/d(leaf) to ``leaf.grad`` for every leaf that requires grad (``Tensor.backward`` checks the args).

    ``grad`` is dL/d(root), an array of root's shape and dtype; ``grad_is_shared`` says whether the caller
    may still hold it (then no leaf keeps it as its own ``.grad``). ``hook(tensor, grad)``, if given, sees
    each tensor's complete gradient in the order the engine visits them.
    """
    # Gradients still being summed, keyed by id(tensor) (a tensor's == compares values, so never by tensor).
    # Each comes with a flag: True when the array may be held elsewhere too (the caller's array, or one an
    # op handed to more than one input, as Add does), so that a leaf must keep a copy, never that array.
    pending = {id(root): (grad, grad_is_shared)}
    for node in reversed(topological_order(root)):
        grad, shared = pending.pop(id(node))
        if hook is not None:
            hook(node, grad)
        fn = node.grad_fn
        if fn is not None and node.retains_grad:  # retain_grad(): a non-leaf keeps a copy of its gradient too
            node.grad = grad.copy() if node.grad is None else node.grad + grad
        if fn is None:  # a leaf: keep the gradient, in an array of its own
            if node.grad is None:
                node.grad = grad.copy() if shared or grad.base is not None else grad
            else:
                node.grad = node.grad + grad
            continue
        _check_unmodified(fn)
        for parent, parent_grad in zip(fn.inputs, fn.backward(grad)):
            if parent_grad is None or not parent.requires_grad:
                continue
            # dL/d(parent): summed down to the parent's shape, in the parent's dtype (as PyTorch casts).
            if parent_grad.shape != parent.data.shape:
                parent_grad = unbroadcast(parent_grad, parent.data.shape, type(fn).__name__)
            parent_grad = parent_grad.astype(parent.data.dtype, copy=False)
            if id(parent) in pending:  # "+" makes a new array: never "+=" into one another tensor may hold
                pending[id(parent)] = (pending[id(parent)][0] + parent_grad, False)
            else:
                pending[id(parent)] = (parent_grad, parent_grad is grad)
        if not retain_graph:
            fn.release()
