"""What every command line of minigrad's examples and benchmarks shares: a bad flag is one line that names
the flag and says what it accepts, exit status 2, found before any work starts.

``OneLineParser`` is argparse with that error format; the ``*_int``/``*_float`` helpers are argument
types with their requirement in the message; ``check_*`` run after parsing, for what needs the file
system or the device (a folder that cannot be written, a GPU that is not there, a model too big).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

from . import backend


def program_name(module: str) -> str:
    """The command as the user typed it, for ``--help`` and errors.

    ``python -m examples.dropout_mlp`` in a clone, ``minigrad-dropout-mlp`` (the console script) once installed,
    else ``python -m <module>``, the form that works wherever the package is installed.
    """
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if module == "__main__":  # the command's own module, run with python -m: its real name is its spec's
        module = spec.name if spec is not None else os.path.basename(sys.argv[0])
    if spec is not None and spec.name.rsplit(".", 1)[-1] == module.rsplit(".", 1)[-1]:
        return f"python -m {spec.name}"
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if script.startswith("minigrad-") and not script.endswith(".py"):
        return script
    return f"python -m {module}"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag prints one line (what is wrong) and exits 2, and ``--help`` shows the defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message (see --help)`` and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Adds "(default: X)" to each flag's help that does not say its default already."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            "default" in text
            or action.default is None
            or action.default is False
            or not action.option_strings
            or action.default is argparse.SUPPRESS
        ):
            return text
        default = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else action.default
        return f"{text} (default: {default})".lstrip()


def _number(kind, check, requirement):
    name = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value

    parse.__name__ = requirement  # argparse names the type in some messages
    parse.__doc__ = f"Parse {name} that must be {requirement}; anything else is a one-line argparse error."
    return parse


probability = _number(float, lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
positive_float = _number(float, lambda v: v > 0 and math.isfinite(v), "a finite number > 0")
non_negative_float = _number(float, lambda v: v >= 0 and math.isfinite(v), "a finite number >= 0")
positive_int = _number(int, lambda v: v >= 1, "at least 1")
seed = _number(int, lambda v: 0 <= v < 2**63, "an integer in [0, 2**63 - 1]")


def device_name(text: str) -> str:
    """A device name (cpu, cuda, cuda:N); whether this machine has it is ``check_device``'s question."""
    try:
        return backend.parse_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def products_setting(text: str) -> str:
    """A planned step's ``products`` on a GPU: a name of ``fast.plan.PRODUCTS``, or tile shapes by product
    (``fast.plan.tile_shapes`` says how and what is wrong)."""
    from .fast.plan import tile_shapes

    try:
        tile_shapes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def add_hidden_flag(parser: argparse.ArgumentParser, default: Sequence[int]) -> None:
    """``--hidden H1 H2``, the two hidden layers' widths, as every command that trains the chapter's MLP takes it
    (``check_mlp_fits`` checks them against the device's memory)."""
    parser.add_argument(
        "--hidden",
        type=positive_int,
        nargs=2,
        default=list(default),
        metavar=("H1", "H2"),
        help="the two hidden layers' widths",
    )


def check_device(parser: argparse.ArgumentParser, device: str, flag: str = "--device") -> str:
    """The device, normalised; a flag error when this machine does not have it."""
    try:
        return backend.check_device(device)
    except backend.DeviceError as error:
        parser.error(f"argument {flag}: {error}")


def check_writable_folder(parser: argparse.ArgumentParser, path: str, flag: str = "--out") -> None:
    """Create ``path`` if needed and prove a file can be written in it, or fail as a flag error."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        parser.error(f"argument {flag}: cannot write into {path!r}: {error.strerror or error}")


def check_writable_file(parser: argparse.ArgumentParser, path: str, flag: str = "--json") -> None:
    """``path`` must be a file that can be written (its folder is created if needed)."""
    if os.path.isdir(path):
        parser.error(f"argument {flag}: {path!r} is a folder; give a file name")
    check_writable_folder(parser, os.path.dirname(os.path.abspath(path)), flag)


def lock_folder(parser: argparse.ArgumentParser, path: str, flag: str = "--out") -> int | None:
    """Hold an exclusive lock on the folder ``path`` for as long as this process runs (keep the descriptor
    returned), or fail as a flag error when another run holds it. The kernel releases the lock when its process
    ends, so a killed run leaves nothing stuck, and no lock file is left in the folder. Where such locks do not
    exist (Windows), nothing is locked."""
    try:
        import fcntl
    except ImportError:
        return None
    descriptor = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        parser.error(f"argument {flag}: {path!r} is in use by another run; wait for it to end or choose another {flag}")
    return descriptor


def unlock_folder(descriptor: int | None) -> None:
    """Release what ``lock_folder`` returned (ending the process releases it too)."""
    if descriptor is not None:
        os.close(descriptor)


def remove_partial_files(path: str, names: Iterable[str]) -> None:
    """Delete what a killed run left half-written in ``path`` (``.NAME.*.part``, see files.atomic_write), for
    each of ``names``; call it only while holding the folder's lock, when no other run can be writing."""
    for entry in os.listdir(path):
        if entry.endswith(".part") and any(entry.startswith(f".{name}.") for name in names):
            try:
                os.remove(os.path.join(path, entry))
            except FileNotFoundError:
                pass


def check_data_dir(parser: argparse.ArgumentParser, path: str | None, flag: str = "--data-dir") -> None:
    """An explicit data folder may not exist yet (the files are downloaded into it), but it may not be a file."""
    if path is not None and os.path.exists(path) and not os.path.isdir(path):
        parser.error(f"argument {flag}: {path!r} is a file; give the folder that holds the four IDX files")


def mlp_bytes(sizes: Sequence[int], batch_size: int) -> int:
    """A generous estimate of the memory that training an MLP with these layer sizes takes, in bytes:
    float32 weights, their gradients and one temporary of each, and a few arrays of each layer's activations."""
    parameters = sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))
    activations = batch_size * sum(sizes)
    return 4 * (3 * parameters + 8 * activations)


def memory_of(device: str) -> int | None:
    """Bytes of memory on ``device``: the machine's RAM for the CPU, the GPU's own memory otherwise."""
    if device == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # no sysconf: do not guess
            return None
    with backend.on_device(device):
        return backend.cupy.cuda.runtime.memGetInfo()[1]


def check_mlp_fits(
    parser: argparse.ArgumentParser, sizes: Sequence[int], batch_size: int, device: str, flag: str = "--hidden"
) -> None:
    """A flag error, before any work, when the model cannot fit on the device (rather than a MemoryError later)."""
    needed, available = mlp_bytes(sizes, batch_size), memory_of(device)
    if available is not None and needed > available:
        shape = "-".join(map(str, sizes))
        parser.error(
            f"argument {flag}: a {shape} MLP needs about {needed / 2**30:.1f} GiB to train, more than the "
            f"{available / 2**30:.1f} GiB of {device}; choose smaller layers"
        )


def exit_status(action: Callable[[], Any], errors: type[BaseException] | tuple[type[BaseException], ...] = ()) -> int:
    """Run ``action()`` for a benchmark's ``main``: 0 when it ends; on Ctrl-C one line and 130; on one of
    ``errors`` (bad data, a full disk) one line ``error: ...`` and 1. Never a traceback for either."""
    try:
        action()
    except KeyboardInterrupt:
        print("interrupted: no results were written", file=sys.stderr)
        return 130
    except errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
