"""The differential table: every differentiable op and Tensor method, as minigrad code and as PyTorch code.

Each case draws (with hypothesis) the shapes of its inputs and its parameters (axes, negative dims,
broadcasting, repeated indices, keepdim, exponents ...) and the values of its inputs from a drawn
seed. ``tests/test_differential.py`` checks every case two ways, both in float64 and with random
upstream gradients (never all-ones, which hide transpositions and reshapes):

- against central finite differences (``mg.gradcheck``), always;
- against PyTorch, when it is installed: the same values and the same gradients.

A case is ``Case(name, draw, minigrad, torch)``: ``draw(data)`` returns ``(inputs, params)`` where
``inputs`` is a list of ``Input(shape, domain, grad)``, and both functions take the tensors
followed by ``**params``. ``torch`` is None where PyTorch has no counterpart (dropout's masks).
"""

import collections

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigrad as mg
import minigrad.nn.functional as F

Input = collections.namedtuple("Input", "shape domain grad", defaults=("real", True))
# ``away_from_kinks(*arrays)``, where given, is False for inputs that central differences cannot check: those
# that put a ReLU inside a layer within reach of the finite-difference step of its kink.
Case = collections.namedtuple("Case", "name draw minigrad torch away_from_kinks", defaults=(None,))


def make_array(rng, spec):
    """Values for one input. The domains keep finite differences honest: away from kinks (0 for ReLU and
    division), from ties (max), and inside the domain (log, fractional powers)."""
    shape, domain = spec.shape, spec.domain
    if domain.startswith("labels"):
        classes = int(domain.split(":")[1])
        return rng.integers(0, classes, size=shape)
    normal = rng.standard_normal(shape)
    if domain == "real":
        return normal
    if domain == "positive":
        return np.abs(normal) + 0.5
    if domain == "away_from_zero":
        return np.sign(normal + 1e-12) * (np.abs(normal) + 0.2)
    if domain == "small_integers":  # for comparisons: equal values are common
        return rng.integers(-2, 3, size=shape).astype(np.float64)
    if domain == "distinct":  # no two values within 0.3 of each other
        size = int(np.prod(shape, dtype=int))
        return (rng.permutation(size) * 0.3 - size * 0.15 + rng.uniform(0, 0.05, size)).reshape(shape)
    raise ValueError(domain)


# --- strategies ---------------------------------------------------------------------------------------

shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)
matrices = hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=4)


def unary(domain="real", shape_strategy=shapes):
    def draw(data):
        return [Input(data.draw(shape_strategy, label="shape"), domain)], {}

    return draw


def binary(domain_b="real", domain_a="real"):
    """Two inputs whose shapes broadcast against each other, in either direction."""

    def draw(data):
        a, b = data.draw(
            hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3), label="shapes"
        ).input_shapes
        return [Input(a, domain_a), Input(b, domain_b)], {}

    return draw


def with_scalar(domain="real"):
    def draw(data):
        scalar = data.draw(st.sampled_from([-1.5, 0.5, 2.0, 3]), label="scalar")
        return [Input(data.draw(shapes, label="shape"), domain)], {"scalar": scalar}

    return draw


def reduction(domain="real", single_dim=False):
    """A reduction over None, one dim (negative too) or a tuple of dims, with or without keepdim."""

    def draw(data):
        shape = data.draw(shapes, label="shape")
        ndim = len(shape)
        one = st.integers(-ndim, ndim - 1)
        dims = one if single_dim else st.one_of(st.none(), one, hnp.valid_tuple_axes(ndim, min_size=1))
        return [Input(shape, domain)], {
            "dim": data.draw(dims, label="dim"),
            "keepdim": data.draw(st.booleans(), label="keepdim"),
        }

    return draw


def matmul_draw(data):
    """Every rank combination: 1-D, 2-D and stacks of matrices, with broadcast batch axes."""
    n, k, m = (data.draw(st.integers(1, 4), label=label) for label in "nkm")
    batch_a, batch_b = data.draw(
        hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, max_side=3), label="batch"
    ).input_shapes
    a = (k,) if data.draw(st.booleans(), label="a is a vector") else batch_a + (n, k)
    b = (k,) if data.draw(st.booleans(), label="b is a vector") else batch_b + (k, m)
    return [Input(a), Input(b)], {}


def reshape_draw(data):
    shape = data.draw(shapes, label="shape")
    size = int(np.prod(shape))
    divisors = [d for d in range(1, size + 1) if size % d == 0]
    first = data.draw(st.sampled_from(divisors), label="first")
    return [Input(shape)], {"new_shape": (first, -1)}


def permute_draw(data):
    shape = data.draw(shapes, label="shape")
    ndim = len(shape)
    dims = data.draw(st.permutations(range(ndim)), label="order")
    signs = data.draw(st.lists(st.booleans(), min_size=ndim, max_size=ndim), label="negative")
    return [Input(shape)], {"dims": tuple(d - ndim if negative else d for d, negative in zip(dims, signs))}


def two_dims_draw(data):
    shape = data.draw(shapes, label="shape")
    ndim = len(shape)
    dim = st.integers(-ndim, ndim - 1)
    return [Input(shape)], {"dim0": data.draw(dim, label="dim0"), "dim1": data.draw(dim, label="dim1")}


def stack_draw(data):
    return [Input(data.draw(hnp.array_shapes(min_dims=2, max_dims=4, max_side=3), label="shape"))], {}


def basic_index_draw(data):
    """Integers (negative too), slices with positive steps, None and Ellipsis."""
    shape = data.draw(shapes, label="shape")
    count = data.draw(st.integers(1, len(shape)), label="axes indexed")
    ellipsis = count < len(shape) and data.draw(st.booleans(), label="Ellipsis first")
    indexed = shape[len(shape) - count :] if ellipsis else shape[:count]
    parts = [
        data.draw(
            st.one_of(
                st.integers(-side, side - 1),
                st.builds(
                    slice,
                    st.none() | st.integers(-side, side),
                    st.none() | st.integers(-side, side),
                    st.none() | st.integers(1, 3),
                ),
            ),
            label="index part",
        )
        for side in indexed
    ]
    if data.draw(st.booleans(), label="with None"):
        parts.insert(data.draw(st.integers(0, len(parts)), label="None at"), None)
    return [Input(shape)], {"index": (Ellipsis, *parts) if ellipsis else tuple(parts)}


def integer_array_index_draw(data):
    """An integer array (with repeats, negative entries) on one axis, as an array or a Tensor, in a tuple."""
    shape = data.draw(shapes, label="shape")
    axis = data.draw(st.integers(0, len(shape) - 1), label="axis")
    side = shape[axis]
    rows = data.draw(st.lists(st.integers(-side, side - 1), min_size=1, max_size=5), label="rows")
    as_tensor = data.draw(st.booleans(), label="as tensor")
    rows = mg.tensor(rows) if as_tensor else np.array(rows)
    return [Input(shape)], {"index": (slice(None),) * axis + (rows,)}


def mask_index_draw(data):
    shape = data.draw(shapes, label="shape")
    return [Input(shape)], {"mask_seed": data.draw(st.integers(0, 2**16), label="mask seed")}


def linear_draw(data):
    batch = data.draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=3), label="batch")
    fan_in, fan_out = data.draw(st.integers(1, 4), label="in"), data.draw(st.integers(1, 4), label="out")
    inputs = [Input(batch + (fan_in,)), Input((fan_out, fan_in))]
    if data.draw(st.booleans(), label="bias"):
        inputs.append(Input((fan_out,)))
    return inputs, {}


def cross_entropy_draw(data):
    n, classes = data.draw(st.integers(1, 5), label="N"), data.draw(st.integers(2, 5), label="C")
    return [Input((n, classes)), Input((n,), f"labels:{classes}", grad=False)], {}


def softmax_draw(data):
    shape = data.draw(shapes, label="shape")
    return [Input(shape)], {"dim": data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")}


def dropout_draw(data):
    params = {"p": data.draw(st.floats(0.05, 0.9), label="p"), "seed": data.draw(st.integers(0, 2**16), label="seed")}
    return [Input(data.draw(shapes, label="shape"))], params


def mlp_draw(data):
    n, sizes = data.draw(st.integers(1, 4), label="N"), [data.draw(st.integers(1, 4), label="width") for _ in range(4)]
    return mlp_inputs(n, sizes), {}


def mlp_inputs(n, sizes):
    """x (n, sizes[0]), then each layer's weight and bias, then n labels."""
    inputs = [Input((n, sizes[0]), grad=False)]
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        inputs += [Input((fan_out, fan_in)), Input((fan_out,))]
    return inputs + [Input((n,), f"labels:{sizes[-1]}", grad=False)]


def seeded_dropout(x, p, seed):
    mg.manual_seed(seed)  # the same mask for every evaluation of the function
    return F.dropout(x, p)


def mlp(x, w1, b1, w2, b2, w3, b3, labels, dropout=F.dropout, training=True):
    h = dropout(F.relu(F.linear(x, w1, b1)), 0.2, training=training)
    h = dropout(F.relu(F.linear(h, w2, b2)), 0.5, training=training)
    return F.cross_entropy(F.linear(h, w3, b3), labels)


def mlp_away_from_kinks(x, w1, b1, w2, b2, w3, b3, labels, margin=1e-4):
    """Both hidden layers' pre-activations at least ``margin`` from ReLU's kink (the inputs' domains cannot
    promise that for a value computed inside the network)."""
    z1 = x @ w1.T + b1
    z2 = np.maximum(z1, 0) @ w2.T + b2
    return bool(np.abs(z1).min() > margin and np.abs(z2).min() > margin)


def torch_mlp(torch, x, w1, b1, w2, b2, w3, b3, labels):
    """The same network in PyTorch, in evaluation (no dropout)."""
    functional = torch.nn.functional
    h = functional.relu(functional.linear(x, w1, b1))
    h = functional.relu(functional.linear(h, w2, b2))
    return functional.cross_entropy(functional.linear(h, w3, b3), labels)


def mask_of(shape, mask_seed):
    return np.random.default_rng(mask_seed).random(shape) > 0.4


def _torch():
    import torch

    return torch


# --- the table ------------------------------------------------------------------------------------------
# (name, draw, minigrad, torch). The torch function receives torch tensors; `torch` is imported lazily.


def _t(fn):
    """A PyTorch-side function that also receives the torch module: fn(torch, *tensors, **params)."""
    return lambda *args, **params: fn(_torch(), *args, **params)


CASES = [
    Case("a + b", binary(), lambda a, b: a + b, lambda a, b: a + b),
    Case("a - b", binary(), lambda a, b: a - b, lambda a, b: a - b),
    Case("a * b", binary(), lambda a, b: a * b, lambda a, b: a * b),
    Case("a / b", binary("away_from_zero"), lambda a, b: a / b, lambda a, b: a / b),
    Case("scalar + a", with_scalar(), lambda a, scalar: scalar + a, lambda a, scalar: scalar + a),
    Case("scalar - a", with_scalar(), lambda a, scalar: scalar - a, lambda a, scalar: scalar - a),
    Case("a * scalar", with_scalar(), lambda a, scalar: a * scalar, lambda a, scalar: a * scalar),
    Case("scalar / a", with_scalar("away_from_zero"), lambda a, scalar: scalar / a, lambda a, scalar: scalar / a),
    Case("-a", unary(), lambda a: -a, lambda a: -a),
    Case(
        "Cast (a.double(), a.float(), 0-d promotion), float64 to float64 here",
        unary(),
        lambda a: mg.ops.Cast.apply(a, dtype=np.float64) * a,
        lambda a: a.to(a.dtype) * a,
    ),
    Case(
        "a ** n (integer n, any sign of a)",
        lambda data: (
            [Input(data.draw(shapes, label="shape"))],
            {"n": data.draw(st.sampled_from([0, 1, 2, 3]), label="n")},
        ),
        lambda a, n: a**n,
        lambda a, n: a**n,
    ),
    Case(
        "a ** n (a > 0)",
        lambda data: (
            [Input(data.draw(shapes, label="shape"), "positive")],
            {"n": data.draw(st.sampled_from([-2, -1, -0.5, 0, 0.5, 1.5, 2.5]), label="n")},
        ),
        lambda a, n: a**n,
        lambda a, n: a**n,
    ),
    Case("a.exp()", unary(), lambda a: a.exp(), lambda a: a.exp()),
    Case("a.log()", unary("positive"), lambda a: a.log(), lambda a: a.log()),
    Case("a.relu()", unary("away_from_zero"), lambda a: a.relu(), lambda a: a.relu()),
    Case("F.relu(a)", unary("away_from_zero"), F.relu, _t(lambda torch, a: torch.nn.functional.relu(a))),
    Case("a @ b", matmul_draw, lambda a, b: a @ b, lambda a, b: a @ b),
    Case(
        "a.sum(dim, keepdim)",
        reduction(),
        lambda a, dim, keepdim: a.sum(dim, keepdim),
        lambda a, dim, keepdim: a.sum(dim, keepdim),
    ),
    Case(
        "a.sum(axis=, keepdims=)",
        reduction(),
        lambda a, dim, keepdim: a.sum(axis=dim, keepdims=keepdim),
        lambda a, dim, keepdim: a.sum(axis=dim, keepdims=keepdim),
    ),
    Case(
        "a.mean(dim, keepdim)",
        reduction(),
        lambda a, dim, keepdim: a.mean(dim, keepdim),
        lambda a, dim, keepdim: a.mean(dim, keepdim),
    ),
    Case(
        "a.amax(dim, keepdim)",
        reduction("distinct"),
        lambda a, dim, keepdim: a.amax(dim, keepdim),
        lambda a, dim, keepdim: a.amax(dim if dim is not None else (), keepdim),
    ),
    Case(
        "a.amin(dim, keepdim)",
        reduction("distinct"),
        lambda a, dim, keepdim: a.amin(dim, keepdim),
        lambda a, dim, keepdim: a.amin(dim if dim is not None else (), keepdim),
    ),
    Case("a.max()", unary("distinct"), lambda a: a.max(), lambda a: a.max()),
    Case("a.min()", unary("distinct"), lambda a: a.min(), lambda a: a.min()),
    Case(
        "a.max(dim, keepdim) -> (values, indices)",
        reduction("distinct", single_dim=True),
        lambda a, dim, keepdim: a.max(dim, keepdim),
        lambda a, dim, keepdim: a.max(dim, keepdim),
    ),
    Case(
        "a.min(dim, keepdim) -> (values, indices)",
        reduction("distinct", single_dim=True),
        lambda a, dim, keepdim: a.min(dim, keepdim),
        lambda a, dim, keepdim: a.min(dim, keepdim),
    ),
    Case(
        "a.reshape(n, -1)",
        reshape_draw,
        lambda a, new_shape: a.reshape(new_shape),
        lambda a, new_shape: a.reshape(new_shape),
    ),
    Case("a.permute(dims)", permute_draw, lambda a, dims: a.permute(*dims), lambda a, dims: a.permute(*dims)),
    Case(
        "a.transpose(dim0, dim1)",
        two_dims_draw,
        lambda a, dim0, dim1: a.transpose(dim0, dim1),
        lambda a, dim0, dim1: a.transpose(dim0, dim1),
    ),
    Case(
        "a.swapaxes(dim0, dim1)",
        two_dims_draw,
        lambda a, dim0, dim1: a.swapaxes(dim0, dim1),
        lambda a, dim0, dim1: a.swapaxes(dim0, dim1),
    ),
    Case("a.T (matrix)", unary(shape_strategy=matrices), lambda a: a.T, lambda a: a.T),
    Case("a.mT", stack_draw, lambda a: a.mT, lambda a: a.mT),
    Case("a[ints, slices, None, ...]", basic_index_draw, lambda a, index: a[index], lambda a, index: a[index]),
    Case(
        "a[..., integer array with repeats]",
        integer_array_index_draw,
        lambda a, index: a[index],
        _t(
            lambda torch, a, index: a[
                tuple(part if isinstance(part, slice) else torch.as_tensor(np.asarray(part)) for part in index)
            ]
        ),
    ),
    Case(
        "a[boolean mask]",
        mask_index_draw,
        lambda a, mask_seed: a[mg.tensor(mask_of(a.shape, mask_seed))],
        _t(lambda torch, a, mask_seed: a[torch.as_tensor(mask_of(tuple(a.shape), mask_seed))]),
    ),
    Case("F.linear(x, W, b)", linear_draw, F.linear, _t(lambda torch, *args: torch.nn.functional.linear(*args))),
    Case(
        "F.cross_entropy(logits, labels)",
        cross_entropy_draw,
        F.cross_entropy,
        _t(lambda torch, logits, labels: torch.nn.functional.cross_entropy(logits, labels)),
    ),
    Case(
        "F.softmax(a, dim)",
        softmax_draw,
        lambda a, dim: F.softmax(a, dim=dim),
        _t(lambda torch, a, dim: torch.nn.functional.softmax(a, dim=dim)),
    ),
    Case("F.dropout(a, p), one seeded mask", dropout_draw, seeded_dropout, None),
    Case(
        "F.dropout(a, p, training=False)",
        dropout_draw,
        lambda a, p, seed: F.dropout(a, p, training=False),
        _t(lambda torch, a, p, seed: torch.nn.functional.dropout(a, p, training=False)),
    ),
    Case(
        "the chapter's MLP and loss, dropout on (seeded)",
        mlp_draw,
        lambda *tensors: (mg.manual_seed(7), mlp(*tensors))[1],
        None,
        mlp_away_from_kinks,
    ),
    Case(
        "the chapter's MLP and loss, evaluation",
        mlp_draw,
        lambda *tensors: mlp(*tensors, training=False),
        _t(torch_mlp),
        mlp_away_from_kinks,
    ),
    Case("reuse: b = a + a; b * b", unary(), lambda a: (a + a) * (a + a), lambda a: (a + a) * (a + a)),
]


# Comparisons and argmax: values only (they are outside the graph), against PyTorch.
VALUE_CASES = [
    Case(f"a {symbol} b", binary("small_integers", "small_integers"), function, function)
    for symbol, function in [
        ("==", lambda a, b: a == b),
        ("!=", lambda a, b: a != b),
        ("<", lambda a, b: a < b),
        ("<=", lambda a, b: a <= b),
        (">", lambda a, b: a > b),
        (">=", lambda a, b: a >= b),
    ]
] + [
    Case(
        "a.argmax(dim, keepdim)",
        reduction("distinct", single_dim=True),
        lambda a, dim, keepdim: a.argmax(dim, keepdim),
        lambda a, dim, keepdim: a.argmax(dim, keepdim),
    ),
    Case(
        "a.argmin(dim, keepdim)",
        reduction("distinct", single_dim=True),
        lambda a, dim, keepdim: a.argmin(dim, keepdim),
        lambda a, dim, keepdim: a.argmin(dim, keepdim),
    ),
    Case("a.argmax()", unary("distinct"), lambda a: a.argmax(), lambda a: a.argmax()),
]
