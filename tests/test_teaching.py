"""The teaching aids: the graph as DOT, the autograd tour, and a docstring with the math on every op."""

import inspect
import os
import re
import shutil
import subprocess

import pytest

import minigrad as mg
from minigrad import ops
from minigrad._tensor import Function
from minigrad.chapter import autograd_tour
from minigrad.viz import render, to_dot

NODE = re.compile(r'^\s*(t\d+|op\d+) \[label="(?:[^"\\]|\\.)*"(, [\w]+=("[^"]*"|\w+))*\];$')
EDGE = re.compile(r"^\s*(t\d+|op\d+) -> (t\d+|op\d+);$")


def parse_dot(source):
    """A strict reader of the DOT subset to_dot writes: returns (node names, edges); fails on anything else."""
    lines = source.strip().splitlines()
    assert lines[0] == "digraph minigrad {" and lines[-1] == "}"
    nodes, edges = [], []
    for line in lines[1:-1]:
        if line.strip() in ("rankdir=LR;", 'node [fontname="Helvetica", fontsize=10];'):
            continue
        if NODE.match(line):
            nodes.append(NODE.match(line).group(1))
        elif EDGE.match(line):
            edges.append(EDGE.match(line).groups())
        else:
            raise AssertionError(f"not valid DOT from to_dot: {line!r}")
    assert len(set(nodes)) == len(nodes)
    assert all(a in nodes and b in nodes for a, b in edges), "every edge joins declared nodes"
    return nodes, edges


def known_graph():
    """loss = sum(relu(x @ W + b)): 5 tensors in (x, W, b) + 3 results, 4 ops."""
    x = mg.randn(2, 3)
    W = mg.nn.Parameter(mg.randn(3, 4).data)
    b = mg.nn.Parameter(mg.zeros(4).data)
    return (x @ W + b).relu().sum(), x, W, b


def test_to_dot_node_and_edge_counts_of_a_known_graph():
    loss, x, W, b = known_graph()
    nodes, edges = parse_dot(to_dot(loss, names={W: "W", b: "b", x: "x"}))
    tensors = [n for n in nodes if n.startswith("t")]
    ops = [n for n in nodes if n.startswith("op")]
    assert len(tensors) == 7 and len(ops) == 4  # x, W, b, x@W, +b, relu, sum; MatMul, Add, ReLU, Sum
    assert len(edges) == 2 + 2 + 1 + 1 + 4  # op inputs (2, 2, 1, 1) and one output edge per op


def test_to_dot_labels_ops_marks_leaves_parameters_and_gradients():
    loss, x, W, b = known_graph()
    source = to_dot(loss, names={W: "W"})
    for op in ("MatMul", "Add", "ReLU", "Sum"):
        assert f'label="{op}"' in source
    assert 'label="W\\n(3, 4) float32", shape=box, style="filled"' in source
    assert "peripheries=2" in source  # x, a leaf that is not a parameter
    assert "grad:" not in source
    loss.backward(retain_graph=True)
    assert to_dot(loss).count("grad: |g|") == 2  # W and b; x needs no gradient


def test_edges_follow_the_data():
    a = mg.tensor([1.0], requires_grad=True)
    nodes, edges = parse_dot(to_dot(a.exp()))
    assert edges == [("t1", "op0"), ("op0", "t0")]  # input -> Exp -> output


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (apt-get install graphviz)")
def test_dot_accepts_the_source_and_render_writes_svg(tmp_path):
    loss, *_ = known_graph()
    subprocess.run(["dot", "-Tcanon"], input=to_dot(loss).encode(), check=True, capture_output=True)
    render(loss, tmp_path / "graph.svg")
    assert (tmp_path / "graph.svg").read_text().lstrip().startswith(("<?xml", "<svg"))


def test_render_without_dot_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    loss, *_ = known_graph()
    with pytest.raises(RuntimeError, match="apt-get install graphviz"):
        render(loss, tmp_path / "graph.svg")
    assert not (tmp_path / "graph.svg").exists()


def test_autograd_tour_runs_end_to_end(tmp_path, capsys):
    assert autograd_tour.main(["--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for heading in ("1. Forward", "2. The order backward visits", "3. Backward", "4. gradcheck"):
        assert heading in printed
    assert printed.count("passed (and equals the gradient printed above: True)") == 6
    assert "0.weight" in printed and "made by SoftmaxCrossEntropy" in printed
    parse_dot((tmp_path / "graph.dot").read_text())


def all_function_classes():
    found, stack = [], [Function]
    while stack:
        for subclass in stack.pop().__subclasses__():
            stack.append(subclass)
            if subclass.__module__.startswith("minigrad"):
                found.append(subclass)
    return found


def test_every_function_states_its_formula_and_derivative():
    classes = all_function_classes()
    assert len(classes) >= len(
        [c for c in vars(ops).values() if inspect.isclass(c) and issubclass(c, Function) and c is not Function]
    )
    for cls in classes:
        doc = inspect.getdoc(cls) or ""
        assert "=" in doc, f"{cls.__name__}: docstring must state the formula"
        assert re.search(r"d\w*/d\w+", doc), f"{cls.__name__}: docstring must state the derivative (dy/dx ...)"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seed", "-1"], "argument --seed: must be an integer in [0, 2**63 - 1], got -1"),
        (["--seed", "x"], "argument --seed: expected an integer, got 'x'"),
        (["--out", "README.md"], "argument --out: cannot write into 'README.md'"),
    ],
)
def test_autograd_tour_bad_flags_exit_2_with_one_line(flags, message, capsys, monkeypatch):
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with pytest.raises(SystemExit) as caught:
        autograd_tour.main(flags)
    err = capsys.readouterr().err
    assert caught.value.code == 2 and err.count("\n") == 1 and message in err
