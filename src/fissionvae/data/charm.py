"""Build the CHARM composite (FissionVAE, Section 4.1) from local copies of its five datasets.

None of the sources can be downloaded by this package (licences, logins); point the builder at
the folders you have. Accepted layouts (searched recursively, so an extra top folder is fine):

=========== ======================================================================== ==========
group       source and layout                                                        classes
=========== ======================================================================== ==========
anime       Anime Face Dataset (Kaggle ``splcher/animefacedataset``): ``images/*.jpg``  none
celeba-hq   CelebA-HQ, any distribution: ``CelebA-HQ-img/<n>.jpg`` (CelebAMask-HQ) or   none
            ``celeba_hq/{train,val}/{female,male}/*.jpg`` (StarGAN v2)
awa2        AwA2 as a Meta-Album dataset (``labels.csv`` + ``info.json`` + ``images/``;   labels.csv
            the paper's choice), or the original ``JPEGImages/<class>/*.jpg``           or folder
eurosat     EuroSAT-RGB: ``EuroSAT_RGB/<Class>/<Class>_<n>.jpg`` (10 classes, 64x64)    folder
marvel      MARVEL as a Meta-Album dataset (``labels.csv`` + ``info.json`` + ``images/``)  labels.csv
=========== ======================================================================== ==========

A Meta-Album folder is recognised by a ``labels.csv`` in the given folder or one level below;
its ``info.json`` names the file and category columns (defaults ``FILE_NAME``, ``CATEGORY``) and
images are looked up in ``images/`` (or beside ``labels.csv``). Elsewhere a "folder" class is
the name of the folder directly holding the image.

For each group, with ``seed``: the source files (sorted by relative path) are permuted with
``numpy.random.default_rng([seed, group index])``; they are decoded in that order with the
image-folder pipeline (RGB, centre square, Pillow bicubic resize to ``size``, see
:mod:`fissionvae.data.folders`), unreadable files are skipped (counted, named in a warning and in
the manifest) and the next file takes their place, until ``train + test`` images are in hand:
the first ``train`` go to ``train/``, the next ``test`` to ``test/``. Train and test are thus
disjoint sets of source files. Output::

    <out>/<group>/train/[<class>/]<00000>.png   32x32 RGB PNGs
    <out>/<group>/test/[<class>/]<00000>.png
    <out>/<group>/manifest.json                 seed, counts, options, source of every image, skipped files
    <out>/charm.json                            the groups built and their manifests

Each group is written to a hidden temporary folder and renamed into place when complete, so an
interrupted build leaves no half group. ``configs/charm/`` reads these folders as
``dataset: folder`` groups (20 clients per group).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import warnings
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from fissionvae.data.folders import LOADER_VERSION, SkippedFilesWarning, decode_many, list_files, skipped_message
from fissionvae.io import atomic_write_json

#: group name -> how its classes are found ("none", or "auto": Meta-Album labels.csv, else folder names)
CHARM_GROUPS: dict[str, str] = {
    "anime": "none",
    "celeba-hq": "none",
    "awa2": "auto",
    "eurosat": "auto",
    "marvel": "auto",
}
TRAIN_PER_GROUP = 20_000
TEST_PER_GROUP = 5_000
CHUNK = 512


class CharmError(ValueError):
    """A CHARM source is missing, unreadable or too small, or the output exists."""


@dataclass(frozen=True)
class SourceImage:
    path: Path
    rel: str  # path relative to the source folder (POSIX)
    label: str  # class name, "" when the group has none


def _find_labels_csv(root: Path) -> Path | None:
    if (root / "labels.csv").is_file():
        return root / "labels.csv"
    found = sorted(p / "labels.csv" for p in root.iterdir() if p.is_dir() and (p / "labels.csv").is_file())
    if len(found) > 1:
        raise CharmError(
            f"{root}: several Meta-Album datasets below it ({', '.join(str(f.parent) for f in found)}); point at one"
        )
    return found[0] if found else None


def _meta_album(labels_csv: Path, root: Path) -> list[SourceImage]:
    """Files and categories of a Meta-Album dataset folder (labels.csv, info.json, images/)."""
    folder = labels_csv.parent
    info_path = folder / "info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    file_col = info.get("image_column_name", "FILE_NAME")
    cat_col = info.get("category_column_name", "CATEGORY")
    images_dir = folder / "images" if (folder / "images").is_dir() else folder
    out = []
    with open(labels_csv, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, skipinitialspace=True)
        if reader.fieldnames is None or file_col not in reader.fieldnames or cat_col not in reader.fieldnames:
            raise CharmError(f"{labels_csv}: expected columns {file_col!r} and {cat_col!r}, found {reader.fieldnames}")
        for row in reader:
            path = images_dir / row[file_col].strip()
            out.append(SourceImage(path, path.relative_to(root).as_posix(), row[cat_col].strip()))
    return sorted(out, key=lambda s: s.rel)


def scan_source(root: str | Path, classes: str = "auto") -> list[SourceImage]:
    """Every candidate image of one source folder, sorted by relative path, with its class."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CharmError(f"source folder {root} does not exist or is not a folder")
    if classes == "auto":
        labels_csv = _find_labels_csv(root)
        if labels_csv is not None:
            return _meta_album(labels_csv, root)
    files = list_files(root)
    out = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        label = rel.rsplit("/", 2)[-2] if classes == "auto" and "/" in rel else ""
        out.append(SourceImage(path, rel, label))
    return out


def safe_name(label: str) -> str:
    """A class name usable as one folder name."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", label).strip("._") or "class"


def draw_group(
    sources: list[SourceImage],
    n_train: int,
    n_test: int,
    seed: int,
    group_index: int,
    size: int,
    resample: str,
    workers: int = 0,
    progress: bool = True,
    desc: str = "",
) -> tuple[list[tuple[SourceImage, np.ndarray]], list[tuple[str, str]]]:
    """Decode sources in seeded order until ``n_train + n_test`` images are good; returns them and the skipped files."""
    order = np.random.default_rng([seed, group_index]).permutation(len(sources))
    need = n_train + n_test
    good: list[tuple[SourceImage, np.ndarray]] = []
    skipped: list[tuple[str, str]] = []
    pool = ProcessPoolExecutor(workers) if workers > 0 else None
    try:
        with tqdm(total=need, desc=desc, unit="img", disable=not progress) as bar:
            for start in range(0, len(order), CHUNK):
                chunk = [sources[i] for i in order[start : start + CHUNK]]
                for src, arr in zip(
                    chunk, decode_many([str(s.path) for s in chunk], size, resample, pool or 0), strict=True
                ):
                    if isinstance(arr, str):
                        skipped.append((src.rel, arr))
                    elif len(good) < need:
                        good.append((src, arr))
                        bar.update(1)
                if len(good) >= need:
                    break
    finally:
        if pool is not None:
            pool.shutdown()
    return good, skipped


def build_group(
    name: str,
    source: str | Path,
    out: Path,
    group_index: int,
    *,
    seed: int = 0,
    n_train: int = TRAIN_PER_GROUP,
    n_test: int = TEST_PER_GROUP,
    size: int = 32,
    resample: str = "bicubic",
    workers: int = 0,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Draw and write one CHARM group; returns its manifest."""
    target = out / name
    if target.exists() and any(target.iterdir()) and not force:
        raise CharmError(f"{target} exists and is not empty; remove it or pass --force")
    sources = scan_source(source, CHARM_GROUPS.get(name, "auto"))
    if len(sources) < n_train + n_test:
        raise CharmError(
            f"group {name!r}: {source} holds {len(sources)} file(s); {n_train} training + {n_test} evaluation images "
            "are needed"
        )
    good, skipped = draw_group(
        sources, n_train, n_test, seed, group_index, size, resample, workers, progress, desc=f"CHARM {name}"
    )
    if len(good) < n_train + n_test:
        raise CharmError(
            f"group {name!r}: only {len(good)} readable image(s) in {source} ({len(skipped)} skipped); "
            f"{n_train + n_test} needed"
        )
    if skipped:
        warnings.warn(skipped_message(source, skipped, len(good) + len(skipped)), SkippedFilesWarning, stacklevel=2)
    has_classes = any(src.label for src, _ in good)
    tmp = out / f".{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    records = []
    for i, (src, arr) in enumerate(good):
        split, j = ("train", i) if i < n_train else ("test", i - n_train)
        rel = f"{split}/{safe_name(src.label) + '/' if has_classes else ''}{j:05d}.png"
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr.transpose(1, 2, 0)).save(tmp / rel, format="PNG")
        records.append({"split": split, "file": rel, "source": src.rel, "class": src.label})
    manifest = {
        "group": name,
        "group_index": group_index,
        "source": str(Path(source).expanduser().absolute()),
        "seed": seed,
        "train": n_train,
        "test": n_test,
        "size": size,
        "resample": resample,
        "pipeline": LOADER_VERSION,
        "classes": sorted({src.label for src, _ in good}) if has_classes else [],
        "source_files": len(sources),
        "skipped": [list(s) for s in skipped],
        "images": records,
    }
    atomic_write_json(tmp / "manifest.json", manifest)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return manifest


def build_charm(
    sources: Mapping[str, str | Path],
    out: str | Path,
    *,
    seed: int = 0,
    n_train: int = TRAIN_PER_GROUP,
    n_test: int = TEST_PER_GROUP,
    size: int = 32,
    resample: str = "bicubic",
    workers: int = 0,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Build the given CHARM groups (names of :data:`CHARM_GROUPS`) under ``out``; returns the summary written to charm.json."""
    unknown = sorted(set(sources) - set(CHARM_GROUPS))
    if unknown:
        raise CharmError(f"unknown CHARM group(s) {unknown}; the groups are {list(CHARM_GROUPS)}")
    if not sources:
        raise CharmError("no source folder given")
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    for name in sources:  # fail before any work when a source is missing or an output exists
        if not Path(sources[name]).expanduser().is_dir():
            raise CharmError(f"--{name}: source folder {sources[name]} does not exist or is not a folder")
        if (out / name).exists() and any((out / name).iterdir()) and not force:
            raise CharmError(f"{out / name} exists and is not empty; remove it or pass --force")
    summary = {
        "seed": seed,
        "train_per_group": n_train,
        "test_per_group": n_test,
        "size": size,
        "resample": resample,
        "groups": {},
    }
    for name in CHARM_GROUPS:  # fixed order: a group's draw depends only on its own index and the seed
        if name in sources:
            m = build_group(
                name,
                sources[name],
                out,
                list(CHARM_GROUPS).index(name),
                seed=seed,
                n_train=n_train,
                n_test=n_test,
                size=size,
                resample=resample,
                workers=workers,
                force=force,
                progress=progress,
            )
            summary["groups"][name] = {
                "source": m["source"],
                "classes": len(m["classes"]),
                "skipped": len(m["skipped"]),
                "manifest": f"{name}/manifest.json",
            }
    atomic_write_json(out / "charm.json", summary)
    return summary
