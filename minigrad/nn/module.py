"""Module and Parameter: the containers that models are built from, as in PyTorch."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .. import backend
from .._tensor import Tensor
from ..autograd import mark_changed_in_place
from ..backend import Array

Hook = Callable[["Module", tuple, Any], Any]
"""A forward hook: ``hook(module, inputs, output)``; what it returns, unless None, replaces the output."""

IncompatibleKeys = collections.namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])
IncompatibleKeys.__doc__ = (
    "What load_state_dict returns, as in PyTorch: the names it did not find, and those it did not use."
)


class Parameter(Tensor):
    """A tensor that a Module owns and an optimizer updates (requires_grad is on)."""

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class RemovableHandle:
    """What ``register_forward_hook`` returns, as PyTorch's: ``handle.remove()`` takes the hook away (once is enough;
    calling the handle does the same)."""

    def __init__(self, hooks: list[Hook], hook: Hook) -> None:
        self.hooks, self.hook = hooks, hook

    def remove(self) -> None:
        """Take the hook away (nothing happens if it is gone already)."""
        if self.hook in self.hooks:
            self.hooks.remove(self.hook)

    __call__ = remove


class Module:
    """Base class of layers and models.

    Subclasses set Parameters and sub-Modules as attributes in ``__init__`` and define
    ``forward``; calling the module runs ``forward``. Parameters are found by walking the
    attributes in the order they were set (no registration step). ``train()``/``eval()`` set
    ``training`` on this module and every module inside it; only layers such as Dropout read it.
    """

    training = True
    stochastic = False  # True for layers that draw noise while training (Dropout and its cousins); see uncertainty.py
    _forward_hooks: list[Hook] | tuple[()] = ()  # a list once a hook is registered

    def forward(self, *inputs: Any) -> Any:
        """The module's computation; subclasses define it, and ``module(x)`` calls it (then the forward hooks)."""
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *inputs: Any) -> Any:
        output = self.forward(*inputs)
        for hook in self._forward_hooks:
            replaced = hook(self, inputs, output)
            if replaced is not None:  # as in PyTorch, a hook may return a new output
                output = replaced
        return output

    def register_forward_hook(self, hook: Hook) -> RemovableHandle:
        """Call ``hook(module, inputs, output)`` after every forward (what it returns, unless None, replaces the
        output, as in PyTorch); returns a handle whose ``remove()`` takes the hook away."""
        if not isinstance(self._forward_hooks, list):
            self._forward_hooks = []
        self._forward_hooks.append(hook)
        return RemovableHandle(self._forward_hooks, hook)

    # --- the tree of modules and parameters -------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, Module]]:
        """(name, module) for each direct submodule, in the order they were assigned."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def children(self) -> Iterator[Module]:
        """Each direct submodule, in the order they were assigned."""
        for _, child in self.named_children():
            yield child

    def named_modules(self, prefix: str = "", remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
        """(dotted name, module) for this module and every module inside it; a module held twice (tied) is listed
        once, under its first name, unless ``remove_duplicate=False``."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if remove_duplicate:
                if id(module) in seen:
                    continue
                seen.add(id(module))
            yield name, module
            children = [
                (f"{name}.{child_name}" if name else child_name, child) for child_name, child in module.named_children()
            ]
            stack.extend(reversed(children))

    def modules(self) -> Iterator[Module]:
        """This module and every submodule below it, each once, depth first."""
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "", remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs, e.g. ("0.weight", W); a parameter held twice (tied) is listed once,
        under its first name, unless ``remove_duplicate=False``."""
        seen = set()
        for module_name, module in self.named_modules(prefix, remove_duplicate):
            for name, value in vars(module).items():
                if isinstance(value, Parameter) and not (remove_duplicate and id(value) in seen):
                    seen.add(id(value))
                    yield (f"{module_name}.{name}" if module_name else name), value

    def parameters(self) -> Iterator[Parameter]:
        """Every parameter of this module and its submodules, each once (what an optimizer takes)."""
        for _, parameter in self.named_parameters():
            yield parameter

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call ``fn(module)`` on every module inside this one, then on this one (as PyTorch does); returns self.
        For example ``net.apply(init_weights)``."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # --- modes, devices, gradients ------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and all inside it (dropout on); returns self."""
        if not isinstance(mode, bool):
            raise TypeError(f"train(mode): mode must be True or False, got {mode!r}")
        for module in self.modules():
            module.training = mode
        return self

    def eval(self) -> Module:
        """Set evaluation mode (dropout is the identity); returns self."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Switch gradients on or off for every parameter (to freeze layers); returns self."""
        for parameter in self.parameters():
            parameter.requires_grad_(requires_grad)
        return self

    def to(self, device: str | None) -> Module:
        """Move every parameter (and its gradient) to ``device``, in place; returns self."""
        for parameter in self.parameters():
            parameter.data = backend.to_device(parameter.data, device)
            if parameter.grad is not None:
                parameter.grad = backend.to_device(parameter.grad, device)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget every parameter's gradient: None, or zeros in place with ``set_to_none=False`` (as PyTorch)."""
        for parameter in self.parameters():
            if set_to_none or parameter.grad is None:
                parameter.grad = None
            else:
                parameter.grad[...] = 0

    # --- saving and loading ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Array]:
        """{dotted name: raw array} of every parameter (the arrays themselves, not copies), a tied parameter
        under each of its names, as in PyTorch."""
        return {name: parameter.data for name, parameter in self.named_parameters(remove_duplicate=False)}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy arrays (NumPy or CuPy) into the parameters of the same names, in place, as PyTorch does.

        The values move to each parameter's device and dtype. With ``strict``, missing or unexpected
        names are an error; a shape mismatch always is. Nothing is changed unless every entry fits.
        Returns ``(missing_keys, unexpected_keys)``, as PyTorch's ``load_state_dict`` does.
        """
        if not isinstance(state_dict, dict):
            raise TypeError(
                f"load_state_dict takes a dict of name -> array (a state_dict()), got {type(state_dict).__name__}"
            )
        parameters = dict(self.named_parameters(remove_duplicate=False))
        missing = sorted(set(parameters) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(parameters))
        if strict and (missing or unexpected):
            raise ValueError(
                f"load_state_dict: the state does not match {type(self).__name__}: "
                f"missing {missing}, unexpected {unexpected}"
            )
        updates = []
        for name, parameter in parameters.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            value = value.data if isinstance(value, Tensor) else value
            if not hasattr(value, "shape") or tuple(value.shape) != parameter.shape:
                raise ValueError(
                    f"load_state_dict: {name!r} has shape {tuple(getattr(value, 'shape', ()))} in the "
                    f"state but {parameter.shape} in the model"
                )
            updates.append((parameter, backend.to_device(value, parameter.device)))
        for parameter, value in updates:
            parameter.data[...] = value
            mark_changed_in_place(parameter)
        return IncompatibleKeys(missing, unexpected)

    def __repr__(self):
        children = list(self.named_children())
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  ({name}): " + repr(child).replace("\n", "\n  ") for name, child in children]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"

    def extra_repr(self) -> str:
        """The settings shown in the module's ``repr`` between its parentheses (e.g. ``p=0.5``)."""
        return ""
