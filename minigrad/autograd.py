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
import contextlib

# ---------------------------------------------------------------------------------------
# Modes: whether ops record a graph, and whether checks that read values run.

_grad_enabled = True


def is_grad_enabled():
    """True when ops record the graph that backward() needs."""
    return _grad_enabled


@contextlib.contextmanager
def no_grad():
    """Context manager (and decorator) in which no graph is recorded: for evaluation and updates."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


_value_checks = True


def value_checks_enabled():
    """True when entry points check input values, not only shapes and dtypes (see set_value_checks)."""
    return _value_checks


def set_value_checks(enabled):
    """Turn on or off the checks that must read an array's values (cross_entropy's labels in [0, C)).

    On by default, on both devices. Reading values from a GPU waits for it, once per call: turn them
    off for speed on a GPU once the data is known to be good. Returns the previous setting.
    """
    global _value_checks
    previous, _value_checks = _value_checks, bool(enabled)
    return previous


# In-place changes (x += 1, an optimizer's step) are counted by a clock. An op notes the time it ran;
# a tensor notes the time it last changed. Backward refuses an op whose input changed after it ran,
# since the op saved that input's array (PyTorch's version counters do the same job).
_clock = 0


def mark_changed_in_place(tensor):
    """Record that ``tensor``'s array was just changed in place (ops that used it before may not backward)."""
    global _clock
    _clock += 1
    tensor._changed_at = _clock


def _check_unmodified(fn):
    """Refuse to run ``fn.backward`` when an input was changed in place after ``fn`` used it."""
    if fn.ran_at == _clock:  # nothing at all changed in place since: the usual case, one comparison
        return
    for position, tensor in enumerate(fn.inputs):
        if tensor._changed_at > fn.ran_at:
            raise RuntimeError(f"{type(fn).__name__}: input {position} (shape {tensor.shape}) was modified in place "
                               f"after the op used it, so backward would use the new values. Modify a copy "
                               f"(y = x + 1), or do the in-place update after backward()")


# ---------------------------------------------------------------------------------------
# Backward

def unbroadcast(grad, shape, op_name="an op"):
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
        raise RuntimeError(f"{op_name}.backward returned a gradient of shape {grad.shape} for an input of shape "
                           f"{shape}: the input does not broadcast to it (a bug in {op_name}.backward)")
    stretched = tuple(extra + i for i, n in enumerate(shape) if n == 1 and grad.shape[extra + i] != 1)
    grad = grad.sum(axis=tuple(range(extra)) + stretched, keepdims=True)
    return grad.reshape(shape)


def topological_order(root):
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
                raise RuntimeError("backward() through a graph that was already freed: pass "
                                   "retain_graph=True to the first backward() to go through it twice")
            stack.extend((parent, False) for parent in fn.inputs
                         if parent.requires_grad and id(parent) not in visited)
    return order


def backward(root, grad, grad_is_shared, retain_graph=False, hook=None):
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
