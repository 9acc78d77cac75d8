"""The reverse-mode autograd engine: Tensor, Function, and backward.

A :class:`Tensor` wraps a raw NumPy or CuPy array (``.data``). Every differentiable op is a
:class:`Function` subclass in ``functions.py`` with ``forward`` and ``backward`` side by side on
raw arrays. Calling ``SomeOp.apply(a, b)`` runs ``forward`` and, when grad mode is on and an
input requires a gradient, links the result to the op (``result.grad_fn``), and the op to its
inputs (``op.inputs``). Those links are the graph.

``loss.backward()`` walks the graph in reverse topological order. Each op receives
dL/d(output) and returns dL/d(input) for each input (the chain rule, one link at a time);
gradients of a tensor used twice are added. Leaves (tensors made by the user, such as
parameters) keep the sum in ``.grad``. The graph is freed as it is consumed.
"""
import contextlib

from . import backend


# ---------------------------------------------------------------------------------------
# Grad mode: whether ops record a graph.

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


# ---------------------------------------------------------------------------------------
# Function: one differentiable op.

class Function:
    """Base class of every op. Subclasses define, on raw arrays:

    - ``forward(self, *arrays) -> array``: compute the output, saving on ``self`` what backward needs;
    - ``backward(self, grad_output) -> tuple``: given dL/dy, return dL/dx for each input
      (``None`` for an input that needs none), each of the input's shape or broadcastable to it.

    Op parameters that are not tensors (an axis, a probability) go to ``__init__``.
    ``self.needs_input_grad`` (one bool per input) lets a backward skip gradients nobody wants,
    such as dL/dx of the input images: for the chapter's MLP that is a third of all the FLOPs.
    """

    inputs = ()

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, grad_output):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params):
        """Run the op on Tensors and, in grad mode, record it in the graph."""
        if len(inputs) > 1:
            _check_same_device(cls.__name__, inputs)
        fn = cls(**params)
        data = fn.forward(*[t.data for t in inputs])
        if isinstance(data, backend.numpy.generic):  # NumPy gives scalars for 0-d results; keep arrays
            data = backend.numpy.asarray(data)
        output = Tensor(data)
        if _grad_enabled and any(t.requires_grad for t in inputs):
            output.requires_grad = True
            output.grad_fn = fn
            fn.inputs = inputs
            fn.needs_input_grad = tuple(t.requires_grad for t in inputs)
        return output

    def release(self):
        """Drop the inputs and everything saved for backward (called once backward has used them)."""
        self.__dict__.clear()
        self.inputs = None

    def __repr__(self):
        return f"<{type(self).__name__}>"


def _check_same_device(op_name, tensors):
    if backend.cupy is None:  # without CuPy every array is a NumPy array, on the CPU
        return
    kinds = {backend.get_array_module(t.data) for t in tensors}
    if len(kinds) > 1:
        devices = ", ".join(t.device for t in tensors)
        raise ValueError(f"{op_name}: inputs are on different devices ({devices}); move them with .to(device)")


def unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape``: the adjoint of NumPy broadcasting.

    Broadcasting prepends axes and stretches axes of length 1; their gradient is the sum over
    the copies. Axes are matched from the right, as NumPy does, so a ``(256,)`` bias against an
    ``(N, 256)`` batch sums over the batch axis.
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    stretched = tuple(extra + i for i, n in enumerate(shape) if n == 1 and grad.shape[extra + i] != 1)
    grad = grad.sum(axis=tuple(range(extra)) + stretched, keepdims=True)
    return grad.reshape(shape)


# ---------------------------------------------------------------------------------------
# Tensor

class Tensor:
    """An array with an optional gradient and a link to the op that produced it.

    Attributes:
        data: the raw ``numpy.ndarray`` or ``cupy.ndarray``.
        grad: the gradient dL/d(this tensor) as a raw array of the same backend, or None.
            Only leaves (tensors not produced by an op) keep it.
        requires_grad: whether backward() computes a gradient for this tensor.
        grad_fn: the Function that produced this tensor (None for a leaf).
    """

    # Let Tensor's operators win over NumPy's when a raw array is on the left (array * tensor).
    __array_priority__ = 1000

    def __init__(self, data, requires_grad=False):
        self.data = data
        self.grad = None
        self.requires_grad = requires_grad
        self.grad_fn = None

    # --- what the tensor is ---------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def device(self):
        return backend.device_of(self.data)

    @property
    def is_leaf(self):
        return self.grad_fn is None

    def numel(self):
        return self.data.size

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        xp = backend.get_array_module(self.data)
        values = backend.to_numpy(self.data) if xp is not backend.numpy else self.data
        body = backend.numpy.array2string(values, separator=", ", prefix="tensor(", threshold=64)
        notes = [f"shape={self.shape}", f"dtype={self.dtype}", f"device='{self.device}'"]
        if self.grad_fn is not None:
            notes.append(f"grad_fn={type(self.grad_fn).__name__}")
        elif self.requires_grad:
            notes.append("requires_grad=True")
        return f"tensor({body}, {', '.join(notes)})"

    # --- leaving the graph or the device ----------------------------------------------
    def item(self):
        """The value of a one-element tensor as a Python number (synchronises a GPU)."""
        return self.data.item()

    def numpy(self):
        """The values as a NumPy array (a copy from the GPU; the array itself on the CPU)."""
        return backend.to_numpy(self.data)

    def detach(self):
        """The same values, cut from the graph (no copy)."""
        return Tensor(self.data)

    def to(self, device):
        """This tensor on ``device`` (itself when it is already there). The copy is a new leaf."""
        data = backend.to_device(self.data, device)
        if data is self.data:
            return self
        return Tensor(data, requires_grad=self.requires_grad)

    # --- backward ------------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False, hook=None):
        """Compute dself/dleaf for every leaf that requires grad, adding it to ``leaf.grad``.

        Args:
            grad: dL/dself, needed unless self holds a single value (then it is 1).
            retain_graph: keep the graph so backward can run through it again.
            hook: optional ``hook(tensor, grad)``, called once per tensor with its complete
                gradient, in the order the engine visits them (see examples/autograd_tour.py).
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: "
                               "no input of the computation had requires_grad=True")
        xp = backend.get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a single-value tensor, got shape "
                                   f"{self.shape}: reduce it first (e.g. loss.mean()) or pass grad=")
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"backward(): grad has shape {grad.shape}, the tensor has shape {self.shape}")

        grads = {self: grad}  # gradients still to be passed on, keyed by tensor
        for node in reversed(topological_order(self)):
            grad = grads.pop(node)
            if hook is not None:
                hook(node, grad)
            fn = node.grad_fn
            if fn is None:  # a leaf: keep the gradient
                node.grad = grad if node.grad is None else node.grad + grad
                continue
            for parent, parent_grad in zip(fn.inputs, fn.backward(grad)):
                if parent_grad is None or not parent.requires_grad:
                    continue
                parent_grad = unbroadcast(parent_grad, parent.shape)
                # "+" (never "+=") because an op may hand the same array to two inputs (Add).
                grads[parent] = grads[parent] + parent_grad if parent in grads else parent_grad
            if not retain_graph:
                fn.release()

    # --- operators: each calls one Function from functions.py --------------------------
    def _lift(self, other):
        """``other`` as a Tensor; Python numbers take this tensor's dtype (float32 stays float32)."""
        if isinstance(other, Tensor):
            return other
        xp = backend.get_array_module(self.data)
        if isinstance(other, (int, float)) and self.dtype.kind == "f":
            return Tensor(xp.asarray(other, dtype=self.dtype))
        return Tensor(xp.asarray(other))

    def __add__(self, other):
        return ops.Add.apply(self, self._lift(other))

    def __radd__(self, other):
        return ops.Add.apply(self._lift(other), self)

    def __sub__(self, other):
        return ops.Sub.apply(self, self._lift(other))

    def __rsub__(self, other):
        return ops.Sub.apply(self._lift(other), self)

    def __mul__(self, other):
        return ops.Mul.apply(self, self._lift(other))

    def __rmul__(self, other):
        return ops.Mul.apply(self._lift(other), self)

    def __truediv__(self, other):
        return ops.Div.apply(self, self._lift(other))

    def __rtruediv__(self, other):
        return ops.Div.apply(self._lift(other), self)

    def __neg__(self):
        return ops.Neg.apply(self)

    def __pow__(self, exponent):
        if not isinstance(exponent, (int, float)):
            raise TypeError(f"only a number can be an exponent, got {type(exponent).__name__}")
        return ops.Pow.apply(self, exponent=exponent)

    def __matmul__(self, other):
        return ops.MatMul.apply(self, self._lift(other))

    def __rmatmul__(self, other):
        return ops.MatMul.apply(self._lift(other), self)

    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = index.data
        return ops.Index.apply(self, index=index)

    # Comparisons are not differentiable: they give a boolean tensor outside the graph (a mask).
    # (No __eq__: tensors stay hashable, so the engine can key gradients by tensor.)
    def __gt__(self, other):
        return Tensor(self.data > self._lift(other).data)

    def __lt__(self, other):
        return Tensor(self.data < self._lift(other).data)

    def sum(self, axis=None, keepdims=False):
        return ops.Sum.apply(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return ops.Mean.apply(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return ops.Max.apply(self, axis=axis, keepdims=keepdims)

    def argmax(self, axis=None):
        """Indices of the maxima (an integer tensor, never part of the graph)."""
        return Tensor(self.data.argmax(axis=axis))

    def exp(self):
        return ops.Exp.apply(self)

    def log(self):
        return ops.Log.apply(self)

    def relu(self):
        return ops.ReLU.apply(self)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return ops.Reshape.apply(self, shape=shape)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return ops.Transpose.apply(self, axes=axes or None)

    @property
    def T(self):
        return self.transpose()


def topological_order(root):
    """Every tensor that ``root`` depends on through ops that need grad, each after its inputs.

    An iterative depth-first search (an explicit stack, no recursion, so a 10,000-op chain
    works): a tensor is appended once all its inputs are. backward() walks the list reversed.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if node in visited:
            continue
        visited.add(node)
        stack.append((node, True))
        fn = node.grad_fn
        if fn is not None:
            if fn.inputs is None:
                raise RuntimeError("backward() through a graph that was already freed: pass "
                                   "retain_graph=True to the first backward() to go through it twice")
            stack.extend((parent, False) for parent in fn.inputs
                         if parent.requires_grad and parent not in visited)
    return order


from . import functions as ops  # noqa: E402  (the ops subclass Function, defined above)
