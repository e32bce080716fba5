"""Tests for IDX parsing and verification (fissionvae.data.idx)."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import re

import numpy as np
import pytest

from fissionvae.data.idx import DataFileError, decode_idx, encode_idx, read_idx, write_idx
from fissionvae.data.sources import DATASETS

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

REAL_FILES = [
    ("mnist", "train", (60000, 28, 28), MNIST_TRAIN_COUNTS),
    ("mnist", "test", (10000, 28, 28), MNIST_TEST_COUNTS),
    ("fashion-mnist", "train", (60000, 28, 28), [6000] * 10),
    ("fashion-mnist", "test", (10000, 28, 28), [1000] * 10),
]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def assert_data_error(path, *fragments):
    """Expect a DataFileError whose message names ``path`` and contains ``fragments``."""
    with pytest.raises(DataFileError) as info:
        read_idx(path)
    check_message(info.value, path, *fragments)
    return info.value


def check_message(error, path, *fragments):
    message = str(error)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)


@pytest.fixture
def idx_bytes(images):
    return encode_idx(images)


# --------------------------------------------------------------------------- real data


@pytest.mark.parametrize(("name", "split", "shape", "counts"), REAL_FILES)
def test_real_files_parse_and_verify(shared_data_dir, name, split, shape, counts):
    spec = DATASETS[name]
    images_file, labels_file = spec.files[split]
    images = read_idx(
        shared_data_dir / name / images_file,
        expected_sha256=spec.sha256[images_file],
        accepted_gz_md5=spec.accepted_gz_md5(images_file),
    )
    labels = read_idx(
        shared_data_dir / name / labels_file,
        expected_sha256=spec.sha256[labels_file],
        accepted_gz_md5=spec.accepted_gz_md5(labels_file),
    )
    assert images.shape == shape and images.dtype == np.uint8
    assert labels.shape == shape[:1] and labels.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == counts
    assert 0 < images.mean() < 255 and images.max() == 255
    images[0, 0, 0] = 1  # a private, writable copy


def test_registry_sha256_matches_shared_readme(shared_data_dir):
    readme = (shared_data_dir / "README.md").read_text()
    table = dict(re.findall(r"\|\s*([\w-]+/[\w.-]+\.gz)\s*\|\s*([0-9a-f]{64})\s*\|", readme))
    assert len(table) == 8
    for name, spec in DATASETS.items():
        for filename in spec.filenames:
            assert spec.sha256[filename] == table[f"{name}/{filename}"]


def test_recompressed_gzip_accepted_by_content_hash(shared_data_dir, tmp_path):
    spec = DATASETS["mnist"]
    filename = "t10k-images-idx3-ubyte.gz"
    original = (shared_data_dir / "mnist" / filename).read_bytes()
    recompressed = gzip.compress(gzip.decompress(original), compresslevel=1, mtime=12345)
    assert recompressed != original and _md5(recompressed) != spec.gz_md5[filename]
    path = tmp_path / filename
    path.write_bytes(recompressed)
    images = read_idx(path, expected_sha256=spec.sha256[filename], accepted_gz_md5=spec.accepted_gz_md5(filename))
    assert images.shape == (10000, 28, 28)


def test_real_file_checksum_mismatch(shared_data_dir):
    path = shared_data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz"
    wrong = DATASETS["fashion-mnist"].sha256["t10k-labels-idx1-ubyte.gz"]
    with pytest.raises(DataFileError) as info:
        read_idx(path, expected_sha256=wrong, accepted_gz_md5=DATASETS["mnist"].accepted_gz_md5(path.name))
    check_message(info.value, path, "checksum mismatch", wrong, DATASETS["mnist"].sha256[path.name])


def test_real_file_truncated_gzip(shared_data_dir, tmp_path):
    original = (shared_data_dir / "mnist" / "train-labels-idx1-ubyte.gz").read_bytes()
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(original[: len(original) // 2])
    assert_data_error(path, "truncated gzip")


def test_real_file_corrupted_gzip(shared_data_dir, tmp_path):
    original = bytearray((shared_data_dir / "mnist" / "train-labels-idx1-ubyte.gz").read_bytes())
    original[200:400] = bytes(range(200))
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(bytes(original))
    assert_data_error(path, "corrupt gzip")


def test_real_file_truncated_payload(shared_data_dir, tmp_path):
    content = gzip.decompress((shared_data_dir / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes())
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(content[:-784])
    assert_data_error(path, "truncated: expected 7840000 bytes of data, found 7839216")


# --------------------------------------------------------------------------- synthetic


def test_encode_header_layout(images, idx_bytes):
    assert idx_bytes[:4] == b"\x00\x00\x08\x03"
    assert idx_bytes[4:16] == b"\x00\x00\x00\x05\x00\x00\x00\x04\x00\x00\x00\x03"
    assert idx_bytes[16:] == images.tobytes()


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_roundtrip_dtypes(tmp_path, dtype):
    array = (np.arange(24) - 5).astype(dtype).reshape(2, 3, 4)
    for name in ("a.idx", "a.idx.gz"):
        result = read_idx(write_idx(tmp_path / name, array))
        assert result.dtype == np.dtype(dtype) and result.dtype.isnative
        np.testing.assert_array_equal(result, array)


def test_raw_and_gzip_read_identically(tmp_path, images, idx_bytes):
    (tmp_path / "x").write_bytes(idx_bytes)
    (tmp_path / "x.gz").write_bytes(gzip.compress(idx_bytes))
    np.testing.assert_array_equal(read_idx(tmp_path / "x"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.gz"), images)


def test_checksums_pass_on_content_hash(tmp_path, idx_bytes):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes, compresslevel=9))
    read_idx(path, expected_sha256=_sha256(idx_bytes).upper())


def test_checksum_mismatch(tmp_path, idx_bytes):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes))
    with pytest.raises(DataFileError) as info:
        read_idx(path, expected_sha256="0" * 64)
    check_message(info.value, path, "checksum mismatch", "0" * 64, _sha256(idx_bytes))


def test_published_gz_md5_accepted_as_fallback(tmp_path, idx_bytes):
    gz = gzip.compress(idx_bytes)
    path = tmp_path / "x.gz"
    path.write_bytes(gz)
    read_idx(path, expected_sha256="0" * 64, accepted_gz_md5=("f" * 32, _md5(gz)))
    read_idx(path, accepted_gz_md5=(_md5(gz),))
    with pytest.raises(DataFileError) as info:
        read_idx(path, accepted_gz_md5=("f" * 32,))
    check_message(info.value, path, "checksum mismatch", _md5(gz))


def test_gz_md5_does_not_apply_to_raw_file(tmp_path, idx_bytes):
    path = tmp_path / "x"
    path.write_bytes(idx_bytes)
    with pytest.raises(DataFileError) as info:
        read_idx(path, accepted_gz_md5=(_md5(idx_bytes),))
    check_message(info.value, path, "checksum mismatch", "not gzip-compressed")


def test_corrupted_gzip_crc(tmp_path, idx_bytes):
    gz = bytearray(gzip.compress(idx_bytes))
    gz[-8] ^= 0xFF  # first byte of the CRC32 trailer
    path = tmp_path / "x.gz"
    path.write_bytes(bytes(gz))
    assert_data_error(path, "corrupt gzip", "CRC check failed")


def test_corrupted_gzip_data(tmp_path):
    content = encode_idx(np.zeros((100, 28, 28), dtype=np.uint8))
    gz = bytearray(gzip.compress(content))
    gz[12:20] = b"\xff" * 8
    path = tmp_path / "x.gz"
    path.write_bytes(bytes(gz))
    assert_data_error(path, "corrupt gzip")


def test_gz_name_without_gzip_content(tmp_path, idx_bytes):
    path = tmp_path / "x.gz"
    path.write_bytes(idx_bytes)
    assert_data_error(path, "not a gzip file")


def test_truncated_gzip(tmp_path, idx_bytes):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes)[:-10])
    assert_data_error(path, "truncated gzip")


def test_truncated_payload(tmp_path, idx_bytes):
    path = tmp_path / "x"
    path.write_bytes(idx_bytes[:-7])
    assert_data_error(path, "truncated: expected 60 bytes of data, found 53")


def test_truncated_payload_inside_valid_gzip(tmp_path, idx_bytes):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes[:-1]))
    assert_data_error(path, "truncated: expected 60 bytes of data, found 59")


@pytest.mark.parametrize("content", [b"\x00\x00", b"\x00\x00\x08\x03\x00\x00\x00\x05\x00"])
def test_truncated_header(tmp_path, content):
    path = tmp_path / "x"
    path.write_bytes(content)
    assert_data_error(path, "truncated")


def test_empty_file(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(b"")
    assert_data_error(path, "empty file")


@pytest.mark.parametrize(
    "magic",
    [b"\x00\x01\x08\x01", b"\x08\x00\x00\x01", b"\x00\x00\x07\x01", b"\x00\x00\x08\x00", b"PK\x03\x04"],
)
def test_wrong_magic(tmp_path, magic):
    path = tmp_path / "x"
    path.write_bytes(magic + b"\x00\x00\x00\x02ab")
    assert_data_error(path, "wrong magic number", f"0x{magic.hex().upper()}")


def test_trailing_bytes_raw(tmp_path, idx_bytes):
    path = tmp_path / "x"
    path.write_bytes(idx_bytes + b"xyz")
    assert_data_error(path, "trailing bytes: expected 60 bytes of data, found 63")


def test_trailing_garbage_after_gzip_stream(tmp_path, idx_bytes):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes) + b"garbage")
    assert_data_error(path, "trailing garbage", "7 bytes")


def test_gzip_zero_padding_and_multiple_members_accepted(tmp_path, images, idx_bytes):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes[:10]) + gzip.compress(idx_bytes[10:]) + b"\0" * 16)
    np.testing.assert_array_equal(read_idx(path, expected_sha256=_sha256(idx_bytes)), images)


def test_error_pickles_and_is_value_error(tmp_path):
    error = DataFileError(tmp_path / "f", "broken")
    assert isinstance(error, ValueError)
    clone = pickle.loads(pickle.dumps(error))
    assert str(clone) == str(error) == f"{tmp_path / 'f'}: broken"
    assert clone.path == str(tmp_path / "f") and clone.problem == "broken"


def test_decode_zero_length_and_big_endian_values():
    empty = decode_idx(encode_idx(np.zeros((0, 28, 28), dtype=np.uint8)))
    assert empty.shape == (0, 28, 28)
    data = b"\x00\x00\x0c\x01\x00\x00\x00\x02" + b"\x00\x00\x01\x00" + b"\xff\xff\xff\xfe"
    np.testing.assert_array_equal(decode_idx(data), [256, -2])
