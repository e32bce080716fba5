"""FID feature-extraction throughput: torch (fp32, channels-last, bf16 autocast), OpenVINO, ONNX Runtime.

Runs every configuration on the same images (N MNIST + N FashionMNIST test images), reports
images/s and how far each configuration moves FID against float32:

* ``FID(M,F)``: FID between the MNIST and the FashionMNIST features of that configuration,
  and its difference to the float32 number;
* ``FID(fp32,cfg)``: FID between float32 and the configuration's features of the same images.

The OpenVINO / ONNX Runtime rows run the exported network (exported once and cached beside the
``.pt``, see ``fissionvae.evaluation.exported``); ``--reference`` picks the configuration the
others are compared with (``channels_last`` is today's torch default).

A second pass times a few batch sizes per configuration on a smaller set.  Configurations are
run chunk by chunk in turn, so load from other processes affects all of them alike; the load
average before and after is recorded, and so is this process's CPU time: with ``--threads 1``,
images per CPU-second approximate single-core throughput even on a busy machine.

Usage::

    .venv/bin/python bench/fid_throughput.py --n 500 --batch-sizes 16 32 64 --json out.json
    .venv/bin/python bench/fid_throughput.py --threads 1 --n 100 --json out-1thread.json
    .venv/bin/python bench/fid_throughput.py --n 250 --batch-size 16 --batch-sizes \\
        --configs channels_last openvino onnx openvino-bf16 --reference channels_last --json runtimes.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from fissionvae.data.sources import load_split
from fissionvae.evaluation.exported import relative_difference
from fissionvae.evaluation.fid import InceptionFeatures, feature_stats, fid_from_stats
from fissionvae.evaluation.inception import load_inception
from fissionvae.evaluation.runtimes import RuntimeFeatures, feature_extractor

CONFIGS = {
    "fp32": {"channels_last": False, "bf16": False},
    "channels_last": {"channels_last": True, "bf16": False},
    "bf16": {"channels_last": False, "bf16": True},
    "channels_last+bf16": {"channels_last": True, "bf16": True},
}
# exported network under another runtime (fissionvae.evaluation.runtimes): (runtime, bf16)
RUNTIME_CONFIGS = {
    "openvino": ("openvino", False),
    "onnx": ("onnx", False),
    "openvino-bf16": ("openvino", True),
}
ALL_CONFIGS = [*CONFIGS, *RUNTIME_CONFIGS]


def default_data_dir() -> str | None:
    """``$FISSIONVAE_TEST_DATA_DIR``, else the checkout's sibling ``shared/data`` if present."""
    if os.environ.get("FISSIONVAE_TEST_DATA_DIR"):
        return os.environ["FISSIONVAE_TEST_DATA_DIR"]
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return str(shared) if shared.is_dir() else None


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="images per dataset (default 500)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch of the main pass")
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="*",
        default=[16, 32, 64],
        help="batch sizes of the sweep (empty list skips it)",
    )
    parser.add_argument("--sweep-n", type=int, default=128, help="images per sweep timing")
    parser.add_argument(
        "--configs",
        nargs="*",
        default=list(CONFIGS),
        choices=ALL_CONFIGS,
        help="configurations of the main pass",
    )
    parser.add_argument("--reference", default="fp32", choices=ALL_CONFIGS, help="the FID reference configuration")
    parser.add_argument(
        "--sweep-configs",
        nargs="*",
        default=["fp32", "channels_last"],
        choices=ALL_CONFIGS,
        help="configurations of the batch-size sweep",
    )
    parser.add_argument(
        "--data-dir", default=default_data_dir(), help="folder with mnist/ and fashion-mnist/ IDX files"
    )
    parser.add_argument("--inception", default=None, help="FID Inception file")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    return parser.parse_args()


def machine() -> dict[str, object]:
    """CPU model, core count, load average and software versions."""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = next(
        (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")),
        platform.processor(),
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "openvino": _version("openvino"),
        "onnxruntime": _version("onnxruntime"),
        "load_average_1_5_15": os.getloadavg(),
    }


def _version(package: str) -> str | None:
    """Installed version of an optional package, or None."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def load_images(n: int, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """First ``n`` MNIST and FashionMNIST test images (uint8, N x 28 x 28)."""
    mnist, _ = load_split("mnist", "test", data_dir, download=False)
    fashion, _ = load_split("fashion-mnist", "test", data_dir, download=False)
    return mnist[:n], fashion[:n]


def make_extractor(name: str, batch_size: int, path: str | None) -> InceptionFeatures | RuntimeFeatures:
    """Build a fresh extractor (own network copy or compiled export) warmed up with two batches."""
    extractor: InceptionFeatures | RuntimeFeatures
    if name in RUNTIME_CONFIGS:
        runtime, bf16 = RUNTIME_CONFIGS[name]
        built = feature_extractor(runtime, path, bf16=bf16, batch_size=batch_size, progress=False)
        assert isinstance(built, RuntimeFeatures)
        extractor = built
    else:
        extractor = InceptionFeatures(
            model=load_inception(path), batch_size=batch_size, progress=False, **CONFIGS[name]
        )
    warm = np.zeros((batch_size, 28, 28), dtype=np.uint8)
    for _ in range(2):
        extractor.features_of_batch(warm)
    return extractor


def interleaved(
    extractors: dict[str, InceptionFeatures | RuntimeFeatures], images: np.ndarray, chunk: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Features and (wall, process CPU) seconds per configuration, run chunk by chunk in turn.

    Interleaving (and rotating the order every chunk) spreads any load from other processes
    evenly over the configurations, so their ratios stay meaningful on a shared machine.
    """
    names = list(extractors)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    seconds = {name: np.zeros(2) for name in names}
    for index, start in enumerate(range(0, len(images), chunk)):
        batch = images[start : start + chunk]
        for name in names[index % len(names) :] + names[: index % len(names)]:
            begin = np.array([time.perf_counter(), time.process_time()])
            parts[name].append(extractors[name](batch))
            seconds[name] += np.array([time.perf_counter(), time.process_time()]) - begin
    return {name: np.concatenate(parts[name]) for name in names}, seconds


def main_pass(args: argparse.Namespace, mnist: np.ndarray, fashion: np.ndarray) -> dict:
    """Throughput and FID of every configuration on the full image set."""
    images = np.concatenate([mnist, fashion])
    extractors = {name: make_extractor(name, args.batch_size, args.inception) for name in args.configs}
    features, seconds = interleaved(extractors, images, 2 * args.batch_size)
    results = {}
    for name in args.configs:
        results[name] = rates(len(images), seconds[name])
        print(
            f"{name:>20}: {results[name]['images_per_s']:6.2f} img/s, "
            f"{results[name]['images_per_cpu_s']:6.2f} img per CPU-s",
            flush=True,
        )
    return add_fid(results, features, len(mnist), args.reference)


def rates(count: int, seconds: np.ndarray) -> dict[str, float]:
    """images/s of wall time and images per CPU-second of this process."""
    return {
        "images_per_s": count / seconds[0],
        "images_per_cpu_s": count / seconds[1],
        "seconds": float(seconds[0]),
        "cpu_seconds": float(seconds[1]),
    }


def add_fid(results: dict, features: dict, n: int, reference_name: str = "fp32") -> dict:
    """Add FID(M,F), its change against the reference and FID(reference features, cfg features).

    The keys keep their historical names (``delta_vs_fp32`` ...): the reference is ``reference_name``.
    """
    reference = features.get(reference_name)
    ref_fid = None
    if reference is not None:
        ref_fid = fid_from_stats(feature_stats(reference[:n]), feature_stats(reference[n:]))
    for name, feats in features.items():
        value = fid_from_stats(feature_stats(feats[:n]), feature_stats(feats[n:]))
        results[name]["fid_mnist_vs_fashion"] = value
        if reference is not None:
            results[name]["delta_vs_fp32"] = value - ref_fid
            results[name]["fid_fp32_vs_cfg_same_images"] = max(
                fid_from_stats(feature_stats(reference[:n]), feature_stats(feats[:n])),
                fid_from_stats(feature_stats(reference[n:]), feature_stats(feats[n:])),
            )
            results[name]["max_abs_feature_diff"] = float(np.abs(feats - reference).max())
            results[name]["max_relative_feature_diff"] = relative_difference(feats, reference)
            results[name]["speedup_vs_reference"] = results[reference_name]["seconds"] / results[name]["seconds"]
    return results


def sweep(args: argparse.Namespace, images: np.ndarray) -> dict:
    """images/s per configuration and batch size on ``images`` (all interleaved)."""
    extractors = {
        (name, size): make_extractor(name, size, args.inception)
        for name in args.sweep_configs
        for size in args.batch_sizes
    }
    keyed = {f"{name}@{size}": extractor for (name, size), extractor in extractors.items()}
    _, seconds = interleaved(keyed, images, max(args.batch_sizes))
    table: dict[str, dict[int, dict[str, float]]] = {}
    for name, size in extractors:
        rate = rates(len(images), seconds[f"{name}@{size}"])
        table.setdefault(name, {})[size] = rate
        print(
            f"{name:>20} batch {size:>3}: {rate['images_per_s']:6.2f} img/s, "
            f"{rate['images_per_cpu_s']:6.2f} img per CPU-s",
            flush=True,
        )
    return table


def main() -> None:
    """Run the benchmark and print (and optionally save) the results."""
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    info = machine()
    print(json.dumps(info), flush=True)
    mnist, fashion = load_images(args.n, args.data_dir)
    results = {
        "machine": info,
        "n_per_dataset": args.n,
        "batch_size": args.batch_size,
        "reference": args.reference,
        "main": main_pass(args, mnist, fashion),
    }
    if args.batch_sizes:
        mixed = np.concatenate([mnist[: args.sweep_n // 2], fashion[: args.sweep_n // 2]])
        results["sweep_n"] = len(mixed)
        results["sweep"] = sweep(args, mixed)
    results["load_average_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
