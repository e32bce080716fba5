"""FID features through OpenVINO and ONNX Runtime: runtime choice, export cache, numerics against torch."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fissionvae.evaluation import exported, runtimes
from fissionvae.evaluation.exported import ExportError, ensure_export, export_paths, relative_difference
from fissionvae.evaluation.fid import InceptionFeatures, feature_stats, fid_from_stats
from fissionvae.evaluation.inception import load_inception
from fissionvae.evaluation.runtimes import RuntimeFeatures, feature_extractor, resolve_runtime

INSTALLED = [name for name in ("onnx", "openvino") if runtimes.installed(name)]
N_IMAGES = 12  # per dataset: the real network costs ~1 s per image on a loaded 2-core CPU


class TinyNet(nn.Module):
    """A 2048-feature stand-in for the FID Inception (same input and output shapes, milliseconds to run)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, kernel_size=11, stride=19)  # 299 x 299 -> 8 x 16 x 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).flatten(1)


@pytest.fixture
def tiny_pt(tmp_path: Path) -> Path:
    """A TorchScript file that load_inception accepts, in its own folder."""
    path = tmp_path / "inception" / "tiny.pt"
    path.parent.mkdir()
    with warnings.catch_warnings():  # torch 2.13 flags jit.script as deprecated; load_inception reads TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(TinyNet().eval()).save(str(path))
    return path


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


# --- choosing the runtime ---------------------------------------------------------------------


def test_auto_prefers_an_installed_runtime_and_falls_back_to_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtimes, "installed", lambda name: name in ("torch", "onnx"))
    assert resolve_runtime("auto") == "onnx"
    assert resolve_runtime("auto", device="cuda") == "torch"  # only torch runs on a GPU
    assert resolve_runtime("auto", bf16=True) == "torch"  # bf16 without OpenVINO: torch autocast
    monkeypatch.setattr(runtimes, "installed", lambda name: name == "torch")
    assert resolve_runtime("auto") == "torch"
    with pytest.raises(ValueError, match=r"--fid-runtime openvino: the package 'openvino' is not installed"):
        resolve_runtime("openvino")


def test_bad_runtime_choices_are_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtimes, "installed", lambda name: True)
    assert resolve_runtime("auto") == runtimes.AUTO_ORDER[0]
    assert resolve_runtime("auto", bf16=True) == "openvino"
    for call, message in (
        (lambda: resolve_runtime("tensorrt"), "--fid-runtime 'tensorrt': choose one of auto, torch"),
        (lambda: resolve_runtime("onnx", bf16=True), "no bf16 mode"),
        (lambda: resolve_runtime("openvino", device="cuda:0"), "CPU only"),
    ):
        with pytest.raises(ValueError, match=message) as error:
            call()
        assert "\n" not in str(error.value)


# --- the export cache (a tiny stand-in network) ------------------------------------------------


@pytest.mark.parametrize("runtime", INSTALLED)
def test_export_is_cached_beside_the_pt_keyed_by_its_sha256(tiny_pt: Path, runtime: str) -> None:
    extractor = feature_extractor(runtime, tiny_pt, progress=False)
    model = load_inception(tiny_pt)
    manifest, files = export_paths(tiny_pt, runtime, model.sha256)
    assert manifest.parent == tiny_pt.parent and all(model.sha256[:16] in f.name for f in files)
    record = json.loads(manifest.read_text())
    assert record["source_sha256"] == model.sha256 and set(record["files"]) == {f.name for f in files}
    assert record["probe_relative_difference"] <= exported.PROBE_TOLERANCE
    images = _images(5)
    torch_features = InceptionFeatures(model=model, progress=False, batch_size=2)(images)
    assert relative_difference(extractor(images), torch_features) < 1e-5
    # fp32 runtimes share torch's cache identity; the file names nothing but the network
    assert extractor.identity == InceptionFeatures(model=model, progress=False).identity
    stamps = [f.stat().st_mtime_ns for f in (*files, manifest)]
    feature_extractor(runtime, tiny_pt, progress=False)  # an intact export is reused, not rewritten
    assert [f.stat().st_mtime_ns for f in (*files, manifest)] == stamps


@pytest.mark.skipif(not runtimes.installed("openvino"), reason="needs openvino")
def test_openvino_runs_unpinned(tiny_pt: Path) -> None:
    # pinned (OpenVINO's Linux default), two one-thread evaluations side by side were seen
    # sharing CPU 0 while CPU 1 idled
    import openvino

    feature_extractor("openvino", tiny_pt, progress=False)  # writes the export
    xml, binary = export_paths(tiny_pt, "openvino", load_inception(tiny_pt).sha256)[1]
    core = openvino.Core()
    for bf16 in (False, True):
        compiled = core.compile_model(core.read_model(str(xml), str(binary)), "CPU", runtimes.openvino_config(bf16))
        assert compiled.get_property("ENABLE_CPU_PINNING") is False
        assert compiled.get_property("INFERENCE_NUM_THREADS") == torch.get_num_threads()


@pytest.mark.parametrize("runtime", INSTALLED)
def test_damaged_export_is_rebuilt_never_used(tiny_pt: Path, runtime: str, capsys: pytest.CaptureFixture) -> None:
    feature_extractor(runtime, tiny_pt, progress=False)
    manifest, files = export_paths(tiny_pt, runtime, load_inception(tiny_pt).sha256)
    reference = files[-1].read_bytes()
    damaged = bytearray(reference)
    damaged[len(damaged) // 2] ^= 0xFF
    files[-1].write_bytes(bytes(damaged))
    os.utime(files[-1], ns=(1, 1))  # a new mtime even on coarse clocks: the hash is recomputed
    feature_extractor(runtime, tiny_pt, progress=False)
    assert "does not match its recorded sha256" in capsys.readouterr().err
    assert files[-1].read_bytes() != bytes(damaged)
    manifest.write_text("{ not json")
    feature_extractor(runtime, tiny_pt, progress=False)
    assert "unreadable" in capsys.readouterr().err and json.loads(manifest.read_text())["runtime"] == runtime


def test_export_failing_the_probe_is_refused_and_not_recorded(tiny_pt: Path) -> None:
    model = load_inception(tiny_pt)
    with pytest.raises(ExportError, match="differs from torch by .* refusing to use it"):
        ensure_export(model, tiny_pt, "onnx", lambda files, inputs: np.ones((len(inputs), 2048)))
    manifest, _ = export_paths(tiny_pt, "onnx", model.sha256)
    assert not manifest.exists()  # never marked good: the next load rebuilds


@pytest.mark.skipif("openvino" not in INSTALLED, reason="OpenVINO not installed")
def test_bf16_has_its_own_identity_and_says_so(tiny_pt: Path) -> None:
    fp32 = feature_extractor("openvino", tiny_pt, progress=False)
    bf16 = feature_extractor("openvino", tiny_pt, bf16=True, progress=False)
    assert isinstance(bf16, RuntimeFeatures) and bf16.precision == "bf16" and fp32.precision == "fp32"
    assert bf16.identity.endswith("|openvino-bf16") and fp32.identity.endswith("|fp32")
    torch_bf16 = feature_extractor("torch", tiny_pt, bf16=True, progress=False)
    assert len({fp32.identity, bf16.identity, torch_bf16.identity}) == 3


# --- the real network on real images ---------------------------------------------------------


@pytest.fixture(scope="module")
def real_images(shared_data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from fissionvae.data.sources import load_split

    mnist, _ = load_split("mnist", "test", shared_data_dir, download=False)
    fashion, _ = load_split("fashion-mnist", "test", shared_data_dir, download=False)
    return mnist[:N_IMAGES], fashion[:N_IMAGES]


@pytest.fixture(scope="module")
def torch_real_features(inception_path: Path, real_images: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Features of today's default (channels-last fp32 torch)."""
    return InceptionFeatures(inception_path, progress=False)(np.concatenate(real_images))


@pytest.mark.parametrize("runtime", INSTALLED)
def test_runtime_matches_torch_features_and_fid(
    inception_path: Path, real_images: tuple[np.ndarray, np.ndarray], torch_real_features: np.ndarray, runtime: str
) -> None:
    features = feature_extractor(runtime, inception_path, progress=False)(np.concatenate(real_images))
    assert relative_difference(features, torch_real_features) < 1e-4  # measured 2e-6 (ONNX), 3e-6 (OpenVINO)
    n = N_IMAGES

    def fid_mf(feats: np.ndarray) -> float:
        return fid_from_stats(feature_stats(feats[:n]), feature_stats(feats[n:]))

    assert fid_mf(torch_real_features) > 50.0  # MNIST vs FashionMNIST: far apart
    assert abs(fid_mf(features) - fid_mf(torch_real_features)) < 0.01
