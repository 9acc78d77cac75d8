"""The planned step (minigrad.fast) against its specification, the eager ops: on the CPU, for every model,
optimizer and loader it takes, the same weights, records and dropout draws as Trainer(eager=True), bit for bit
(a zero may be -0.0 where eager has 0.0, which compares equal); and what it does not take is named."""

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn
from minigrad.chapter.model import concise_mlp
from minigrad.data import ArrayDataset, DataLoader
from minigrad.data.loader import BatchCursor
from minigrad.fast import PlannedStep, PlannedTraining, loader_problem, plan_problem
from minigrad.fast.plan import tile_shapes
from minigrad.monitor import TrainingDiverged
from minigrad.train import Trainer


def loader(count=300, batch=64, seed=0, shuffle=True, images=(784,), **settings):
    rng = np.random.default_rng(seed)
    data = ArrayDataset(rng.integers(0, 256, (count, *images), dtype=np.uint8), rng.integers(0, 10, count))
    return DataLoader(data, batch, shuffle=shuffle, seed=0, **settings)


def odd_model():
    """Flatten first, a nested Sequential, Dropout before ReLU, a Linear without bias, a block with no activation,
    dropout p = 0 (no draw), a ReLU after the last Linear."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Sequential(nn.Linear(784, 24), nn.Dropout(0.3), nn.ReLU()),
        nn.Linear(24, 20, bias=False),
        nn.Linear(20, 16),
        nn.Dropout(0.0),
        nn.ReLU(),
        nn.Linear(16, 10),
        nn.ReLU(),
    )


def groups(model, lr):
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in model.named_parameters() if name.endswith("bias")]
    return mg.optim.SGD([{"params": weights, "weight_decay": 1e-3}, {"params": biases, "lr": lr / 2}], lr=lr)


CASES = {
    "the chapter's model, lr 0.5 folded in": (
        lambda: concise_mlp(hidden=(32, 32)),
        lambda m: mg.optim.SGD(m.parameters(), lr=0.5),
        {},
    ),
    "lr 0.1 and weight decay, StepLR": (
        lambda: concise_mlp(hidden=(32, 32)),
        lambda m: mg.optim.SGD(m.parameters(), lr=0.1, weight_decay=1e-3),
        {"schedule": True},
    ),
    "two parameter groups": (lambda: concise_mlp(hidden=(16, 16)), lambda m: groups(m, 0.3), {}),
    "flatten, nesting, no bias, p = 0": (
        odd_model,
        lambda m: mg.optim.SGD(m.parameters(), lr=0.25),
        {"images": (28, 28), "flatten": False},
    ),
    "float64 parameters": (
        lambda: nn.Sequential(
            nn.Linear(784, 16, dtype="float64"), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 10, dtype="float64")
        ),
        lambda m: mg.optim.SGD(m.parameters(), lr=0.5),
        {},
    ),
    "drop_last, unshuffled": (
        lambda: concise_mlp(hidden=(16, 16)),
        lambda m: mg.optim.SGD(m.parameters(), lr=0.5),
        {"drop_last": True, "shuffle": False},
    ),
}


def fit(make_model, make_optimizer, settings, eager, epochs=3):
    """A seeded Trainer fit; (its history without times, the weights, the dropout stream's counter, the Trainer)."""
    settings = dict(settings)
    schedule = settings.pop("schedule", False)
    mg.manual_seed(0)
    model = make_model()
    optimizer = make_optimizer(model)
    scheduler = mg.optim.StepLR(optimizer, step_size=1, gamma=0.5) if schedule else None
    trainer = Trainer(model, optimizer, progress=False, eager=eager, scheduler=scheduler)
    trainer.fit(loader(**settings), loader(count=200, seed=1, **settings), epochs=epochs)
    history = [{k: v for k, v in r.items() if "seconds" not in k} for r in trainer.history]
    return history, [p.data.copy() for p in model.parameters()], mg.random.dropout_stream("cpu").counter, trainer


@pytest.mark.parametrize("case", list(CASES))
def test_planned_epochs_equal_the_eager_ones_bit_for_bit(case, capsys):
    planned = fit(*CASES[case], eager=False)
    eager = fit(*CASES[case], eager=True)
    assert planned[3].step_kind == "planned" and eager[3].step_kind == "eager: asked for"
    for ours, theirs in zip(planned[1], eager[1]):
        np.testing.assert_array_equal(ours, theirs)
    assert planned[0] == eager[0]  # losses and accuracies, training and test, every epoch, exactly
    assert planned[2] == eager[2]  # the same number of dropout words drawn
    assert capsys.readouterr().err == ""


def test_one_planned_step_equals_one_eager_step_in_every_array():
    """Beyond the weights: the step's loss and correct count, and the batch it gathered."""
    batches = loader(count=128)
    mg.manual_seed(0)
    model = concise_mlp(hidden=(32, 32))
    optimizer = mg.optim.SGD(model.parameters(), lr=0.5)
    cursor = BatchCursor(batches)
    step = PlannedStep(model, optimizer, cursor, 64, steps=2)
    order = batches.epoch_order()
    cursor.start_epoch(order)
    step.start_epoch()
    step.step()

    mg.manual_seed(0)
    twin = concise_mlp(hidden=(32, 32))
    x, y = batches.batch(order, 0)
    np.testing.assert_array_equal(step.x, x.data)
    np.testing.assert_array_equal(step.y, y.data)
    logits = twin(x)
    loss = mg.nn.functional.cross_entropy(logits, y)
    loss.backward()
    mg.optim.SGD(twin.parameters(), lr=0.5).step()
    assert step.losses[0] == loss.data and step.corrects[0] == (logits.data.argmax(1) == y.data).sum()
    for ours, theirs in zip(model.parameters(), twin.parameters()):
        np.testing.assert_array_equal(ours.data, theirs.data)
        assert ours.grad is None  # the planned step keeps its gradients in its own buffers
    assert int(cursor.position[0]) == 64


@pytest.mark.parametrize(
    "groups_settings, folded",
    [
        ([{"lr": 0.5}], 0.5),
        ([{"lr": 0.125}, {"lr": 0.125}], 0.125),
        ([{"lr": 0.1}], None),  # not a power of two: lr * g would round differently
        ([{"lr": 0.5, "weight_decay": 1e-4}], None),
        ([{"lr": 0.5}, {"lr": 0.25}], None),
    ],
)
def test_the_learning_rate_is_folded_in_only_where_that_is_exact(groups_settings, folded):
    model = nn.Sequential(nn.Linear(784, 10), nn.Linear(10, 10))
    optimizer = mg.optim.SGD(
        [{"params": list(layer.parameters()), **settings} for layer, settings in zip(model, groups_settings * 2)],
        lr=1.0,
    )
    step = PlannedStep(model, optimizer, BatchCursor(loader()), 64, steps=1)
    assert step.folded_lr() == folded


class Doubler(nn.Module):
    def forward(self, x):
        return x * 2


def with_hook():
    model = concise_mlp(hidden=(8, 8))
    model[1].register_forward_hook(lambda *args: None)
    return model


def frozen():
    model = concise_mlp(hidden=(8, 8))
    model[0].bias.requires_grad = False
    return model


@pytest.mark.parametrize(
    "make, settings, problem",
    [
        (lambda: concise_mlp(hidden=(8, 8)), {"momentum": 0.9}, "SGD with momentum"),
        (lambda: nn.Sequential(nn.Linear(784, 8), Doubler(), nn.Linear(8, 10)), {}, "holds a Doubler"),
        (
            lambda: nn.Sequential(nn.Linear(784, 8), nn.GaussianNoise(0.1), nn.Linear(8, 10)),
            {},
            "holds a GaussianNoise",
        ),
        (lambda: nn.Linear(784, 10), {}, "the model is a Linear"),
        (lambda: nn.Sequential(nn.ReLU(), nn.Linear(784, 10)), {}, "applies a ReLU before its first Linear"),
        (
            lambda: nn.Sequential(nn.Linear(784, 8), nn.Dropout(0.2), nn.Dropout(0.2), nn.Linear(8, 10)),
            {},
            "two Dropouts",
        ),
        (lambda: nn.Sequential(nn.Linear(784, 8), nn.Dropout(1.0), nn.Linear(8, 10)), {}, "Dropout(p=1.0)"),
        (lambda: nn.Sequential(nn.Linear(784, 8), nn.Flatten(), nn.Linear(8, 10)), {}, "flattens after a Linear"),
        (lambda: nn.Sequential(nn.Linear(784, 8), nn.Linear(9, 10)), {}, "8 outputs feeds one with 9 inputs"),
        (with_hook, {}, "forward hooks"),
        (frozen, {}, "requires_grad=False"),
        (
            lambda: nn.Sequential(nn.Linear(784, 8, dtype="float64"), nn.Linear(8, 10)),
            {},
            "float32, float64; the planned step needs one float dtype",
        ),
    ],
)
def test_the_plan_names_what_it_cannot_handle(make, settings, problem):
    model = make()
    assert problem in plan_problem(model, mg.optim.SGD(model.parameters(), lr=0.1, **settings))


def test_the_plan_needs_the_chapters_loss_and_optimizer_and_all_its_parameters():
    model = concise_mlp(hidden=(8, 8))
    sgd = mg.optim.SGD(model.parameters(), lr=0.1)

    def squared_error(logits, labels):
        return (logits * logits).mean()

    assert "the loss is 'squared_error'" in plan_problem(model, sgd, squared_error)
    assert "the optimizer is Adam" in plan_problem(model, type("Adam", (), {})())
    partial = mg.optim.SGD(model[0].parameters(), lr=0.1)
    assert plan_problem(model, partial) == "the optimizer's parameters are not exactly the model's"


def test_the_loader_is_checked_once_for_labels_and_shapes():
    model = concise_mlp(hidden=(8, 8))
    assert loader_problem(model, loader()) is None
    bad = DataLoader(ArrayDataset(np.zeros((4, 784), np.uint8), np.array([0, 1, 10, 3])), 2)
    assert loader_problem(model, bad) == "the labels run from 0 to 10, outside [0, 9]"
    images = loader(images=(28, 28), flatten=False)
    assert loader_problem(model, images) == "the loader's batches are (28, 28) images and the model has no Flatten"
    assert "the batches have 100 features" in loader_problem(model, loader(images=(100,)))


def test_labels_out_of_range_turn_the_plan_off_in_one_line_and_the_eager_ops_say_what_is_wrong(capsys):
    model = concise_mlp(hidden=(8, 8))
    trainer = Trainer(model, mg.optim.SGD(model.parameters(), lr=0.5), progress=False)
    bad = DataLoader(ArrayDataset(np.zeros((4, 784), np.uint8), np.array([0, 1, 10, 3])), 2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\], got values from 3 to 10"):
        trainer.fit(bad, bad, epochs=1)
    assert capsys.readouterr().err == (
        "planned step off: the labels run from 0 to 10, outside [0, 9]; the eager ops run\n"
    )
    assert trainer.step_kind == "eager: the labels run from 0 to 10, outside [0, 9]"


def test_a_model_outside_the_plan_trains_eagerly_and_the_trainer_says_why_in_step_kind(capsys):
    model = concise_mlp(hidden=(8, 8))
    trainer = Trainer(model, mg.optim.SGD(model.parameters(), lr=0.5, momentum=0.9), progress=False)
    trainer.fit(loader(), loader(seed=1), epochs=1)
    assert trainer.planned is None
    assert trainer.step_kind.startswith("eager: SGD with momentum")
    assert capsys.readouterr().err == ""  # nothing was planned, so nothing fell back


def test_a_plan_is_made_again_when_what_it_was_made_with_changes(monkeypatch):
    """New parameter arrays, a new weight decay or dropout probability, manual_seed (a new dropout stream): the
    next pass plans again (on a GPU a graph holds all of these). A new learning rate does not."""
    made = []
    original = PlannedTraining._plan

    def counting(self, loader, training, made_with):
        made.append(training)
        return original(self, loader, training, made_with)

    monkeypatch.setattr(PlannedTraining, "_plan", counting)
    model = concise_mlp(hidden=(16, 16))
    optimizer = mg.optim.SGD(model.parameters(), lr=0.5)
    trainer = Trainer(model, optimizer, progress=False)
    train, test = loader(), loader(seed=1)
    trainer.fit(train, test, epochs=2)
    assert made == [True, False]  # once per loader and kind, however many epochs
    changes = [
        lambda: setattr(model[0].weight, "data", model[0].weight.data.copy()),
        lambda: optimizer.param_groups[0].update(weight_decay=1e-4),
        lambda: setattr(model[2], "p", 0.3),
        lambda: mg.manual_seed(1),
    ]
    for number, change in enumerate(changes, start=2):
        change()
        trainer.fit(train, test, epochs=1)
        assert len(made) == 2 * number
    optimizer.param_groups[0]["lr"] = 0.1  # read at every step (on a GPU: at replay)
    trainer.fit(train, test, epochs=1)
    assert len(made) == 2 * len(changes) + 2


def test_a_planned_run_that_diverges_stops_at_that_epoch():
    model = concise_mlp(hidden=(16, 16))
    trainer = Trainer(model, mg.optim.SGD(model.parameters(), lr=0.5), progress=False)
    train, test = loader(), loader(seed=1)
    trainer.fit(train, test, epochs=1)
    model[0].weight.data[0, :] = float("nan")  # in place: the plan's own array
    with pytest.raises(TrainingDiverged, match=r"the loss became nan in epoch 2"):
        trainer.fit(train, test, epochs=1)
    assert trainer.planned is not None and len(trainer.history) == 1


def test_a_graph_that_saved_the_old_weights_cannot_backward_after_a_planned_step():
    """The planned update marks each parameter changed in place, as optim.SGD.step does."""
    model = concise_mlp(hidden=(16, 16))
    x = mg.Tensor(np.random.default_rng(0).random((4, 784), dtype=np.float32))
    stale = model(x).sum()
    trainer = Trainer(model, mg.optim.SGD(model.parameters(), lr=0.5), progress=False)
    trainer.train_epoch(loader(count=64), 1)
    with pytest.raises(RuntimeError, match="was modified in place"):
        stale.backward()


def test_the_products_setting_is_checked():
    model = concise_mlp(hidden=(8, 8))
    optimizer = mg.optim.SGD(model.parameters(), lr=0.5)
    with pytest.raises(ValueError, match="products must be one of 'tile', 'tile 4x32', .*'cublas', .*got 'blas'"):
        PlannedStep(model, optimizer, BatchCursor(loader(count=64)), 64, 1, products="blas")
    # a tile shape by its name (benchmarks.gemm_speed's): the products a GPU's plan makes, in that shape
    step = PlannedStep(model, optimizer, BatchCursor(loader(count=64)), 64, 1, products="tile 4x16 2x2")
    assert (step.tile, step.tiles) == ((4, 16, 2, 16), {})
    step = PlannedStep(model, optimizer, BatchCursor(loader(count=64)), 64, 1, products="tile 8x16 2x2 side 8")
    assert (step.tile, step.tiles) == ((8, 16, 2, 8), {})
    assert tile_shapes("cublas") == (None, {})


def test_a_products_setting_can_name_a_shape_for_each_kind_and_size_of_product():
    """As benchmarks.gemm_speed prints it: the named products in their shapes, the rest in the one tile named
    alone (the default tile's where none is); each mistake said."""
    x = np.zeros((64, 784), np.float32)
    w = np.zeros((256, 784), np.float32)
    dz = np.zeros((64, 256), np.float32)
    setting = "tile 4x16 2x2, weight gradient 256x64x784=tile 8x16 2x2 side 8,forward 64x784x256 = tile 2x64"
    rest, named = tile_shapes(setting)
    assert rest == (4, 16, 2, 16)
    assert named == {("weight gradient", 256, 64, 784): (8, 16, 2, 8), ("forward", 64, 784, 256): (2, 64, 1, 16)}
    model = concise_mlp()
    step = PlannedStep(model, mg.optim.SGD(model.parameters(), lr=0.5), BatchCursor(loader()), 64, 1)
    step.tile, step.tiles = rest, named
    assert step.tile_for("weight gradient", dz.T, x) == (8, 16, 2, 8)
    assert step.tile_for("forward", x, w.T) == (2, 64, 1, 16)
    assert step.tile_for("input gradient", dz, w) == (4, 16, 2, 16)  # not named: the rest's
    assert tile_shapes("forward 64x784x256=tile 2x64") == ((4, 16, 1, 16), {("forward", 64, 784, 256): (2, 64, 1, 16)})
    mistakes = {
        "tile, forward 64x784x256=tile 3x3": "whose item 'forward 64x784x256=tile 3x3' is neither",
        "backward 64x784x256=tile": "whose item 'backward 64x784x256=tile' is neither",
        "forward 64x784=tile": "is neither",
        "forward 64xAx256=tile": "the dimensions must be whole numbers",
        "tile, tile 4x32": "names two tiles for the products no item names",
        "cublas, forward 64x784x256=tile": "whose item 'cublas' is neither",
    }
    for setting, message in mistakes.items():
        with pytest.raises(ValueError, match=message):
            tile_shapes(setting)
