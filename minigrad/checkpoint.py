"""Checkpoints and weights: named arrays and a JSON record in one ``.npz``, written atomically.

Each file is written through ``files.atomic_write``, so a crash leaves the previous checkpoint whole.
Checkpoints are ``.npz`` files loaded with ``allow_pickle=False``: no code runs on load.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy

from . import backend
from ._tensor import Tensor
from .files import PathLike, atomic_write, strict_json

# ---------------------------------------------------------------------------------------------------------
# Training checkpoints: named arrays (weights, optimizer buffers) and a JSON record of everything else
# (the epoch, the history, settings, random generators' states), in one .npz written atomically.

CHECKPOINT_META = "checkpoint.json"


def save_checkpoint(path: PathLike, arrays: Mapping[str, Any], meta: Any) -> None:
    """Save ``arrays`` ({name: NumPy or CuPy array}) and ``meta`` (JSON-able) as one .npz file, atomically."""
    arrays = {name: backend.to_numpy(value) for name, value in arrays.items()}
    if CHECKPOINT_META in arrays:
        raise ValueError(f"{CHECKPOINT_META!r} is reserved for the checkpoint's own record")
    arrays[CHECKPOINT_META] = numpy.array(json.dumps(strict_json(meta), allow_nan=False))
    with atomic_write(path) as file:
        numpy.savez(file, **arrays)


def load_checkpoint(path: PathLike) -> tuple[dict[str, numpy.ndarray], Any]:
    """Read a checkpoint written by ``save_checkpoint``: returns (arrays, meta)."""
    arrays = load_state_dict(path)
    if CHECKPOINT_META not in arrays:
        raise ValueError(f"{path}: an .npz of arrays, but not a training checkpoint (no {CHECKPOINT_META} record)")
    return arrays, json.loads(str(arrays.pop(CHECKPOINT_META)))


def save_state_dict(state_dict: Mapping[str, Any], path: PathLike) -> None:
    """Save {name: array} (NumPy or CuPy arrays, or a Module's state_dict()) as an .npz file, atomically."""
    # (Not getattr(value, "data"): a CuPy array has a .data too, its memory pointer.)
    arrays = {
        name: backend.to_numpy(value.data if isinstance(value, Tensor) else value) for name, value in state_dict.items()
    }
    with atomic_write(path) as file:
        numpy.savez(file, **arrays)  # type: ignore[arg-type]  # (NumPy's stubs mistype **arrays)


def load_state_dict(path: PathLike) -> dict[str, numpy.ndarray]:
    """Read an .npz checkpoint into {name: NumPy array}; a clear ValueError if it is not one."""
    try:
        with numpy.load(os.fspath(path), allow_pickle=False) as archive:
            if not isinstance(archive, numpy.lib.npyio.NpzFile):
                raise ValueError(f"{path}: a single .npy array, not an .npz checkpoint of named arrays")
            return {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable .npz checkpoint ({error})") from None
    except ValueError as error:
        if "pickle" not in str(error):  # NumPy's word for bytes that are neither .npy nor .npz: never unpickle them
            raise
        raise ValueError(
            f"{path}: not an .npz checkpoint (its bytes are neither an .npz archive nor an .npy array)"
        ) from None
