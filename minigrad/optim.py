"""Optimizers and learning-rate schedules, as PyTorch defines them: ``SGD``, ``StepLR``, ``CosineAnnealingLR``.

SGD, with g = dL/dw + weight_decay * w, and with momentum mu > 0 a velocity b per parameter:
    b <- g on the first step, then b <- mu b + (1 - dampening) g;
    w <- w - lr * (g + mu b) with Nesterov momentum, else w - lr * b;
and without momentum simply w <- w - lr * g. Each update is applied in place to the parameter's array.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy

from . import backend
from ._tensor import Tensor
from .autograd import mark_changed_in_place
from .backend import Array, CudaKernel, cupy


class Optimizer:
    """Holds parameter groups: lists of parameters that share settings such as ``lr``.

    ``params`` is an iterable of leaf tensors (e.g. ``model.parameters()``), or of dicts
    ``{"params": [...], **settings}`` whose settings override the defaults for that group (e.g.
    weight decay on the weights only). As in PyTorch, a bare tensor, a tensor made by an op, a
    parameter listed twice and a setting the optimizer does not know are errors.
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        if isinstance(params, Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors or dicts, "
                "but got a Tensor: pass [tensor] or model.parameters()"
            )
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list: pass model.parameters()")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = defaults
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[int, dict[str, Array]] = {}  # per parameter (keyed by id), e.g. {"momentum_buffer": array}
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a group ``{"params": [...], **settings}``; settings not given take the defaults."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(
                f"a parameter group is a dict with a 'params' entry, got {type(group).__name__}; "
                "give either tensors or groups, not both"
            )
        unknown = sorted(set(group) - set(self.defaults) - {"params"})
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no setting {', '.join(map(repr, unknown))}; its settings "
                f"are {', '.join(sorted(self.defaults))}"
            )
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for parameter in params:
            if not isinstance(parameter, Tensor):
                raise TypeError(
                    f"optimizer can only optimize Tensors, but one of the params is {type(parameter).__name__}"
                )
            if not parameter.is_leaf:
                raise ValueError(
                    "can't optimize a non-leaf Tensor (one made by an op): optimize the tensors "
                    "the computation starts from"
                )
            if id(parameter) in seen:
                raise ValueError(
                    f"a parameter of shape {parameter.shape} is listed twice (in one group or in two): "
                    f"it would be updated twice per step"
                )
            seen.add(id(parameter))
        group = {**self.defaults, **group, "params": params}
        self._check(group)
        self.param_groups.append(group)

    def _check(self, group):
        pass

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: set them to None (so the next backward assigns rather than adds), or with
        ``set_to_none=False`` fill them with zeros in place, as PyTorch does."""
        for group in self.param_groups:
            for parameter in group["params"]:
                if set_to_none or parameter.grad is None:
                    parameter.grad = None
                else:
                    parameter.grad[...] = 0

    def step(self) -> None:
        """Update every parameter from its ``.grad``; subclasses define the rule."""
        raise NotImplementedError

    # --- saving and resuming, as PyTorch's state_dict: parameters are named by their position -------------
    def state_dict(self) -> dict[str, Any]:
        """{"state": {index: {name: array}}, "param_groups": [settings with "params": [indices]]}."""
        index = {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        groups = [
            {**{k: v for k, v in g.items() if k != "params"}, "params": [index[id(p)] for p in g["params"]]}
            for g in self.param_groups
        ]
        state = {index[key]: dict(value) for key, value in self.state.items() if key in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the settings and buffers saved by ``state_dict`` into an optimizer over the same parameters."""
        groups = state_dict["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("load_state_dict: the saved optimizer has groups of other sizes than this one")
        parameters = [p for g in self.param_groups for p in g["params"]]
        for group, saved in zip(self.param_groups, groups):
            group.update({k: v for k, v in saved.items() if k != "params"})
            self._check(group)
        self.state = {}
        for position, entries in state_dict["state"].items():
            parameter = parameters[int(position)]
            self.state[id(parameter)] = {
                name: backend.to_device(value, parameter.device).astype(parameter.dtype)
                for name, value in entries.items()
            }


class SGD(Optimizer):
    """Minibatch stochastic gradient descent, with PyTorch's momentum, dampening, Nesterov and weight decay.

    The loss is already a mean over the batch, so the gradient needs no division by the batch
    size (the chapter's ``sgd(params, lr, batch_size)`` divides because its loss is a sum).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(
            params,
            {
                "lr": lr,
                "momentum": momentum,
                "dampening": dampening,
                "weight_decay": weight_decay,
                "nesterov": nesterov,
            },
        )

    def _check(self, group):
        for name in ("lr", "momentum", "dampening", "weight_decay"):
            value = group[name]
            if isinstance(value, (bool, numpy.bool_)) or not isinstance(
                value, (int, float, numpy.integer, numpy.floating)
            ):
                raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            group[name] = float(value)  # a NumPy scalar too, as PyTorch accepts one
        if not isinstance(group["nesterov"], (bool, numpy.bool_)):
            raise TypeError(f"nesterov must be True or False, got {group['nesterov']!r}")
        if not group["lr"] > 0:
            raise ValueError(f"learning rate must be > 0, got {group['lr']}")
        if group["momentum"] < 0 or group["weight_decay"] < 0:
            raise ValueError(
                f"momentum and weight_decay must be >= 0, got {group['momentum']} and {group['weight_decay']}"
            )
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def step(self) -> None:
        """One update of every parameter with a gradient."""
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                if group["momentum"] == 0:
                    self._plain_step(parameter.data, parameter.grad, group["lr"], group["weight_decay"])
                else:
                    self._momentum_step(parameter, group)
                mark_changed_in_place(parameter)  # a graph that saved the old weights must not backward

    # The chapter's update, in place: w <- w - lr * (g + weight_decay * w); one fused pass on a GPU.
    plain_step_gpu = CudaKernel(
        "T grad, T lr, T weight_decay", "T param", "param -= lr * (grad + weight_decay * param)", "minigrad_sgd"
    )

    def _plain_step(self, w, g, lr, weight_decay):
        dtype = w.dtype.type
        if backend.get_array_module(w) is cupy:
            self.plain_step_gpu(g, dtype(lr), dtype(weight_decay), w)
            return
        if weight_decay:
            g = g + dtype(weight_decay) * w
        w -= dtype(lr) * g

    def _momentum_step(self, parameter, group):
        w, dtype = parameter.data, parameter.dtype.type
        g = parameter.grad + dtype(group["weight_decay"]) * w if group["weight_decay"] else parameter.grad
        state = self.state.setdefault(id(parameter), {})
        if "momentum_buffer" not in state:
            buffer = state["momentum_buffer"] = g.copy()
        else:
            buffer = state["momentum_buffer"]
            buffer *= dtype(group["momentum"])
            buffer += dtype(1 - group["dampening"]) * g
        step = g + dtype(group["momentum"]) * buffer if group["nesterov"] else buffer
        w -= dtype(group["lr"]) * step


# ---------------------------------------------------------------------------------------------------------
# Learning-rate schedules: call step() once per epoch, after the optimizer's steps. As in PyTorch, each step
# changes the rate a group has now (the recursive, "chainable" form), so two schedules stepped together
# compose (StepLR halving what CosineAnnealingLR set) instead of the last one overwriting the other. Used
# alone, a schedule follows its closed form (up to float rounding); a resumed one continues from the rate the
# optimizer's state_dict restored.


def _is_count(value):
    """An integer >= 1 (a NumPy integer too), not a bool: a schedule's step_size or T_max."""
    return isinstance(value, (int, numpy.integer)) and not isinstance(value, (bool, numpy.bool_)) and value >= 1


class LRScheduler:
    """Changes each group's ``lr`` once per ``step()`` by ``next_lr``; ``last_epoch`` counts the calls.

    ``base_lrs`` are the rates the groups had when the first schedule was made (kept in each group as
    ``initial_lr``, as PyTorch does, so a second schedule on the same optimizer starts from the same base).
    """

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"{type(self).__name__} takes an optimizer (e.g. optim.SGD), got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = 0

    def next_lr(self, lr: float, base_lr: float, epoch: int) -> float:
        """The rate of ``epoch`` (>= 1), given the rate ``lr`` the group has now."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch and set each group's learning rate from the rate it has now (so schedules chain)."""
        self.last_epoch += 1
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.next_lr(group["lr"], base_lr, self.last_epoch)

    def get_last_lr(self) -> list[float]:
        """The learning rate of each group, as last set."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """The epoch count, the base rates and the last rates, for a checkpoint."""
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs), "last_lrs": self.get_last_lr()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue where ``state_dict`` left off. The groups' rates are set to the saved ones too (PyTorch leaves
        that to the optimizer's own ``load_state_dict``), since each step starts from the rate a group has."""
        self.last_epoch, self.base_lrs = state_dict["last_epoch"], list(state_dict["base_lrs"])
        if "last_lrs" in state_dict:
            for group, lr in zip(self.optimizer.param_groups, state_dict["last_lrs"]):
                group["lr"] = lr


class StepLR(LRScheduler):
    """lr = base lr * gamma^(epoch // step_size): multiplied by gamma every ``step_size`` epochs."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        if not _is_count(step_size) or not gamma > 0:
            raise ValueError(f"StepLR needs an integer step_size >= 1 and gamma > 0, got {step_size!r} and {gamma!r}")
        super().__init__(optimizer)
        self.step_size, self.gamma = step_size, gamma

    def next_lr(self, lr: float, base_lr: float, epoch: int) -> float:
        return lr * self.gamma if epoch % self.step_size == 0 else lr


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base lr - eta_min) (1 + cos(pi epoch / T_max)) / 2, as PyTorch's.

    From the base rate down to eta_min at epoch T_max; past T_max the cosine rises again, back to
    the base rate at 2 T_max (PyTorch's schedule is periodic, not clamped). Each step multiplies the
    distance to eta_min by the ratio of the cosine factors of this epoch and the last; where the last
    factor is 0 (the bottom of a period), it adds the first step of the rise instead.
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        if not _is_count(T_max):
            raise ValueError(f"CosineAnnealingLR needs an integer T_max >= 1, got {T_max!r}")
        super().__init__(optimizer)
        self.T_max, self.eta_min = T_max, eta_min

    def next_lr(self, lr: float, base_lr: float, epoch: int) -> float:
        T, eta_min = self.T_max, self.eta_min
        if (epoch - 1 - T) % (2 * T) == 0:
            return lr + (base_lr - eta_min) * (1 - math.cos(math.pi / T)) / 2
        return (1 + math.cos(math.pi * epoch / T)) / (1 + math.cos(math.pi * (epoch - 1) / T)) * (
            lr - eta_min
        ) + eta_min
