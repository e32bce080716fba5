"""FID features through torch, OpenVINO or ONNX Runtime, chosen by ``--fid-runtime``.

* ``torch``: :class:`fissionvae.evaluation.fid.InceptionFeatures` (channels-last fp32); runs
  on every device and is the fallback.
* ``openvino`` / ``onnx``: the exported network (:mod:`fissionvae.evaluation.exported`) under
  OpenVINO (``INFERENCE_PRECISION_HINT=f32``) or ONNX Runtime (CPU provider), both optional
  packages.  Both agree with torch's features to about 1e-6 relative, so they share the fp32
  cache identity with torch (:func:`fissionvae.evaluation.fid.extractor_identity`).
* ``auto`` (the default): the first installed of :data:`AUTO_ORDER` on the CPU, else torch;
  always torch on a GPU.  The order is the measured speed on this project's machines
  (docs/benchmarks.md).

``bf16=True`` is an opt-in for quick looks: OpenVINO's ``INFERENCE_PRECISION_HINT=bf16`` (or
torch's bf16 autocast with ``runtime="torch"``).  It moves FID by about 1, so its cache identity
differs from fp32's and ``eval.json`` records its precision: never set such a number beside the
paper's.  ONNX Runtime has no bf16 mode here; asking for it is an error.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fissionvae.evaluation.exported import ensure_export
from fissionvae.evaluation.fid import (
    FeatureExtractor,
    ImageArray,
    InceptionFeatures,
    extract_in_batches,
    extractor_identity,
    preprocess,
)
from fissionvae.evaluation.inception import NUM_FEATURES, load_inception, resolve_inception_path

RUNTIMES = ("torch", "openvino", "onnx")
RUNTIME_CHOICES = ("auto", *RUNTIMES)
# auto's preference, by the interleaved measurement in docs/benchmarks.md (2-core AMD EPYC): both
# ran 3.05x torch's wall rate, OpenVINO 8.5 and ONNX Runtime 7.5 images per CPU-second (torch 2.6)
AUTO_ORDER = ("openvino", "onnx")
_PACKAGES = {"openvino": "openvino", "onnx": "onnxruntime"}
Session = Callable[[np.ndarray], np.ndarray]


def installed(runtime: str) -> bool:
    """Whether ``runtime``'s package can be imported (torch always can)."""
    return runtime == "torch" or importlib.util.find_spec(_PACKAGES[runtime]) is not None


def resolve_runtime(runtime: str = "auto", device: str = "cpu", bf16: bool = False) -> str:
    """The runtime that ``--fid-runtime runtime`` means here, or a one-line ValueError.

    Parameters
    ----------
    runtime
        One of :data:`RUNTIME_CHOICES`.
    device
        Where the network runs; only torch runs on a GPU.
    bf16
        The bf16 opt-in: ``auto`` then prefers OpenVINO (torch autocast if it is missing).
    """
    if runtime not in RUNTIME_CHOICES:
        raise ValueError(f"--fid-runtime {runtime!r}: choose one of {', '.join(RUNTIME_CHOICES)}")
    on_cpu = torch.device(device).type == "cpu"
    if runtime == "auto":
        order = ("openvino",) if bf16 else AUTO_ORDER
        return next((name for name in order if on_cpu and installed(name)), "torch")
    if runtime != "torch" and not on_cpu:
        raise ValueError(f"--fid-runtime {runtime}: runs on the CPU only; use torch for --device {device}")
    if not installed(runtime):
        raise ValueError(f"--fid-runtime {runtime}: the package {_PACKAGES[runtime]!r} is not installed")
    if runtime == "onnx" and bf16:
        raise ValueError("--fid-runtime onnx: ONNX Runtime has no bf16 mode here; use openvino or torch for bf16")
    return runtime


def _threads() -> int:
    """Threads for the runtime: torch's intra-op setting (follows OMP_NUM_THREADS / set_num_threads)."""
    return max(1, torch.get_num_threads())


def openvino_config(bf16: bool = False) -> dict[str, object]:
    """The CPU plugin's settings: the precision, torch's thread count, and no CPU pinning.

    With pinning (OpenVINO's default on Linux) the study's two one-thread evaluations side by
    side (``--jobs 2``) were seen with their inference threads both pinned to CPU 0, each at 50%
    CPU while CPU 1 idled; without it they ran at 100% each, 2.1x the images per second
    (docs/benchmarks.md).  Pinning changes where the network runs, not what it computes.
    """
    return {
        "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
        "INFERENCE_NUM_THREADS": _threads(),
        "ENABLE_CPU_PINNING": False,
    }


def openvino_session(files: list[Path], bf16: bool = False) -> Session:
    """Compile the OpenVINO export on the CPU; returns a function from inputs to features."""
    import openvino

    core = openvino.Core()
    compiled = core.compile_model(core.read_model(str(files[0]), str(files[1])), "CPU", openvino_config(bf16))
    request = compiled.create_infer_request()

    def run(inputs: np.ndarray) -> np.ndarray:
        return np.array(request.infer([np.ascontiguousarray(inputs, np.float32)])[compiled.output(0)])

    return run


def onnx_session(files: list[Path], bf16: bool = False) -> Session:
    """An ONNX Runtime CPU session of the ONNX export; returns a function from inputs to features."""
    import onnxruntime

    if bf16:
        raise ValueError("ONNX Runtime has no bf16 mode here")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = _threads()
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(files[0]), options, providers=["CPUExecutionProvider"])

    def run(inputs: np.ndarray) -> np.ndarray:
        return session.run(None, {"images": np.ascontiguousarray(inputs, np.float32)})[0]

    return run


SESSIONS: dict[str, Callable[..., Session]] = {"openvino": openvino_session, "onnx": onnx_session}


class RuntimeFeatures:
    """2048-d FID Inception features from an exported network (the ``FeatureExtractor`` protocol).

    Parameters
    ----------
    run
        The compiled network: float32 B x 3 x 299 x 299 inputs to B x 2048 features.
    identity
        Cache identity (:func:`fissionvae.evaluation.fid.extractor_identity`).
    runtime, precision
        What runs it, recorded in ``eval.json``.
    batch_size
        Images per call of ``run``.
    progress
        Show a tqdm bar while extracting.
    """

    num_features = NUM_FEATURES

    def __init__(
        self, run: Session, identity: str, runtime: str, precision: str, batch_size: int = 16, progress: bool = True
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive; got {batch_size}")
        self.run, self.identity, self.runtime, self.precision = run, identity, runtime, precision
        self.batch_size, self.progress = batch_size, progress

    def features_of_batch(self, images: ImageArray) -> torch.Tensor:
        """Return float32 B x 2048 features of one batch of raw images."""
        return torch.from_numpy(np.asarray(self.run(preprocess(images).numpy()), dtype=np.float32))

    def __call__(self, images: ImageArray) -> np.ndarray:
        """Return the (N, 2048) float64 features of N raw images."""
        return extract_in_batches(self.features_of_batch, images, self.batch_size, self.num_features, self.progress)


def feature_extractor(
    runtime: str = "auto",
    inception: str | os.PathLike[str] | None = None,
    *,
    device: str = "cpu",
    bf16: bool = False,
    batch_size: int | None = None,
    progress: bool = True,
) -> FeatureExtractor:
    """The FID feature extractor of ``--fid-runtime runtime`` (exporting the network once if needed).

    Parameters
    ----------
    runtime
        One of :data:`RUNTIME_CHOICES`; see :func:`resolve_runtime`.
    inception
        The TorchScript file; resolved by :func:`resolve_inception_path` when None.
    device
        Where torch runs the network (other runtimes: CPU only).
    bf16
        The quick-look opt-in (different cache identity; see the module docstring).
    batch_size
        Images per forward pass (default 16 on the CPU).
    progress
        Show a tqdm bar while extracting.
    """
    chosen = resolve_runtime(runtime, device, bf16)
    source = resolve_inception_path(inception)
    model = load_inception(source)
    if chosen == "torch":
        return InceptionFeatures(model=model, batch_size=batch_size, bf16=bf16, progress=progress, device=device)
    files = ensure_export(model, source, chosen, lambda paths, inputs: SESSIONS[chosen](paths)(inputs))
    precision = "bf16" if bf16 else "fp32"
    numerics = f"{chosen}-bf16" if bf16 else "fp32"
    return RuntimeFeatures(
        SESSIONS[chosen](files, bf16),
        extractor_identity(model.sha256, numerics),
        chosen,
        precision,
        batch_size or 16,
        progress,
    )
