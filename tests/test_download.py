"""Tests for downloading (fissionvae.data.download) and loading (fissionvae.data.sources).

All network traffic goes to an http.server on 127.0.0.1 that serves the shared data.
"""

from __future__ import annotations

import gzip
import shutil
import socket
import threading
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from fissionvae.data import registry, sources
from fissionvae.data.download import download_dataset, download_file
from fissionvae.data.idx import DataFileError, read_idx, write_idx
from fissionvae.data.sources import (
    DATASETS,
    DatasetSpec,
    default_cache_dir,
    file_urls,
    find_file,
    load_split,
    resolve_data_dir,
)

MNIST_FILES = DATASETS["mnist"].filenames
LABELS = "t10k-labels-idx1-ubyte.gz"
IMAGES = "t10k-images-idx3-ubyte.gz"


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No test may pick up the user's data dir or mirrors, let alone the internet."""
    monkeypatch.delenv(sources.MIRROR_ENV, raising=False)
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@dataclass
class Mirror:
    base: str
    requests: list[str] = field(default_factory=list)

    def url(self, tree: str) -> str:
        return f"{self.base}/{tree}"


class _QuietHandler(SimpleHTTPRequestHandler):
    def __init__(self, *args, requests: list[str], **kwargs):
        self._requests = requests
        super().__init__(*args, **kwargs)

    def do_GET(self):
        self._requests.append(self.path)
        super().do_GET()

    def log_message(self, format, *args):
        pass


def _build_www(root: Path, shared: Path) -> None:
    """``good`` -> real data; ``bad`` -> damaged copies; ``empty`` -> 404 for everything."""
    (root / "good").symlink_to(shared, target_is_directory=True)
    (root / "empty").mkdir()
    bad = root / "bad" / "mnist"
    bad.mkdir(parents=True)
    real_images = (shared / "mnist" / IMAGES).read_bytes()
    (bad / IMAGES).write_bytes(real_images[: len(real_images) // 3])  # truncated gzip
    shutil.copyfile(shared / "fashion-mnist" / LABELS, bad / LABELS)  # valid IDX, wrong content


@pytest.fixture
def mirror(tmp_path, shared_data_dir):
    www = tmp_path / "www"
    www.mkdir()
    _build_www(www, shared_data_dir)
    requests: list[str] = []
    handler = partial(_QuietHandler, requests=requests, directory=str(www))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-mirror", daemon=True
    )
    thread.start()
    try:
        yield Mirror(base=f"http://127.0.0.1:{server.server_address[1]}", requests=requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.fixture
def refused_url():
    """A localhost URL on which nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _leftovers(directory: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


def _mnist_file_args(filename):
    spec = DATASETS["mnist"]
    return dict(expected_sha256=spec.sha256[filename], accepted_gz_md5=spec.accepted_gz_md5(filename))


# --------------------------------------------------------------------------- URLs and directories


def test_file_urls_default_and_overrides(monkeypatch):
    spec = DATASETS["mnist"]
    assert file_urls(spec, LABELS) == [
        f"https://ossci-datasets.s3.amazonaws.com/mnist/{LABELS}",
        f"http://yann.lecun.com/exdb/mnist/{LABELS}",
    ]
    assert file_urls(DATASETS["fashion-mnist"], LABELS) == [
        f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{LABELS}"
    ]
    assert file_urls(spec, LABELS, ["http://a/x/", "http://b"]) == [
        f"http://a/x/mnist/{LABELS}",
        f"http://b/mnist/{LABELS}",
    ]
    monkeypatch.setenv(sources.MIRROR_ENV, "http://env1/data http://env2")
    assert file_urls(spec, LABELS) == [f"http://env1/data/mnist/{LABELS}", f"http://env2/mnist/{LABELS}"]
    assert file_urls(spec, LABELS, "http://arg") == [f"http://arg/mnist/{LABELS}"]


def test_data_dir_precedence(monkeypatch, tmp_path):
    assert default_cache_dir() == tmp_path / "xdg-cache" / "fissionvae" / "data"
    assert resolve_data_dir() == default_cache_dir()
    monkeypatch.setenv(sources.DATA_DIR_ENV, str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert default_cache_dir() == Path.home() / ".cache" / "fissionvae" / "data"


def test_find_file_order_and_uncompressed_fallback(tmp_path):
    data_dir, system = tmp_path / "data", tmp_path / "system"
    assert find_file("fashion-mnist", LABELS, data_dir, search_dirs=[system]) is None
    (system / "fashion-mnist").mkdir(parents=True)
    raw = system / "fashion-mnist" / LABELS.removesuffix(".gz")
    raw.write_bytes(b"x")
    assert find_file("fashion-mnist", LABELS, data_dir, search_dirs=[system]) == raw
    local = data_dir / "fashion-mnist" / LABELS
    local.parent.mkdir(parents=True)
    local.write_bytes(b"x")
    assert find_file("fashion-mnist", LABELS, data_dir, search_dirs=[system]) == local


# --------------------------------------------------------------------------- downloading


def test_download_dataset_from_local_mirror(mirror, tmp_path):
    data_dir = tmp_path / "data"
    paths = download_dataset("mnist", data_dir, mirrors=[mirror.url("good")], progress=False)
    assert paths == [data_dir / "mnist" / f for f in MNIST_FILES]
    assert sorted(mirror.requests) == sorted(f"/good/mnist/{f}" for f in MNIST_FILES)
    assert _leftovers(data_dir / "mnist", set(MNIST_FILES)) == []
    for path in paths:
        read_idx(path, **_mnist_file_args(path.name))
    images, labels = load_split("mnist", "test", data_dir, download=False, search_dirs=())
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.int64

    mirror.requests.clear()
    assert download_dataset("mnist", data_dir, mirrors=[mirror.url("good")], progress=False) == paths
    assert mirror.requests == []  # everything already valid


def test_download_dataset_replaces_invalid_file(mirror, tmp_path):
    data_dir = tmp_path / "data"
    stale = data_dir / "mnist" / LABELS
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"not an idx file")
    download_dataset("mnist", data_dir, mirrors=mirror.url("good"), progress=False)
    assert f"/good/mnist/{LABELS}" in mirror.requests
    read_idx(stale, **_mnist_file_args(LABELS))


@pytest.mark.parametrize("filename", [IMAGES, LABELS], ids=["truncated-gzip", "wrong-checksum"])
def test_corrupt_mirror_rejected_next_used(mirror, tmp_path, shared_data_dir, filename):
    dest = tmp_path / "out" / filename
    urls = [mirror.url(f"bad/mnist/{filename}"), mirror.url(f"good/mnist/{filename}")]
    assert download_file(urls, dest, progress=False, **_mnist_file_args(filename)) == dest
    assert mirror.requests == [f"/bad/mnist/{filename}", f"/good/mnist/{filename}"]
    assert dest.read_bytes() == (shared_data_dir / "mnist" / filename).read_bytes()
    assert _leftovers(dest.parent, {filename}) == []


def test_404_and_refused_mirrors_fall_through(mirror, refused_url, tmp_path):
    dest = tmp_path / "out" / LABELS
    urls = [f"{refused_url}/mnist/{LABELS}", mirror.url(f"empty/mnist/{LABELS}"), mirror.url(f"good/mnist/{LABELS}")]
    download_file(urls, dest, progress=False, timeout=5, **_mnist_file_args(LABELS))
    assert mirror.requests == [f"/empty/mnist/{LABELS}", f"/good/mnist/{LABELS}"]
    read_idx(dest, **_mnist_file_args(LABELS))


def test_all_mirrors_fail(mirror, refused_url, tmp_path):
    dest = tmp_path / "out" / LABELS
    urls = [mirror.url(f"bad/mnist/{LABELS}"), mirror.url(f"empty/mnist/{LABELS}"), f"{refused_url}/x/{LABELS}"]
    with pytest.raises(RuntimeError) as info:
        download_file(urls, dest, progress=False, timeout=5, **_mnist_file_args(LABELS))
    message = str(info.value)
    for url in urls:
        assert url in message
    assert "checksum mismatch" in message and "HTTP 404" in message and "cannot connect" in message
    assert not dest.exists()
    assert not dest.parent.exists()  # the folder made for the download is removed again


def test_download_with_progress_bar(mirror, tmp_path, capsys):
    dest = tmp_path / LABELS
    download_file([mirror.url(f"good/mnist/{LABELS}")], dest, progress=True, **_mnist_file_args(LABELS))
    assert dest.is_file()
    assert LABELS in capsys.readouterr().err


def test_download_file_needs_urls(tmp_path):
    with pytest.raises(ValueError, match="no URLs"):
        download_file([], tmp_path / LABELS, expected_sha256=None)


# --------------------------------------------------------------------------- loading


def test_load_split_downloads_via_env(mirror, monkeypatch, tmp_path):
    data_dir = tmp_path / "env-data"
    monkeypatch.setenv(sources.MIRROR_ENV, mirror.url("good"))
    monkeypatch.setenv(sources.DATA_DIR_ENV, str(data_dir))
    images, labels = load_split("mnist", "test", progress=False, search_dirs=())
    assert images.shape == (10000, 28, 28)
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert sorted(p.name for p in (data_dir / "mnist").iterdir()) == sorted([IMAGES, LABELS])


def test_load_split_missing_without_download(tmp_path):
    data_dir = tmp_path / "nothing-here"
    with pytest.raises(FileNotFoundError) as info:
        load_split("mnist", "train", data_dir, download=False, search_dirs=[tmp_path / "system"])
    message = str(info.value)
    assert str(data_dir / "mnist" / "train-images-idx3-ubyte.gz") in message
    assert str(tmp_path / "system" / "mnist") in message
    assert f"fissionvae data download --data-dir {data_dir}" in message


@pytest.mark.parametrize(("name", "split", "valid"), [("cifar", "train", "'mnist'"), ("mnist", "val", "'test'")])
def test_load_split_rejects_unknown_names(tmp_path, name, split, valid):
    with pytest.raises(ValueError, match=valid):
        load_split(name, split, tmp_path, download=False)


def test_load_split_real_data_cached_copies(shared_data_dir):
    sources.clear_cache()
    images, labels = load_split("fashion-mnist", "train", shared_data_dir, download=False, search_dirs=())
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [6000] * 10
    images[:] = 0
    hits = sources._load_pair.cache_info().hits
    again, labels_again = load_split("fashion-mnist", "train", shared_data_dir, download=False, search_dirs=())
    assert sources._load_pair.cache_info().hits == hits + 1
    assert again.flags.writeable and again.any()
    np.testing.assert_array_equal(labels_again, labels)


def test_load_split_uncompressed_in_search_dir(shared_data_dir, tmp_path):
    system = tmp_path / "usr-share-datasets"
    (system / "fashion-mnist").mkdir(parents=True)
    for filename in DATASETS["fashion-mnist"].files["test"]:
        content = gzip.decompress((shared_data_dir / "fashion-mnist" / filename).read_bytes())
        (system / "fashion-mnist" / filename.removesuffix(".gz")).write_bytes(content)
    images, labels = load_split("fashion-mnist", "test", tmp_path / "empty", download=False, search_dirs=[system])
    assert images.shape == (10000, 28, 28)
    assert np.bincount(labels).tolist() == [1000] * 10


def _tiny_spec(tmp_path, monkeypatch, images, labels) -> Path:
    files = {"train": ("tr-img.gz", "tr-lab.gz"), "test": ("te-img.gz", "te-lab.gz")}
    spec = DatasetSpec(name="tiny", files=files, sha256={}, gz_md5={}, mirrors=())
    monkeypatch.setattr(registry, "DATASETS", {"tiny": spec})
    (tmp_path / "tiny").mkdir()
    write_idx(tmp_path / "tiny" / "tr-img.gz", images)
    write_idx(tmp_path / "tiny" / "tr-lab.gz", labels)
    return tmp_path


def test_load_split_count_mismatch(tmp_path, monkeypatch):
    data_dir = _tiny_spec(tmp_path, monkeypatch, np.zeros((5, 28, 28), np.uint8), np.zeros(4, np.uint8))
    with pytest.raises(DataFileError) as info:
        load_split("tiny", "train", data_dir, download=False, search_dirs=())
    message = str(info.value)
    assert "count mismatch: 5 images but 4 labels" in message
    assert "tr-img.gz" in message and "tr-lab.gz" in message


def test_load_split_label_range(tmp_path, monkeypatch):
    data_dir = _tiny_spec(tmp_path, monkeypatch, np.zeros((2, 28, 28), np.uint8), np.array([1, 10], np.uint8))
    with pytest.raises(DataFileError, match=r"tr-lab.gz: labels out of range \[0, 10\)"):
        load_split("tiny", "train", data_dir, download=False, search_dirs=())
