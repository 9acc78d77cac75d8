"""A guided tour of the engine on the chapter's network, made small enough to read every number.

    minigrad-autograd-tour [--out runs/autograd_tour] [--seed 0]

A 4-3-3-2 MLP with ReLU and dropout (0.2, 0.5) on 3 examples, in float64 so that gradcheck can
use the very same graph. It prints (1) the forward values layer by layer, (2) the topological
order in which backward visits the tensors, (3) each tensor's gradient as backward reaches it
(through the engine's ``hook``, not a copy of the engine), (4) a finite-difference check of
every parameter's gradient, and writes the graph as Graphviz DOT (and SVG when ``dot`` exists).
"""

import os

import numpy

import minigrad as mg
import minigrad.nn.functional as F
from minigrad import cli, nn
from minigrad.autograd import topological_order
from minigrad.files import atomic_write
from minigrad.viz import render, to_dot

MASK_SEED = 1  # reseeded before each forward, so the tour's pass and gradcheck's draw the same dropout masks


def build(seed):
    """The tour's 4-3-3-2 float64 network, its 3 examples and labels, seeded by ``seed``."""
    mg.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(4, 3, dtype="float64"),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(3, 3, dtype="float64"),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(3, 2, dtype="float64"),
    )
    for layer in (model[0], model[3], model[6]):
        nn.init.normal_(layer.weight, std=1.0)  # larger than the chapter's 0.01, so the numbers are readable
        # Nonzero biases: a row that dropout zeroes entirely would otherwise put the next ReLU exactly at its
        # kink, where backward's derivative (0) and central differences (1/2) rightly disagree.
        nn.init.normal_(layer.bias, std=0.5)
    X = mg.randn(3, 4, dtype="float64")
    y = mg.tensor([0, 1, 1])
    return model, X, y


def functional_loss(X, y):
    """The same network as a function of its parameters, for gradcheck."""

    def loss(W1, b1, W2, b2, W3, b3):
        mg.manual_seed(MASK_SEED)
        h = F.dropout(F.relu(F.linear(X, W1, b1)), 0.2)
        h = F.dropout(F.relu(F.linear(h, W2, b2)), 0.5)
        return F.cross_entropy(F.linear(h, W3, b3), y)

    return loss


def fmt(array):
    """An array on one line, 4 decimals."""
    return numpy.array2string(
        numpy.asarray(array), precision=4, suppress_small=True, separator=", ", max_line_width=10_000
    ).replace("\n", "")


def main(argv=None):
    """The command line: print the tour's four steps and write the graph; returns the exit status."""
    parser = cli.OneLineParser(prog=cli.program_name(__name__), description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", default=os.path.join("runs", "autograd_tour"), help="where graph.dot (and graph.svg) go"
    )
    parser.add_argument("--seed", type=cli.seed, default=0, help="seeds the weights, the data and the masks")
    args = parser.parse_args(argv)
    cli.check_writable_folder(parser, args.out)
    model, X, y = build(args.seed)
    names = {p: name for name, p in model.named_parameters()}
    names[X], names[y] = "X", "y (labels)"

    print("1. Forward: each module's output")
    for name, module in model.named_children():

        def show(module, inputs, output, name=name):
            names[output] = f"{name}: {type(module).__name__} output"
            print(f"  {names[output]:24s} {fmt(output.numpy())}")

        module.register_forward_hook(show)
    mg.manual_seed(MASK_SEED)
    loss = F.cross_entropy(model(X), y)
    names[loss] = "loss"
    print(f"  loss = {loss.item():.6f}\n")

    print("2. The order backward visits the graph (reverse topological order: each tensor before its inputs)")
    order = list(reversed(topological_order(loss)))
    for step, tensor in enumerate(order):
        made_by = type(tensor.grad_fn).__name__ if tensor.grad_fn else "leaf"
        print(f"  {step:2d}. {names.get(tensor, '(intermediate)'):24s} made by {made_by}")

    print("\n3. Backward: the gradient dL/dtensor each tensor receives")

    def report(tensor, grad):
        print(f"  {names.get(tensor, '(intermediate)'):24s} {fmt(grad)}")

    loss.backward(hook=report, retain_graph=True)  # keep the graph to draw it, with the leaves' gradients

    os.makedirs(args.out, exist_ok=True)
    with atomic_write(os.path.join(args.out, "graph.dot"), "w") as file:
        file.write(to_dot(loss, names))
    picture = os.path.join(args.out, "graph.svg")
    try:
        render(loss, picture, names)
        drawn = f"wrote {picture} and {args.out}/graph.dot"
    except RuntimeError as error:
        drawn = f"wrote {args.out}/graph.dot; no picture: {error}"

    print("\n4. gradcheck: every parameter's gradient against central finite differences")
    leaves = [mg.tensor(p.data, dtype="float64", requires_grad=True) for p in model.parameters()]
    loss_of_parameters = functional_loss(X, y)
    loss_of_parameters(*leaves).backward()  # the same graph and masks as the module's pass above
    mg.gradcheck(loss_of_parameters, leaves)  # raises GradcheckError on any disagreement
    for (name, p), leaf in zip(model.named_parameters(), leaves):
        same = numpy.array_equal(leaf.grad, p.grad)
        print(f"  {name:10s} passed (and equals the gradient printed above: {same})")
        if not same:
            raise SystemExit(f"the functional graph's gradient of {name} differs from the module's")
    print(f"\n{drawn}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
