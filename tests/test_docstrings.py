"""Every public module, class, function, method and property has a docstring: the API reference is built from them."""

import importlib
import inspect
import pkgutil

import minigrad


def public_objects():
    """(qualified name, object) for every public module of minigrad and what it defines."""
    for info in pkgutil.walk_packages(minigrad.__path__, "minigrad."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue
        module = importlib.import_module(info.name)
        yield info.name, module
        for name, value in vars(module).items():
            if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            if not (inspect.isclass(value) or inspect.isfunction(value)):
                continue
            yield f"{info.name}.{name}", value
            if inspect.isclass(value):
                for attribute, member in vars(value).items():
                    if attribute.startswith("_"):
                        continue
                    if isinstance(member, property):
                        yield f"{info.name}.{name}.{attribute}", member.fget
                    elif inspect.isfunction(member) or isinstance(member, (staticmethod, classmethod)):
                        # inspect.getdoc finds an override's docstring in the base class, as the reference shows it
                        yield f"{info.name}.{name}.{attribute}", getattr(value, attribute)


def test_every_public_name_has_a_docstring():
    names = list(public_objects())
    assert len(names) > 300  # the walk reaches the whole package
    missing = [name for name, value in names if not (inspect.getdoc(value) or "").strip()]
    assert not missing, f"{len(missing)} public names without a docstring: {missing}"
