"""Finding, verifying and downloading Fashion-MNIST, against files the tests write and a local server."""

import gzip
import hashlib
import http.server
import os
import threading

import numpy as np
import pytest

from minigrad.data import DatasetError, FashionMNIST, fashion_mnist, read_idx, write_idx

from .fakedata import HAVE_REAL, REAL_FOLDER, REAL_MISSING, make_split, write_fake_fashion


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real dataset in reach: an empty working folder, no MINIGRAD_DATA, no Debian folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MINIGRAD_DATA", raising=False)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FOLDER", str(tmp_path / "nowhere"))
    return tmp_path


@pytest.fixture
def trusted(monkeypatch):
    """Make the synthetic files' checksums the expected ones, as if they were the official files."""

    def trust(digests):
        for name, digest in digests.items():
            monkeypatch.setitem(fashion_mnist.SHA256, name, digest)

    return trust


def test_search_order_root_then_env_then_local_folder(isolated, trusted, monkeypatch):
    trusted(write_fake_fashion(isolated / "data" / "fashion-mnist", train=30, seed=0))
    env_folder = isolated / "env"
    digests = write_fake_fashion(env_folder, train=20, seed=0)
    assert FashionMNIST(download=False).root == os.path.join("data", "fashion-mnist")
    monkeypatch.setenv("MINIGRAD_DATA", str(env_folder))
    trusted(digests)
    assert FashionMNIST(download=False).root == str(env_folder)
    root = isolated / "root"
    trusted(write_fake_fashion(root, train=10, seed=0, gzipped=False))
    data = FashionMNIST(root=str(root), download=False)
    assert data.root == str(root) and len(data) == 10
    assert data.images.shape == (10, 28, 28) and data.images.dtype == np.uint8 and data.labels.dtype == np.uint8
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"


@pytest.mark.parametrize("how", ["root", "MINIGRAD_DATA"])
def test_an_explicit_folder_is_the_only_place_looked_in(isolated, trusted, monkeypatch, how):
    """A typo in the folder used to train silently on another copy of the data."""
    trusted(write_fake_fashion(isolated / "data" / "fashion-mnist", train=30))  # on the search path
    typo = isolated / "fashon-mnist"
    if how == "root":
        call = lambda **kw: FashionMNIST(root=str(typo), **kw)  # noqa: E731
    else:
        monkeypatch.setenv("MINIGRAD_DATA", str(typo))
        call = FashionMNIST
    with pytest.raises(DatasetError, match=r"not found in .*fashon-mnist \(the only folder looked in"):
        call(download=False)
    with pytest.raises(DatasetError, match="could not download"):  # offline: download into it, never elsewhere
        call(download=True, mirrors=["http://127.0.0.1:9/"], progress=False)


def test_a_folder_with_only_the_training_files_does_not_borrow_the_test_split(isolated, trusted):
    full = isolated / "data" / "fashion-mnist"
    trusted(write_fake_fashion(full, train=30, test=20))
    partial = isolated / "partial"
    trusted(write_fake_fashion(partial, train=40, test=10))
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (partial / name).unlink()
    assert len(FashionMNIST(root=str(partial), train=True, download=False)) == 40
    with pytest.raises(DatasetError, match="partial"):
        FashionMNIST(root=str(partial), train=False, download=False)
    with pytest.raises(DatasetError, match="a file, not a folder"):
        FashionMNIST(root=str(partial / "train-images-idx3-ubyte.gz"), download=False)


def test_the_files_used_are_recorded_with_their_sha256(isolated):
    folder = isolated / "data" / "fashion-mnist"
    digests = write_fake_fashion(folder, train=20)
    data = FashionMNIST(download=False, verify=False)  # recorded even when not checked against the official
    assert data.root == os.path.join("data", "fashion-mnist")
    assert data.files == {
        str(folder / "train-images-idx3-ubyte.gz"): digests["train-images-idx3-ubyte"],
        str(folder / "train-labels-idx1-ubyte.gz"): digests["train-labels-idx1-ubyte"],
    }


def test_missing_files_without_download_say_how_to_get_them(isolated):
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist.*MINIGRAD_DATA"):
        FashionMNIST(download=False)


def test_checksum_mismatch_names_the_file(isolated):
    write_fake_fashion(isolated / "data" / "fashion-mnist")
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.gz is not the official.*SHA-256"):
        FashionMNIST(download=False)


def test_mnist_served_as_fashion_mnist_is_called_out(isolated):
    folder = isolated / "data" / "fashion-mnist"
    write_fake_fashion(folder)
    digits = np.zeros((50, 28, 28), np.uint8)
    digits[:, 10:18, 13:15] = 255  # thin strokes on black, like handwritten digits
    write_idx(folder / "train-images-idx3-ubyte.gz", digits)
    with pytest.raises(DatasetError, match="is MNIST \\(handwritten digits\\), not Fashion-MNIST"):
        FashionMNIST(download=False)


def test_skipping_verification_reads_other_idx_files(isolated):
    write_fake_fashion(isolated / "data" / "fashion-mnist", train=40)
    assert len(FashionMNIST(download=False, verify=False)) == 40


# --- downloads from a local server --------------------------------------------------------

LABELS = "train-labels-idx1-ubyte"


class Handler(http.server.BaseHTTPRequestHandler):
    routes = {}

    def do_GET(self):  # noqa: N802 (the http.server API)
        kind = self.path.strip("/").split("/")[0]
        body = self.routes.get(kind)
        if kind == "missing" or body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if kind == "drop":
            self.wfile.write(body[: len(body) // 2])  # then the connection closes early
        else:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(isolated, trusted):
    images, labels = make_split(300, 5)
    write_idx(isolated / "good.gz", labels)
    good = (isolated / "good.gz").read_bytes()
    trusted({LABELS: hashlib.sha256(gzip.decompress(good)).hexdigest()})
    unbalanced = np.arange(10000, dtype=np.uint8) % 9  # digit labels are not balanced: MNIST-like
    write_idx(isolated / "mnist.gz", unbalanced)
    Handler.routes = {
        "good": good,
        "drop": good,
        "mnist": (isolated / "mnist.gz").read_bytes(),
        "html": b"<html><body>Service unavailable</body></html>",
        "wrong": gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x05"),
    }
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_skips_failing_mirrors_and_keeps_the_good_file(server, isolated):
    target = isolated / "dl"
    mirrors = [f"{server}/{kind}/" for kind in ("missing", "drop", "html", "wrong", "good")]
    path = fashion_mnist.download_file(LABELS, str(target), mirrors=mirrors, progress=False)
    assert path == str(target / (LABELS + ".gz"))
    assert len(read_idx(path)) == 300
    assert sorted(os.listdir(target)) == [LABELS + ".gz"]


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "404"),
        ("drop", "connection closed after|IncompleteRead"),
        ("html", "wrong content"),
        ("wrong", "wrong content"),
        ("mnist", "MNIST, not Fashion-MNIST"),
    ],
)
def test_failed_download_leaves_no_file_and_says_why(server, isolated, kind, message):
    target = isolated / "dl"
    target.mkdir()
    with pytest.raises(DatasetError, match=message) as caught:
        fashion_mnist.download_file(LABELS, str(target), mirrors=[f"{server}/{kind}/"], progress=False)
    assert "apt-get install dataset-fashion-mnist" in str(caught.value)
    assert os.listdir(target) == []


def test_offline_download_error_says_how_to_get_the_files(isolated):
    with pytest.raises(DatasetError, match="Offline\\? get the files with `apt-get install dataset-fashion-mnist`"):
        fashion_mnist.download_file(LABELS, str(isolated), mirrors=["http://127.0.0.1:9/"], progress=False)


# --- the real files, when Debian's package put them there ----------------------------------


@pytest.mark.skipif(not HAVE_REAL, reason=REAL_MISSING)
@pytest.mark.parametrize("train, count", [(True, 60000), (False, 10000)])
def test_real_files(train, count, monkeypatch):
    monkeypatch.delenv("MINIGRAD_DATA", raising=False)
    data = FashionMNIST(root=REAL_FOLDER, train=train, download=False)
    assert data.images.shape == (count, 28, 28) and data.labels.shape == (count,)
    np.testing.assert_array_equal(np.bincount(data.labels), np.full(10, count // 10))
    name = fashion_mnist.FILES["train" if train else "test", "labels"]
    raw = gzip.decompress(open(fashion_mnist.find_file(REAL_FOLDER, name), "rb").read())
    np.testing.assert_array_equal(data.labels[:20], np.frombuffer(raw[8:28], np.uint8))
