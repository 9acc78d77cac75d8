"""Writing files so that a crash never leaves a half-written one: checkpoints, metrics, downloads.

Everything is written to a temporary file in the same folder and renamed into place
(``os.replace`` is atomic on POSIX and Windows), so a reader sees the old file or the new one.
Checkpoints are ``.npz`` files loaded with ``allow_pickle=False``: no code runs on load.
"""
import contextlib
import json
import math
import os
import tempfile
import zipfile

import numpy

from . import backend
from ._tensor import Tensor


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file next to ``path``; on success rename it to ``path``, on error delete it."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".part")
    try:
        with os.fdopen(handle, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_current_umask())  # mkstemp makes it private (0600); use the usual mode
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def strict_json(value):
    """``value`` with every NaN or infinite float replaced by None, so that it is valid JSON (null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


def save_json(data, path):
    """Write ``data`` as indented, strictly valid JSON (NaN and infinities become null), atomically."""
    text = json.dumps(strict_json(data), indent=2, allow_nan=False)
    with atomic_write(path, "w") as file:
        file.write(text + "\n")


# ---------------------------------------------------------------------------------------------------------
# Training checkpoints: named arrays (weights, optimizer buffers) and a JSON record of everything else
# (the epoch, the history, settings, random generators' states), in one .npz written atomically.

CHECKPOINT_META = "checkpoint.json"


def save_checkpoint(path, arrays, meta):
    """Save ``arrays`` ({name: NumPy or CuPy array}) and ``meta`` (JSON-able) as one .npz file, atomically."""
    arrays = {name: backend.to_numpy(value) for name, value in arrays.items()}
    if CHECKPOINT_META in arrays:
        raise ValueError(f"{CHECKPOINT_META!r} is reserved for the checkpoint's own record")
    arrays[CHECKPOINT_META] = numpy.array(json.dumps(strict_json(meta), allow_nan=False))
    with atomic_write(path) as file:
        numpy.savez(file, **arrays)


def load_checkpoint(path):
    """Read a checkpoint written by ``save_checkpoint``: returns (arrays, meta)."""
    arrays = load_state_dict(path)
    if CHECKPOINT_META not in arrays:
        raise ValueError(f"{path}: an .npz of arrays, but not a training checkpoint (no {CHECKPOINT_META} record)")
    return arrays, json.loads(str(arrays.pop(CHECKPOINT_META)))


def save_state_dict(state_dict, path):
    """Save {name: array} (NumPy or CuPy arrays, or a Module's state_dict()) as an .npz file, atomically."""
    # (Not getattr(value, "data"): a CuPy array has a .data too, its memory pointer.)
    arrays = {name: backend.to_numpy(value.data if isinstance(value, Tensor) else value)
              for name, value in state_dict.items()}
    with atomic_write(path) as file:
        numpy.savez(file, **arrays)


def load_state_dict(path):
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
        raise ValueError(f"{path}: not an .npz checkpoint (its bytes are neither an .npz archive nor an .npy "
                         f"array)") from None
