"""The package as a user installs it: its name, its extras, and every install command it prints."""

import os
import re
import sys

import pytest

from minigrad import backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None


@pytest.fixture(scope="module")
def project():
    if tomllib is None:
        pytest.skip("reading pyproject.toml needs Python 3.11's tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as file:
        return tomllib.load(file)["project"]


def test_the_install_hint_names_the_real_distribution_and_its_cuda_extra(project):
    assert backend.DISTRIBUTION == project["name"]
    commands = re.findall(r'pip install "?([\w.-]+)(?:\[(\w+)\])?', backend.CUPY_INSTALL_HINT)
    assert (project["name"], "cuda") in commands
    cuda_package = project["optional-dependencies"]["cuda"][0].split(">")[0].split("=")[0]
    assert f"{cuda_package})" in backend.CUPY_INSTALL_HINT  # the extra's package is the one the hint explains


def test_the_cuda_extra_is_what_ci_installs(project):
    with open(os.path.join(ROOT, ".ci", "run")) as file:
        ci = file.read()
    cuda_package = project["optional-dependencies"]["cuda"][0].split(">")[0]
    assert f"{cuda_package}==" in ci


def test_every_console_script_points_to_a_main_that_exists(project):
    import importlib

    assert project["scripts"], "no console scripts"
    for name, target in project["scripts"].items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name
        shim = os.path.join(ROOT, "examples", module.rsplit(".", 1)[1] + ".py")
        assert os.path.exists(shim), f"{name}: no examples/ entry for a clone's python -m form"


def test_no_module_names_an_install_command_for_another_distribution():
    wrong = []
    for folder, _, files in os.walk(os.path.join(ROOT, "minigrad")):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as file:
                    text = file.read()
                wrong += [(name, m) for m in re.findall(r'pip install "?minigrad(?!-d2l)[\w\[\]]*', text)]
    assert not wrong, wrong


def test_help_shows_every_default():
    """`--help` of each command says what a flag does when it is not given."""
    import argparse

    from minigrad.chapter import dropout_mlp

    parser = dropout_mlp.build_parser()
    formatter = parser._get_formatter()
    silent = []
    for action in parser._actions:
        if not action.option_strings or action.default in (None, argparse.SUPPRESS) or action.default is False:
            continue
        if "default" not in formatter._expand_help(action) if action.help else True:
            silent.append(action.option_strings[0])
    assert not silent, f"flags whose --help does not show their default: {silent}"
    assert "(default: 256)" in parser.format_help() and "(default: 0)" in parser.format_help()


@pytest.mark.parametrize(
    "command",
    [["-m", "minigrad.chapter.dropout_mlp"], ["-m", "examples.dropout_mlp"], ["minigrad-dropout-mlp"]],
    ids=["python -m (installed)", "python -m (clone)", "console script"],
)
def test_each_form_of_the_command_names_itself_in_its_errors(command):
    import shutil
    import subprocess

    if command[0] == "-m":
        argv, name = [sys.executable, *command], f"python -m {command[1]}"
    else:
        script = shutil.which(command[0]) or os.path.join(os.path.dirname(sys.executable), command[0])
        if not os.path.exists(script):
            pytest.skip(f"{command[0]} is not installed here (pip install -e . makes it)")
        argv, name = [script], command[0]
    result = subprocess.run([*argv, "--epochs", "0"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(f"{name}: error: argument --epochs: must be at least 1"), result.stderr
