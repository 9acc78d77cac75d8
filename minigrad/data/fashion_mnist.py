"""Fashion-MNIST from its four official IDX files: found, verified by SHA-256, or downloaded.

Where the files are looked for: a folder given explicitly (``root``, else ``$MINIGRAD_DATA``) is the
only place looked in, and downloaded into when allowed: a typo never falls back to another copy.
With neither, the search path: ``./data/fashion-mnist``, then ``/usr/share/datasets/fashion-mnist``
(Debian's ``dataset-fashion-mnist`` package), and downloads go to ``./data/fashion-mnist``. Each file
may be gzip'd or not. Its decompressed bytes must have the SHA-256 of the official file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from collections.abc import Sequence
from typing import Any

import numpy
from tqdm import tqdm  # text bars everywhere: tqdm.auto warns in a notebook without ipywidgets

from ..files import PathLike, atomic_write
from .idx import decompress_if_gzip, parse_idx

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

FILES = {  # (split, part) -> file name without .gz
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}

SHA256 = {  # of the decompressed official files (as published with Fashion-MNIST)
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

# MD5s of the original MNIST .gz files: caches and mirrors have served these under Fashion-MNIST's names.
MNIST_GZ_MD5 = {
    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "d53e105ee54ea40749a09fcbcd1e9432",
    "9fb629c4189551a2d022fa330f9573f3",
    "ec29112dd5afa0611ce80d1b7f02629c",
}

MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)
DEBIAN_FOLDER = "/usr/share/datasets/fashion-mnist"
DEFAULT_FOLDER = os.path.join("data", "fashion-mnist")

HOW_TO_GET = (
    "get the files with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put the four "
    "official .gz files in a folder and pass it with --data-dir / root= or the MINIGRAD_DATA "
    "environment variable"
)


class DatasetError(RuntimeError):
    """The dataset files are missing, corrupt, or not Fashion-MNIST; the message says what to do."""


def explicit_folder(root: PathLike | None = None) -> str | None:
    """The folder the user named (``root``, else ``$MINIGRAD_DATA``), or None to use the search path."""
    folder = root if root is not None else os.environ.get("MINIGRAD_DATA") or None
    return None if folder is None else os.fspath(folder)


def candidate_folders(root: PathLike | None = None) -> list[str]:
    """The folders looked in, in order: the explicit folder alone, or the search path."""
    folder = explicit_folder(root)
    return [folder] if folder is not None else [DEFAULT_FOLDER, DEBIAN_FOLDER]


def find_file(folder: PathLike, name: str) -> str | None:
    """The path of ``name`` or ``name.gz`` in ``folder``, or None."""
    for candidate in (name, name + ".gz"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def looks_like_mnist(raw: bytes, content: bytes, name: str) -> bool:
    """True when a file that failed its checksum is recognisably MNIST (digits) instead of Fashion-MNIST."""
    if hashlib.md5(raw).hexdigest() in MNIST_GZ_MD5:
        return True
    try:
        values = parse_idx(content, name)
    except ValueError:
        return False
    if values.ndim == 3 and values.shape[1:] == (28, 28) and values.size:
        # Digits are thin strokes on black: MNIST's mean pixel is 33, Fashion-MNIST's 73.
        return float(values.mean()) < 50
    if values.ndim == 1 and len(values) in (10000, 60000) and values.max() < 10:
        # Fashion-MNIST has exactly the same number of each class; MNIST's digits are not balanced.
        counts = numpy.bincount(values, minlength=10)
        return bool((counts != counts[0]).any())
    return False


def load_verified(path: str, name: str, verify: bool = True) -> tuple[numpy.ndarray, str]:
    """Read an IDX file (gzip'd or not) and check its SHA-256 (unless ``verify`` is off).

    Returns (array, SHA-256 of the decompressed content): the digest is computed either way, so that a
    run can record exactly which data it used.
    """
    with open(path, "rb") as file:
        raw = file.read()
    content = decompress_if_gzip(raw, path)
    digest = hashlib.sha256(content).hexdigest()
    if verify and digest != SHA256[name]:
        if looks_like_mnist(raw, content, path):
            raise DatasetError(
                f"{path} is MNIST (handwritten digits), not Fashion-MNIST: a cache or mirror served "
                f"the wrong dataset. Delete it and {HOW_TO_GET}"
            )
        raise DatasetError(
            f"{path} is not the official {name}: its SHA-256 is {digest}, expected {SHA256[name]}. "
            f"The file is corrupt or another dataset; delete it and {HOW_TO_GET}"
        )
    return parse_idx(content, path), digest


def download_file(
    name: str, folder: PathLike, mirrors: Sequence[str] = MIRRORS, progress: bool = True, timeout: float = 30
) -> str:
    """Fetch ``name``.gz from the first mirror that serves the right file; return its path.

    The file is written (atomically: a temporary file renamed into place) only after the
    SHA-256 of its decompressed content matches, so an interrupted or wrong download never
    leaves a file that looks valid.
    """
    target = os.path.join(folder, name + ".gz")
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name + ".gz"
        try:
            raw = _fetch(url, progress, timeout)
            content = decompress_if_gzip(raw, url)
            if hashlib.sha256(content).hexdigest() != SHA256[name]:
                kind = "MNIST, not Fashion-MNIST" if looks_like_mnist(raw, content, url) else "the wrong content"
                raise DatasetError(f"served {kind} (SHA-256 mismatch)")
        except (OSError, http.client.HTTPException, ValueError, DatasetError) as error:  # URLError: an OSError
            failures.append(f"{url}: {error}")
            continue
        with atomic_write(target) as file:
            file.write(raw)
        return target
    raise DatasetError(f"could not download {name}.gz:\n  " + "\n  ".join(failures) + f"\nOffline? {HOW_TO_GET}")


def _fetch(url, progress, timeout):
    """The bytes at ``url``, with a progress bar; an OSError when the connection drops early."""
    chunks = []
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], disable=not progress) as bar:
            while True:
                chunk = response.read(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
                bar.update(len(chunk))
    raw = b"".join(chunks)
    if total is not None and len(raw) != total:
        raise OSError(f"connection closed after {len(raw)} of {total} bytes")
    return raw


class FashionMNIST:
    """One split of Fashion-MNIST: ``images`` (N, 28, 28) uint8, ``labels`` (N,) uint8, ``classes``.

    Args:
        root: the folder holding the files (the only place looked in, and where they are downloaded);
            by default ``$MINIGRAD_DATA``, else the search path (see the module's docstring).
        train: the 60,000 training examples (True) or the 10,000 test examples (False).
        download: fetch the files that are missing.
        verify: check the official SHA-256 of each file. Turn it off only to train on other
            IDX files laid out the same way (a subset, MNIST itself, a synthetic test set).

    ``root`` (after loading) is the folder the files came from, and ``files`` maps each file's
    path to the SHA-256 of its decompressed content: what a run records about its data.
    """

    classes = CLASSES

    def __init__(
        self,
        root: PathLike | None = None,
        train: bool = True,
        download: bool = True,
        verify: bool = True,
        mirrors: Sequence[str] | None = None,
        progress: bool = True,
    ) -> None:
        split = "train" if train else "test"
        names = [FILES[split, "images"], FILES[split, "labels"]]
        explicit = explicit_folder(root)
        if explicit is not None and os.path.exists(explicit) and not os.path.isdir(explicit):
            raise DatasetError(f"{explicit} is a file, not a folder: give the folder that holds the four IDX files")
        folders = candidate_folders(root)
        paths = None
        for folder in folders:
            found = [find_file(folder, name) for name in names]
            if all(found):
                paths = found
                break
        if paths is None:
            if not download:
                missing = "" if explicit is None else " (the only folder looked in, since it was given explicitly)"
                raise DatasetError(f"Fashion-MNIST ({split}) not found in {', '.join(folders)}{missing}; {HOW_TO_GET}")
            target = explicit if explicit is not None else DEFAULT_FOLDER
            paths = [
                find_file(target, name) or download_file(name, target, mirrors or MIRRORS, progress) for name in names
            ]
        assert paths[0] is not None and paths[1] is not None  # found, or downloaded
        self.root = os.path.dirname(paths[0])
        self.images, images_digest = load_verified(paths[0], names[0], verify)
        self.labels, labels_digest = load_verified(paths[1], names[1], verify)
        self.files = {os.path.abspath(paths[0]): images_digest, os.path.abspath(paths[1]): labels_digest}
        if self.images.ndim != 3 or self.labels.ndim != 1 or len(self.images) != len(self.labels):
            raise DatasetError(
                f"{self.root}: images of shape {self.images.shape} and labels of shape "
                f"{self.labels.shape} do not form a dataset of (N, H, W) images with N labels"
            )
        self.train = train

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index: Any) -> tuple[numpy.ndarray, numpy.ndarray]:
        return self.images[index], self.labels[index]

    def __repr__(self):
        return f"FashionMNIST({'train' if self.train else 'test'}, {len(self)} examples, root={self.root!r})"
