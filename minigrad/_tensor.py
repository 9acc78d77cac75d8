"""Tensor, and Function: the base class of every op.

A :class:`Tensor` wraps a raw NumPy or CuPy array (``.data``). Every differentiable op is a
:class:`Function` subclass in ``ops.py`` with ``forward`` and ``backward`` side by side on raw
arrays. ``SomeOp.apply(a, b)`` runs ``forward`` and, when grad mode is on and an input requires a
gradient, records the op in the graph that ``autograd.backward`` walks.

Method names and meanings follow PyTorch (``transpose(dim0, dim1)``, ``max(dim)`` returning
values and indices, elementwise ``==``); the README lists the few places that differ on purpose.

The file is ``_tensor.py``, as PyTorch's is, because ``minigrad.tensor`` is the factory function.

NOTE: ``_tensor.py`` and ``ops.py`` import each other, as tinygrad's ``tensor.py`` and its ops do:
a Tensor's operators call the ops, and the ops subclass Function. ``ops`` is imported right
below Function, the only name it takes from here, and is used only when an operator runs.
"""

from __future__ import annotations

import builtins
import collections
import operator
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Union

from . import autograd, backend
from .backend import Array

if TYPE_CHECKING:
    import numpy as np

Dims = Union[int, Sequence[int], None]
"""The dimensions a reduction takes: one, several, or None for all (``dim=()`` means all too, as in PyTorch)."""

# ---------------------------------------------------------------------------------------
# Function: one differentiable op.


class Function:
    """Base class of every op. Subclasses define, on raw arrays:

    - ``forward(self, *arrays) -> array``: compute the output, saving on ``self`` what backward needs;
    - ``backward(self, grad_output) -> tuple``: given dL/dy, return dL/dx for each input
      (``None`` for an input that needs none), each of the input's shape or broadcastable to it.
      A backward may hand ``grad_output`` itself (or a view of it) to an input, as Add does;
      every other array it returns must be new.

    Op parameters that are not tensors (an axis, a probability) go to ``__init__``.
    ``self.xp`` is the array module of the inputs (``numpy``, or ``cupy`` on a GPU), decided once per
    op; an op with a CUDA kernel runs it when ``self.xp is cupy``. ``self.needs_input_grad`` (one bool
    per input) lets a backward skip gradients nobody wants, such as dL/dx of the input images: for the
    chapter's MLP that is a third of all the FLOPs. Checks of arguments belong at the public entry
    points (``F.linear``, ``F.cross_entropy``), so that ``forward`` opens with the math.
    """

    inputs: tuple[Tensor, ...] = ()
    needs_input_grad: tuple[bool, ...] = ()
    makes_view = False  # True for ops whose output may be a view of their input (Reshape, Permute, Index)
    saves_output = False  # True for ops whose backward reads their own output (Exp, ReLU, Max)
    saved_output_version: autograd.Version | None = None
    xp: ModuleType  # NumPy or CuPy, set by apply
    ran_at: int  # the in-place clock when forward ran, set by apply when it records

    def forward(self, *arrays: Array) -> Array:
        """Compute the output from raw arrays (NumPy or CuPy), saving on ``self`` what backward needs."""
        raise NotImplementedError

    def backward(self, grad_output: Array) -> tuple[Array | None, ...]:
        """Map dL/d(output) to one dL/d(input) per input (None where ``needs_input_grad`` says none is wanted)."""
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs: Any, **params: Any) -> Tensor:
        """Run the op on Tensors and, in grad mode, record it in the graph."""
        if not all(isinstance(value, Tensor) for value in inputs):
            position, value = next((i, v) for i, v in enumerate(inputs) if not isinstance(v, Tensor))
            raise TypeError(
                f"{cls.__name__}: input {position} must be a minigrad Tensor, got "
                f"{type(value).__name__}; wrap it first: minigrad.tensor(value)"
            )
        if len(inputs) > 1:
            _check_same_device(cls.__name__, inputs)
        fn = cls(**params)
        fn.xp = backend.get_array_module(inputs[0].data)
        record = autograd._grad_mode.enabled and any(t._requires_grad for t in inputs)
        if record:  # before forward, which may skip saving what no gradient will need
            fn.needs_input_grad = tuple(t._requires_grad for t in inputs)
        output = Tensor(fn.forward(*[t.data for t in inputs]))
        if cls.makes_view and output.data.base is not None and fn.xp.may_share_memory(output.data, inputs[0].data):
            output._version = inputs[0]._version  # a view: a change through either is a change of both
        if record:
            output._requires_grad = True
            output.grad_fn = fn
            fn.inputs = inputs
            fn.ran_at = autograd._clock  # backward reads the arrays forward saved (autograd._check_unmodified)
            if cls.saves_output:
                fn.saved_output_version = output._version
        return output

    def release(self) -> None:
        """Drop the inputs and everything saved for backward (called once backward has used them)."""
        self.__dict__.clear()
        self.inputs = None  # type: ignore[assignment]  # freed: autograd.topological_order refuses to go through it

    def __repr__(self):
        return f"<{type(self).__name__}>"


def _check_same_device(op_name, tensors):
    if backend.cupy is None:  # without CuPy every array is a NumPy array, on the CPU
        return
    kinds = {backend.get_array_module(t.data) for t in tensors}
    if len(kinds) > 1:
        devices = ", ".join(t.device for t in tensors)
        raise ValueError(f"{op_name}: inputs are on different devices ({devices}); move them with .to(device)")


from . import ops  # noqa: E402  (below Function, which the ops subclass: see the NOTE above)


def _dims(dim, axis, method, ndim):
    """A reduction's ``dim`` (also accepted under NumPy's name ``axis``, as PyTorch does), checked and non-negative:
    None (every dimension), an int or a tuple of ints. As in PyTorch, ``dim=()`` reduces every dimension, and a
    0-d tensor takes dim 0 or -1 (reducing it changes nothing)."""
    if axis is not None:
        if dim is not None:
            raise TypeError(f"{method}() got both dim and axis: they are the same argument, give one")
        dim = axis
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
        return None
    if isinstance(dim, (tuple, list)):
        dims = tuple(_normalize_dim(d, ndim, method) for d in dim)
        if len(set(dims)) != len(dims):
            raise ValueError(f"{method}(): dim {tuple(dim)} names a dimension twice")
        return None if ndim == 0 else dims
    dim = _normalize_dim(dim, ndim, method)
    return None if ndim == 0 else dim


def _keepdim(keepdim, keepdims):
    """PyTorch's ``keepdim``, also accepted under NumPy's name ``keepdims``."""
    return bool(keepdim or keepdims)


def _normalize_dim(dim, ndim, method):
    """``dim`` as an index in [0, ndim), counting negative dims from the end; an IndexError when out of range."""
    size = max(ndim, 1)
    try:
        dim = operator.index(dim)
    except TypeError:
        raise TypeError(f"{method}(): a dimension must be an integer, got {type(dim).__name__}") from None
    if not -size <= dim < size:
        raise IndexError(
            f"{method}(): dimension {dim} is out of range for a tensor with {ndim} dimensions "
            f"(expected one in [{-size}, {size - 1}])"
        )
    return dim % size


MaxMin = collections.namedtuple("MaxMin", ["values", "indices"])
MaxMin.__doc__ = "What max(dim) and min(dim) return, as in PyTorch: the values, and the indices they were taken from."


# ---------------------------------------------------------------------------------------
# Tensor


class Tensor:
    """An array with an optional gradient and a link to the op that produced it.

    Attributes:
        data: the raw ``numpy.ndarray`` or ``cupy.ndarray``.
        grad: the gradient dL/d(this tensor) as a raw array of the same backend, shape and dtype,
            or None. Only leaves (tensors not produced by an op) keep it; each has its own array.
        requires_grad: whether backward() computes a gradient for this tensor.
        grad_fn: the Function that produced this tensor (None for a leaf).

    ``Tensor(data)`` takes a NumPy or CuPy array (kept as it is, no copy), a Tensor (sharing its
    array, as ``nn.Parameter(tensor)`` does in PyTorch) or a list of numbers (float32, as
    ``torch.Tensor`` makes). ``minigrad.tensor(...)`` copies and infers the dtype.
    """

    # Let Tensor's operators win over NumPy's when a raw array is on the left (array * tensor).
    __array_priority__ = 1000

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        # when the array was last changed in place, shared with every view of it (autograd.Version)
        self._version: autograd.Version = data._version if isinstance(data, Tensor) else autograd.Version()
        if not isinstance(data, backend.ARRAY_TYPES):
            data = _as_array(data)
        self.data: Array = data
        self.grad: Array = None  # an array once backward gives one
        self.grad_fn: Function | None = None
        self._requires_grad = False
        if requires_grad:
            self.requires_grad_()

    # PyTorch methods minigrad leaves out, each with what to write instead (any other missing name is a plain
    # AttributeError).
    _INSTEAD = {
        "view": "reshape(...)",
        "flatten": "reshape(len(x), -1) or reshape(-1)",
        "unsqueeze": "reshape(...) with a 1 where the new axis goes",
        "squeeze": "reshape(...)",
        "clone": "x * 1 (a copy in the graph) or mg.tensor(x) (a copy that is a new leaf)",
        "cpu": "to('cpu')",
        "cuda": "to('cuda')",
        "zero_": "`with mg.no_grad(): x *= 0`",
        "add_": "`with mg.no_grad(): x += y`",
        "mul_": "`with mg.no_grad(): x *= y`",
        "copy_": "`x.data[...] = y.data` under no_grad",
        "view_as": "reshape(other.shape)",
    }

    def __getattr__(self, name):
        if name in Tensor._INSTEAD:
            raise AttributeError(
                f"minigrad's Tensor has no {name}() (a PyTorch method left out); use {Tensor._INSTEAD[name]}"
            )
        raise AttributeError(f"'Tensor' object has no attribute {name!r}")

    # --- what the tensor is ---------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def device(self) -> str:
        return backend.device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    def size(self, dim: int | None = None) -> Any:
        """The shape (PyTorch's ``size()``), or the length of one dimension."""
        return self.shape if dim is None else self.shape[_normalize_dim(dim, self.ndim, "size")]

    def dim(self) -> int:
        """The number of dimensions (PyTorch's ``dim()``; NumPy's ``ndim``)."""
        return self.ndim

    def numel(self) -> int:
        return self.data.size

    @property
    def requires_grad(self) -> bool:
        """Whether backward() computes a gradient for this tensor. Settable on leaves, floating-point ones only."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, requires_grad: bool) -> None:
        if not isinstance(requires_grad, (bool, backend.numpy.bool_)):
            raise TypeError(f"requires_grad must be True or False, got {requires_grad!r}")
        if requires_grad and self.dtype.kind != "f":
            raise ValueError(f"only floating-point tensors can require grad, got dtype {self.dtype}")
        if self.grad_fn is not None and not requires_grad:
            raise RuntimeError(
                "requires_grad can only be switched off on a leaf (a tensor made by the user): for a "
                "result used outside the graph, use y.detach()"
            )
        self._requires_grad = bool(requires_grad)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Set ``requires_grad`` in place (floating-point tensors only); returns self."""
        self.requires_grad = requires_grad
        return self

    def retain_grad(self) -> None:
        """Keep this non-leaf tensor's gradient in ``.grad`` during backward (leaves always keep theirs)."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad() on a tensor that does not require grad: there is no gradient to keep")
        self.retains_grad = True
        return None

    retains_grad = False

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return len(self.data)

    def __iter__(self) -> Iterator[Tensor]:
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
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
    def item(self) -> Any:
        """The value of a one-element tensor as a Python number (synchronises a GPU)."""
        if self.data.size != 1:
            raise ValueError(f"item(): only a one-element tensor has a single value; this one has shape {self.shape}")
        return self.data.item()

    def _scalar(self, convert):
        if self.data.size != 1:
            raise ValueError(f"only one-element tensors can be converted to Python scalars, got shape {self.shape}")
        return convert(self.data.item())

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise RuntimeError(
                f"the truth value of a tensor with {self.data.size} values is ambiguous: use .any() or .all()"
            )
        return bool(self.data.item())

    def __float__(self) -> builtins.float:
        return self._scalar(float)

    def __int__(self) -> int:
        return self._scalar(int)

    def __index__(self) -> int:
        if self.dtype.kind not in "iub" or self.data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return operator.index(self.data.item())

    def __format__(self, spec: str) -> str:
        """``f"{loss:.3f}"``: one-element tensors format as their value; others only as text."""
        if self.data.size == 1 and (spec or self.ndim == 0):
            return format(self.data.item(), spec)
        if spec:
            raise TypeError(f"format spec {spec!r} needs a one-element tensor, got shape {self.shape}")
        return str(self)

    def __array__(self, dtype=None, copy=None):
        """NumPy's view of a CPU tensor (``numpy.asarray(t)``); a GPU tensor must be copied with ``.numpy()``."""
        if backend.get_array_module(self.data) is not backend.numpy:
            raise TypeError(f"a tensor on {self.device} cannot be converted to NumPy implicitly: use .numpy()")
        array = self.data if dtype is None else self.data.astype(dtype, copy=False)
        return array.copy() if copy else array

    def numpy(self) -> np.ndarray:
        """The values as a NumPy array (a copy from the GPU; the array itself on the CPU)."""
        return backend.to_numpy(self.data)

    def tolist(self) -> Any:
        """The values as (nested lists of) Python numbers; a 0-d tensor gives a number, as in PyTorch."""
        return self.numpy().tolist()

    def detach(self) -> Tensor:
        """The same values, cut from the graph (no copy: it shares this tensor's array and its version)."""
        return Tensor(self)

    def float(self) -> Tensor:
        """This tensor in float32 (itself when it already is), in the graph: the gradient comes back in its dtype."""
        return self if self.dtype == backend.numpy.float32 else ops.Cast.apply(self, dtype=backend.numpy.float32)

    def double(self) -> Tensor:
        """This tensor in float64 (itself when it already is), in the graph."""
        return self if self.dtype == backend.numpy.float64 else ops.Cast.apply(self, dtype=backend.numpy.float64)

    def to(self, device: str | None) -> Tensor:
        """This tensor on ``device`` (itself when it is already there). The copy is a new leaf."""
        data = backend.to_device(self.data, device)
        if data is self.data:
            return self
        return Tensor(data, requires_grad=self.requires_grad)

    # --- backward ------------------------------------------------------------------
    def backward(
        self, grad: Any = None, retain_graph: bool = False, hook: Callable[[Tensor, Array], None] | None = None
    ) -> None:
        """Compute dself/dleaf for every leaf that requires grad, adding it to ``leaf.grad``.

        Args:
            grad: dL/dself, needed unless self holds a single value (then it is 1).
            retain_graph: keep the graph so backward can run through it again.
            hook: optional ``hook(tensor, grad)``, called once per tensor with its complete
                gradient, in the order the engine visits them (see minigrad/chapter/autograd_tour.py).
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: no input of the computation had requires_grad=True"
            )
        xp = backend.get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a single-value tensor, got shape "
                    f"{self.shape}: reduce it first (e.g. loss.mean()) or pass grad="
                )
            autograd.backward(self, xp.ones_like(self.data), False, retain_graph, hook)
            return
        grad = xp.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"backward(): grad has shape {grad.shape}, the tensor has shape {self.shape}")
        autograd.backward(self, grad, True, retain_graph, hook)

    # --- operators: each calls one Function from ops.py --------------------------
    def _lift(self, other):
        """``other`` as a Tensor. Python numbers are weak, as in PyTorch: a float takes this tensor's dtype when it
        is floating point (float32 stays float32) and float32 otherwise; an int takes a floating dtype too."""
        if isinstance(other, Tensor):
            return other
        xp = backend.get_array_module(self.data)
        if isinstance(other, (int, float)) and self.dtype.kind == "f":
            return Tensor(xp.asarray(other, dtype=self.dtype))
        if isinstance(other, float):
            return Tensor(xp.asarray(other, dtype=xp.float32))
        return Tensor(xp.asarray(other))

    def _operands(self, other, reflected=False):
        """The two operands of a binary op, promoted as PyTorch does: a 0-d tensor beside a tensor with dimensions
        counts like a number, so float32 times a 0-d float64 tensor stays float32 (NumPy would give float64). Only
        a 0-d tensor of a higher category (bool < integer < floating) decides the dtype, as in PyTorch."""
        other = self._lift(other)
        a, b = (other, self) if reflected else (self, other)
        if a.data.dtype != b.data.dtype and (a.data.ndim == 0) != (b.data.ndim == 0):
            scalar, dimensioned = (a, b) if a.ndim == 0 else (b, a)
            if _category(scalar.dtype) <= _category(dimensioned.dtype):
                scalar = ops.Cast.apply(scalar, dtype=dimensioned.dtype)
            else:  # the 0-d tensor's category wins, and with it its dtype (int64 * a 0-d float32: float32)
                dimensioned = ops.Cast.apply(dimensioned, dtype=scalar.dtype)
            a, b = (scalar, dimensioned) if a.ndim == 0 else (dimensioned, scalar)
        return a, b

    def __add__(self, other: Any) -> Tensor:
        return ops.Add.apply(*self._operands(other))

    def __radd__(self, other: Any) -> Tensor:
        return ops.Add.apply(*self._operands(other, reflected=True))

    def __sub__(self, other: Any) -> Tensor:
        return ops.Sub.apply(*self._operands(other))

    def __rsub__(self, other: Any) -> Tensor:
        return ops.Sub.apply(*self._operands(other, reflected=True))

    def __mul__(self, other: Any) -> Tensor:
        return ops.Mul.apply(*self._operands(other))

    def __rmul__(self, other: Any) -> Tensor:
        return ops.Mul.apply(*self._operands(other, reflected=True))

    def __truediv__(self, other: Any) -> Tensor:
        return ops.Div.apply(*self._operands(other))

    def __rtruediv__(self, other: Any) -> Tensor:
        return ops.Div.apply(*self._operands(other, reflected=True))

    def __neg__(self) -> Tensor:
        return ops.Neg.apply(self)

    def __pow__(self, exponent: builtins.float) -> Tensor:
        if not isinstance(exponent, (int, float)):
            raise TypeError(f"only a number can be an exponent, got {type(exponent).__name__}")
        return ops.Pow.apply(self, exponent=exponent)

    def __matmul__(self, other: Any) -> Tensor:
        return _matmul(self, self._lift(other))

    def __rmatmul__(self, other: Any) -> Tensor:
        return _matmul(self._lift(other), self)

    def __getitem__(self, index: Any) -> Tensor:
        return ops.Index.apply(self, index=_raw_index(index))

    # In-place arithmetic (x += y) changes this tensor's array, as in PyTorch: the way to update parameters
    # by hand is `with mg.no_grad(): w -= lr * w.grad`. In grad mode it is refused for a tensor that requires
    # grad (the graph would need the old values); ops that used this tensor before notice (Function.apply).
    def _in_place(self, other, ufunc, symbol):
        if autograd._grad_mode.enabled and self.requires_grad:
            raise RuntimeError(
                f"in-place {symbol} on a tensor that requires grad, in grad mode: for an update, "
                f"wrap it in `with mg.no_grad():`; in a computation, write y = x {symbol[0]} ..."
            )
        ufunc(self.data, self._lift(other).data, out=self.data)
        autograd.mark_changed_in_place(self)
        return self

    def __iadd__(self, other: Any) -> Tensor:
        return self._in_place(other, backend.get_array_module(self.data).add, "+=")

    def __isub__(self, other: Any) -> Tensor:
        return self._in_place(other, backend.get_array_module(self.data).subtract, "-=")

    def __imul__(self, other: Any) -> Tensor:
        return self._in_place(other, backend.get_array_module(self.data).multiply, "*=")

    def __itruediv__(self, other: Any) -> Tensor:
        return self._in_place(other, backend.get_array_module(self.data).true_divide, "/=")

    # Comparisons are elementwise, as in PyTorch and NumPy, and give a boolean tensor outside the graph
    # (a mask). Tensors still hash by identity, so they can be dict keys and set members.
    def _compare(self, other, compare):
        if not isinstance(other, (Tensor, int, float, list, tuple) + backend.ARRAY_TYPES + (backend.numpy.generic,)):
            return NotImplemented  # t == None is False, as in PyTorch
        return Tensor(compare(self.data, self._lift(other).data))

    def __eq__(self, other: object) -> Tensor:  # type: ignore[override]  # elementwise, as in PyTorch
        return self._compare(other, operator.eq)

    def __ne__(self, other: object) -> Tensor:  # type: ignore[override]  # elementwise, as in PyTorch
        return self._compare(other, operator.ne)

    def __gt__(self, other: Any) -> Tensor:
        return self._compare(other, operator.gt)

    def __ge__(self, other: Any) -> Tensor:
        return self._compare(other, operator.ge)

    def __lt__(self, other: Any) -> Tensor:
        return self._compare(other, operator.lt)

    def __le__(self, other: Any) -> Tensor:
        return self._compare(other, operator.le)

    __hash__ = object.__hash__

    def any(self, dim: Dims = None, keepdim: bool = False) -> Tensor:
        """Whether any element is nonzero (over ``dim``, or all): a boolean tensor outside the graph."""
        return Tensor(self.data.any(axis=dim, keepdims=keepdim))

    def all(self, dim: Dims = None, keepdim: bool = False) -> Tensor:
        """Whether every element is nonzero (over ``dim``, or all): a boolean tensor outside the graph."""
        return Tensor(self.data.all(axis=dim, keepdims=keepdim))

    # --- reductions: dim (or NumPy's axis) is an int, a tuple of ints or None (all) ----------
    def sum(self, dim: Dims = None, keepdim: bool = False, *, axis: Dims = None, keepdims: bool = False) -> Tensor:
        return ops.Sum.apply(self, axis=_dims(dim, axis, "sum", self.ndim), keepdims=_keepdim(keepdim, keepdims))

    def mean(self, dim: Dims = None, keepdim: bool = False, *, axis: Dims = None, keepdims: bool = False) -> Tensor:
        return ops.Mean.apply(self, axis=_dims(dim, axis, "mean", self.ndim), keepdims=_keepdim(keepdim, keepdims))

    def amax(self, dim: Dims = None, keepdim: bool = False, *, axis: Dims = None, keepdims: bool = False) -> Tensor:
        """The largest values over ``dim`` (all when None). Ties share the gradient equally, as in PyTorch."""
        return ops.Max.apply(self, axis=_dims(dim, axis, "amax", self.ndim), keepdims=_keepdim(keepdim, keepdims))

    def amin(self, dim: Dims = None, keepdim: bool = False, *, axis: Dims = None, keepdims: bool = False) -> Tensor:
        """The smallest values over ``dim``: -amax(-x). Ties share the gradient equally."""
        return -(-self).amax(dim, keepdim, axis=axis, keepdims=keepdims)

    def max(self, dim: Dims = None, keepdim: bool = False, *, axis: Dims = None, keepdims: bool = False) -> Any:
        """As in PyTorch: ``max()`` is the largest value (ties share the gradient); ``max(dim)`` returns
        ``(values, indices)`` along one dimension, the gradient going to the index taken (the first of ties).
        For the values alone along a dimension, use ``amax(dim)``."""
        if self.ndim == 0 and (dim is not None or axis is not None):
            return self._select_0d(dim, axis, "max")
        dim = _dims(dim, axis, "max", self.ndim)
        if dim is None:
            return self.amax(keepdim=_keepdim(keepdim, keepdims))
        return self._select(self.data.argmax, dim, _keepdim(keepdim, keepdims), "max")

    def min(self, dim: Dims = None, keepdim: bool = False, *, axis: Dims = None, keepdims: bool = False) -> Any:
        """As in PyTorch: ``min()`` is the smallest value; ``min(dim)`` returns ``(values, indices)``."""
        if self.ndim == 0 and (dim is not None or axis is not None):
            return self._select_0d(dim, axis, "min")
        dim = _dims(dim, axis, "min", self.ndim)
        if dim is None:
            return self.amin(keepdim=_keepdim(keepdim, keepdims))
        return self._select(self.data.argmin, dim, _keepdim(keepdim, keepdims), "min")

    def _select_0d(self, dim, axis, method):
        """max(0) or min(0) of a 0-d tensor, as in PyTorch: the tensor itself, at index 0."""
        _dims(dim, axis, method, 0)
        return MaxMin(self.reshape(()), Tensor(backend.get_array_module(self.data).zeros((), dtype="int64")))

    def _select(self, arg_function, dim, keepdim, method):
        """(values, indices) of the elements ``arg_function`` picks along ``dim``, through Index (so its gradient)."""
        dim = _normalize_dim(dim, self.ndim, method)
        xp = backend.get_array_module(self.data)
        indices = arg_function(axis=dim)
        # An index per axis: the picked position along dim, and every position along the others.
        grid = [
            xp.arange(n).reshape([-1 if k == axis else 1 for k in range(indices.ndim)])
            for axis, n in enumerate(indices.shape)
        ]
        grid.insert(dim, indices)
        values = self[tuple(grid)]
        if keepdim:
            values = values.reshape(self.shape[:dim] + (1,) + self.shape[dim + 1 :])
            indices = xp.expand_dims(indices, dim)
        return MaxMin(values, Tensor(indices))

    def argmax(self, dim: Dims = None, keepdim: bool = False, *, axis: Dims = None, keepdims: bool = False) -> Tensor:
        """Indices of the maxima (over the flattened tensor when dim is None): an integer tensor, never in the graph."""
        dim = _dims(dim, axis, "argmax", self.ndim)
        return Tensor(self.data.argmax(axis=dim, keepdims=_keepdim(keepdim, keepdims)))

    def argmin(self, dim: Dims = None, keepdim: bool = False, *, axis: Dims = None, keepdims: bool = False) -> Tensor:
        """Indices of the minima: an integer tensor, never in the graph."""
        dim = _dims(dim, axis, "argmin", self.ndim)
        return Tensor(self.data.argmin(axis=dim, keepdims=_keepdim(keepdim, keepdims)))

    # --- elementwise functions --------------------------------------------------------
    def exp(self) -> Tensor:
        return ops.Exp.apply(self)

    def log(self) -> Tensor:
        return ops.Log.apply(self)

    def relu(self) -> Tensor:
        return ops.ReLU.apply(self)

    # --- shape: reshape, and every permutation of the axes ------------------------------
    def reshape(self, *shape: int | Sequence[int]) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return ops.Reshape.apply(self, shape=shape)

    def permute(self, *dims: int | Sequence[int]) -> Tensor:
        """The axes reordered: output axis i is input axis ``dims[i]`` (negative dims count from the end)."""
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        axes = tuple(_normalize_dim(d, self.ndim, "permute") for d in dims)
        if sorted(axes) != list(range(self.ndim)):
            raise ValueError(
                f"permute(): {dims} is not a reordering of the {self.ndim} dimensions of a tensor of "
                f"shape {self.shape}: name each of 0 .. {self.ndim - 1} once"
            )
        return ops.Permute.apply(self, axes=axes)

    def transpose(self, *dims: int) -> Tensor:
        """Swap two axes, as PyTorch's ``transpose(dim0, dim1)`` (NumPy's ``transpose(axes)`` is ``permute``)."""
        if len(dims) != 2:
            raise TypeError(
                f"transpose(dim0, dim1) swaps two axes, as in PyTorch, got {len(dims)} arguments; "
                f"to reorder all the axes (NumPy's transpose) use permute{dims or ''}"
            )
        dim0, dim1 = dims
        axes = list(range(self.ndim))
        dim0, dim1 = _normalize_dim(dim0, self.ndim, "transpose"), _normalize_dim(dim1, self.ndim, "transpose")
        axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
        return self.permute(axes) if self.ndim else self

    swapaxes = swapdims = transpose

    @property
    def T(self) -> Tensor:
        """The transpose of a matrix (a 0-d or 1-D tensor is returned as it is). For stacks of matrices use ``.mT``."""
        if self.ndim > 2:
            raise ValueError(
                f".T reverses the axes of a matrix only; this tensor has shape {self.shape}: use .mT to "
                f"transpose the last two axes or permute(...) to reorder them"
            )
        return self.transpose(0, 1) if self.ndim == 2 else self

    @property
    def mT(self) -> Tensor:
        """The last two axes swapped: a stack of matrices, each transposed."""
        if self.ndim < 2:
            raise ValueError(f".mT needs at least 2 dimensions, got shape {self.shape}")
        return self.transpose(-2, -1)


def _as_array(data):
    """What ``Tensor(data)`` keeps for anything that is not already a raw array (see Tensor)."""
    if isinstance(data, Tensor):
        return data.data
    if isinstance(data, backend.numpy.generic):  # a NumPy scalar, e.g. a 0-d sum: keep it as a 0-d array
        return backend.numpy.asarray(data)
    if isinstance(data, (list, tuple)):
        try:
            return backend.numpy.asarray(data, dtype=backend.numpy.float32)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"Tensor() takes a list of numbers, an array or a Tensor; this list does not convert ({error})"
            ) from None
    hint = " (for a tensor holding a number, use minigrad.tensor(x))" if isinstance(data, (int, float)) else ""
    raise TypeError(
        f"Tensor() takes a NumPy or CuPy array, a list of numbers or a Tensor, got {type(data).__name__}{hint}"
    )


def _category(dtype):
    """PyTorch's categories for type promotion: bool 0, integers 1, floating point 2."""
    return {"b": 0, "i": 1, "u": 1}.get(dtype.kind, 2)


def _matmul(a, b):
    """a @ b through MatMul, once the shapes are checked (NumPy's own message names no shapes)."""
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul needs arrays with at least one axis, got shapes {a.shape} and {b.shape}")
    inner_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if a.shape[-1] != inner_b:
        raise ValueError(f"matmul shape mismatch: {a.shape} @ {b.shape} ({a.shape[-1]} columns against {inner_b} rows)")
    return ops.MatMul.apply(a, b)


def _raw_index(index):
    """An index with its Tensors replaced by their arrays, also inside a tuple: x[t], x[t, 1], x[mask]."""
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(_raw_index(part) for part in index)
    return index
