"""The evaluation's FID interval: a bootstrap over the generated features it already computed."""

import numpy as np
import torch

from fissionvae.data.federated import GroupData
from fissionvae.evaluation.evaluate import EvalOptions, fid_metrics


class PixelFeatures:
    """A stand-in Inception: 16 fixed random projections of the pixels (deterministic, fast)."""

    identity = "pixel-projections-16"
    runtime = "pixels"  # the FeatureExtractor Protocol: eval.json records runtime and precision
    precision = "fp32"

    def __init__(self) -> None:
        self.w = torch.randn(784, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return (images.to(torch.float64).flatten(1) / 255.0 @ self.w).numpy()


def _group(name: str, seed: int) -> GroupData:
    g = torch.Generator().manual_seed(seed)
    test = torch.rand(60, 1, 28, 28, generator=g)
    return GroupData(name, "mnist" if seed == 0 else "fashion-mnist", test, torch.zeros(60), test, torch.zeros(60))


def test_bootstrap_interval_is_opt_in_seeded_and_reused_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FISSIONVAE_CACHE", str(tmp_path / "cache"))
    groups = [_group("a", 0), _group("b", 1)]
    g = torch.Generator().manual_seed(2)
    samples = [(torch.rand(50, 1, 28, 28, generator=g) * 255).round().to(torch.uint8) for _ in groups]
    plain = fid_metrics(samples, groups, PixelFeatures(), tmp_path / "c1", EvalOptions())
    assert "bootstrap" not in plain  # off by default: `fissionvae evaluate` is unchanged
    opts = EvalOptions(fid_bootstrap=20)
    first = fid_metrics(samples, groups, PixelFeatures(), tmp_path / "c2", opts)
    again = fid_metrics(samples, groups, PixelFeatures(), tmp_path / "c2", opts)  # from the cached features
    lo, hi = first["bootstrap"]["interval"]
    assert first["overall"] == plain["overall"] and first["bootstrap"] == again["bootstrap"]
    assert first["bootstrap"]["reps"] == 20 and 0 < lo < hi
    assert hi - lo > 0.01 * first["overall"]  # 100 samples: a visible spread, not a point
