"""The public API as the reference shows it: every public name has a docstring (the site's API reference is built from
them), and every public function of the library has type hints (mypy checks them in CI; minigrad ships py.typed)."""

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


# The chapter's programs (the training command, the tour, the experiments) are programs, not an API to import: their
# functions need docstrings, not type hints. Their model (minigrad.chapter.model) is API.
PROGRAMS = (
    "minigrad.chapter.dropout_mlp",
    "minigrad.chapter.autograd_tour",
    "minigrad.chapter.dropout_experiments",
    "minigrad.chapter.experiments",
)


def missing_annotations(function):
    signature = inspect.signature(function)
    missing = [
        name
        for index, (name, parameter) in enumerate(signature.parameters.items())
        if parameter.annotation is inspect.Parameter.empty and not (index == 0 and name in ("self", "cls"))
    ]
    if signature.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


def test_every_public_function_of_the_library_has_type_hints():
    checked, missing = 0, {}
    for name, value in public_objects():
        if name.startswith(PROGRAMS) or inspect.ismodule(value):
            continue
        functions = [value.__init__] if inspect.isclass(value) and "__init__" in vars(value) else []
        functions += [value] if inspect.isfunction(value) or inspect.ismethod(value) else []
        for function in functions:
            checked += 1
            if missing_annotations(function):
                missing[name] = missing_annotations(function)
    assert checked > 250
    assert not missing, f"{len(missing)} public functions without full type hints: {missing}"


def test_the_package_says_it_is_typed():
    import os

    assert os.path.exists(os.path.join(os.path.dirname(minigrad.__file__), "py.typed"))


def test_the_api_reference_has_a_page_for_every_public_module():
    import os
    import re

    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "api")
    directives = set()
    for name in os.listdir(folder):
        with open(os.path.join(folder, name)) as file:
            directives |= set(re.findall(r"^::: ([\w.]+)", file.read(), flags=re.MULTILINE))
    modules = {name for name, value in public_objects() if inspect.ismodule(value)}
    missing = sorted(modules - directives)
    assert not missing, f"public modules the API reference (docs/api/*.md) leaves out: {missing}"
