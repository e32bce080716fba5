"""The FID Inception-v3 exported once for OpenVINO and ONNX Runtime, cached next to its ``.pt``.

An export is derived from the TorchScript file (:mod:`fissionvae.evaluation.inception`):

* **ONNX**: the legacy TorchScript exporter, ``torch.onnx.export(..., dynamo=False)``, with a
  dynamic batch axis; one ``.onnx`` file.
* **OpenVINO**: ``openvino.convert_model`` of the loaded ScriptModule, saved with
  ``save_model(..., compress_to_fp16=False)`` (the default would store fp16 weights); an
  ``.xml`` + ``.bin`` pair.

Files live beside the ``.pt`` (or in ``<cache>/inception/`` when that folder is read-only),
named by the first 16 hex digits of the ``.pt``'s sha256, e.g.
``fid_inception_v3.7ff4a85c3a6378f0.onnx``.  A JSON manifest, written last, records the source
digest, each file's sha256 and the probe check below; every file is written atomically
(:func:`fissionvae.io.atomic_write`).  On load the manifest and every hash are checked: a
missing, damaged or stale export is rebuilt (with a note on stderr), never used as it is.

**Probe check**: after exporting, two fixed inputs (seeded, in the network's input range) go
through the torch network and the export; the export is kept only when its features differ by
at most :data:`PROBE_TOLERANCE` relative (largest absolute difference over the largest
absolute torch feature).  Otherwise the export is refused with a one-line error.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from fissionvae.evaluation.inception import FIDInceptionV3, default_cache_dir, file_sha256
from fissionvae.io import atomic_write, atomic_write_json
from fissionvae.seeding import torch_generator

EXPORT_FORMAT = "fid-export-v1"
PROBE_TOLERANCE = 1e-4
EXPORT_SIZE = 299
_SUFFIXES = {"onnx": (".onnx",), "openvino": (".openvino.xml", ".openvino.bin")}


class ExportError(RuntimeError):
    """An export could not be written or failed its probe check."""


def probe_inputs() -> torch.Tensor:
    """Two fixed 3 x 299 x 299 inputs in the network's range [-1, 1] (seed 0 of the eval stream)."""
    generator = torch_generator(0, "eval", 299_299)
    return torch.rand(2, 3, EXPORT_SIZE, EXPORT_SIZE, generator=generator) * 2.0 - 1.0


def relative_difference(features: np.ndarray, reference: np.ndarray) -> float:
    """``max |features - reference| / max |reference|``: the tolerance measure of exports."""
    reference = np.asarray(reference, dtype=np.float64)
    return float(np.abs(np.asarray(features, dtype=np.float64) - reference).max() / np.abs(reference).max())


def export_folder(source: Path) -> Path:
    """Beside the ``.pt`` when that folder is writable, else ``<cache>/inception``."""
    return source.parent if os.access(source.parent, os.W_OK) else default_cache_dir() / "inception"


def export_paths(source: Path, runtime: str, sha256: str) -> tuple[Path, list[Path]]:
    """The manifest and the model files of ``runtime``'s export of ``source``."""
    if runtime not in _SUFFIXES:
        raise ValueError(f"no export for runtime {runtime!r}; known: {sorted(_SUFFIXES)}")
    stem = export_folder(source) / f"{source.stem}.{sha256[:16]}"
    files = [stem.with_name(stem.name + suffix) for suffix in _SUFFIXES[runtime]]
    return stem.with_name(f"{stem.name}.{runtime}.json"), files


def _stale_reason(manifest: Path, files: list[Path], runtime: str, sha256: str) -> str | None:
    """Why the export on disk must not be used, or None when it is intact."""
    if not manifest.is_file():
        return f"{manifest.name} is missing"
    try:
        record = json.loads(manifest.read_text())
        expected = {"format": EXPORT_FORMAT, "runtime": runtime, "source_sha256": sha256}
        if any(record.get(key) != value for key, value in expected.items()):
            return f"{manifest.name} describes another export"
        hashes = record["files"]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        return f"{manifest.name} is unreadable ({type(error).__name__})"
    for file in files:
        if not file.is_file():
            return f"{file.name} is missing"
        if hashes.get(file.name) != file_sha256(file):
            return f"{file.name} does not match its recorded sha256"
    return None


def _write_onnx(model: FIDInceptionV3, folder: Path) -> list[Path]:
    """Export to ONNX (legacy TorchScript exporter, dynamic batch axis) inside ``folder``."""
    target = folder / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.net,
            (probe_inputs(),),
            str(target),
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
            dynamo=False,
        )
    return [target]


def _write_openvino(model: FIDInceptionV3, folder: Path) -> list[Path]:
    """Convert to OpenVINO (fp32 weights kept) inside ``folder``."""
    import openvino

    converted = openvino.convert_model(model.net, example_input=probe_inputs())
    converted.reshape([-1, 3, EXPORT_SIZE, EXPORT_SIZE])
    xml = folder / "model.xml"
    openvino.save_model(converted, str(xml), compress_to_fp16=False)
    return [xml, xml.with_suffix(".bin")]


def _install(produced: Path, target: Path) -> None:
    """Copy a freshly exported file into place atomically."""
    with open(produced, "rb") as source:
        atomic_write(target, lambda out: shutil.copyfileobj(source, out))


def _export(model: FIDInceptionV3, runtime: str, files: list[Path]) -> None:
    """Export into a temporary folder beside the targets, then install each file atomically."""
    with tempfile.TemporaryDirectory(prefix=".fid-export-", dir=files[0].parent) as tmp:
        for produced, target in zip(_WRITERS[runtime](model, Path(tmp)), files, strict=True):
            _install(produced, target)


_WRITERS = {"onnx": _write_onnx, "openvino": _write_openvino}


def ensure_export(model: FIDInceptionV3, source: Path, runtime: str, probe) -> list[Path]:
    """Return the verified export files of ``runtime``, exporting (or rebuilding) them first if needed.

    Parameters
    ----------
    model
        The loaded TorchScript network (its ``sha256`` keys the export).
    source
        The ``.pt`` file it was loaded from.
    runtime
        ``"onnx"`` or ``"openvino"``.
    probe
        ``probe(files, inputs) -> features``: runs the export in fp32 (the probe check).

    Raises
    ------
    ExportError
        When the folder cannot be written or the new export fails the probe check.
    """
    manifest, files = export_paths(source, runtime, model.sha256)
    reason = _stale_reason(manifest, files, runtime, model.sha256)
    if reason is None:
        return files
    if manifest.exists() or any(file.exists() for file in files):  # not merely a first export
        print(f"fissionvae: rebuilding the {runtime} export of {source.name}: {reason}", file=sys.stderr)
    try:
        manifest.parent.mkdir(parents=True, exist_ok=True)
        _export(model, runtime, files)
    except OSError as error:
        raise ExportError(f"cannot write the {runtime} export to {manifest.parent}: {error}") from error
    except Exception as error:  # an exporter's own failure: one line, the first of its message
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ExportError(f"cannot export {source} to {runtime}: {type(error).__name__}: {first}") from error
    inputs = probe_inputs()
    with torch.inference_mode():
        reference = model(inputs).numpy()
    difference = relative_difference(probe(files, inputs.numpy()), reference)
    if not difference <= PROBE_TOLERANCE:
        raise ExportError(
            f"the {runtime} export of {source} differs from torch by {difference:.2e} relative "
            f"(> {PROBE_TOLERANCE}); refusing to use it"
        )
    atomic_write_json(
        manifest,
        {
            "format": EXPORT_FORMAT,
            "runtime": runtime,
            "source": source.name,
            "source_sha256": model.sha256,
            "files": {file.name: file_sha256(file) for file in files},
            "probe_relative_difference": difference,
            "torch": torch.__version__,
        },
    )
    return files
