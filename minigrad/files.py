"""Writing files so that a crash never leaves a half-written one: checkpoints, metrics, downloads, pictures.

Everything is written to a temporary file in the same folder and renamed into place (``os.replace`` is
atomic on POSIX and Windows), so a reader sees the old file or the new one, never a mixture. JSON is
written strictly: a NaN or an infinity becomes ``null``, so any JSON reader can read it.
"""

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any, Union

PathLike = Union[str, "os.PathLike[str]"]


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
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


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None, so that it is valid JSON (null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


def save_json(data: Any, path: PathLike) -> None:
    """Write ``data`` as indented, strictly valid JSON (NaN and infinities become null), atomically."""
    text = json.dumps(strict_json(data), indent=2, allow_nan=False)
    with atomic_write(path, "w") as file:
        file.write(text + "\n")
