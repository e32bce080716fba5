"""Image-folder groups (data/folders.py) and the CHARM builder (data/charm.py) on generated folders."""

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from fissionvae.cli import main
from fissionvae.config import ConfigError, load_config
from fissionvae.data import folders
from fissionvae.data.charm import CharmError, build_charm, scan_source
from fissionvae.data.federated import load_groups
from fissionvae.data.folders import FolderError, SkippedFilesWarning, load_image_folder

RED, BLUE = (255, 0, 0), (0, 0, 255)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FISSIONVAE_CACHE", str(tmp_path / "cache"))


def save(path: Path, image: Image.Image, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path


def noise(w: int, h: int, seed: int, mode: str = "RGB") -> Image.Image:
    channels = {"RGB": 3, "RGBA": 4}.get(mode, 1)
    arr = np.random.default_rng(seed).integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)


def messy_folder(root: Path) -> Path:
    """Mixed sizes and modes in class folders, plus a text file, a truncated JPEG and a hidden file."""
    stripes = np.zeros((20, 60, 3), np.uint8)
    stripes[:, :20] = BLUE
    stripes[:, 20:40] = RED
    stripes[:, 40:] = BLUE
    save(root / "cats" / "wide.png", Image.fromarray(stripes))  # 60x20: the centre square is red
    save(root / "cats" / "photo.jpg", noise(64, 48, 1), "JPEG")
    save(root / "dogs" / "grey.png", Image.new("L", (17, 17), 100))
    rgba = Image.new("RGBA", (12, 12), (0, 0, 0, 0))  # fully transparent -> white
    save(root / "dogs" / "transparent.png", rgba)
    save(root / "dogs" / "deep" / "opaque.webp", Image.new("RGBA", (40, 40), (*RED, 255)), "WEBP")
    save(root / "top.bmp", noise(9, 31, 2), "BMP")
    (root / "notes.txt").write_text("not an image\n")
    buf = io.BytesIO()
    noise(50, 50, 3).save(buf, format="JPEG")
    (root / "cats" / "broken.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    (root / ".DS_Store").write_bytes(b"\x00\x01")
    return root


def test_loader_converts_crops_resizes_and_names_skipped_files(tmp_path):
    root = messy_folder(tmp_path / "group")
    with pytest.warns(SkippedFilesWarning, match=r"skipped 2 of 8 file\(s\).*cats/broken.jpg.*notes.txt"):
        got = load_image_folder(root, size=8, resample="box")
    assert got.images.shape == (6, 3, 8, 8) and got.images.dtype == np.uint8
    assert got.files == (
        "cats/photo.jpg",
        "cats/wide.png",
        "dogs/deep/opaque.webp",
        "dogs/grey.png",
        "dogs/transparent.png",
        "top.bmp",
    )
    assert got.classes == ("", "cats", "dogs", "dogs/deep") and got.labels.tolist() == [1, 1, 3, 2, 2, 0]
    assert [s[0] for s in got.skipped] == ["cats/broken.jpg", "notes.txt"]
    img = dict(zip(got.files, got.images, strict=True))
    assert (img["cats/wide.png"].transpose(1, 2, 0) == RED).all()  # centre square only
    assert (img["dogs/grey.png"] == 100).all()  # grey repeated to 3 channels
    assert (img["dogs/transparent.png"] == 255).all()  # alpha composited over white
    assert np.abs(img["dogs/deep/opaque.webp"].transpose(1, 2, 0).astype(int) - RED).max() <= 3  # lossy WebP


def test_loader_cache_is_keyed_by_folder_content(tmp_path, monkeypatch):
    root = messy_folder(tmp_path / "group")
    with pytest.warns(SkippedFilesWarning):
        first = load_image_folder(root, size=8)
    calls = []
    real = folders.decode_many
    monkeypatch.setattr(folders, "decode_many", lambda *a, **k: calls.append(1) or real(*a, **k))
    with pytest.warns(SkippedFilesWarning):  # from the cache: no decoding, the same warning
        again = load_image_folder(root, size=8)
    assert calls == [] and again.key == first.key and np.array_equal(again.images, first.images)
    save(root / "cats" / "photo.jpg", noise(64, 48, 9), "JPEG")  # new content, same name
    with pytest.warns(SkippedFilesWarning):
        changed = load_image_folder(root, size=8)
    assert calls == [1] and changed.key != first.key
    with pytest.warns(SkippedFilesWarning):
        load_image_folder(root, size=16)  # other size: other key
    assert calls == [1, 1]


def test_strict_empty_and_missing_folders_are_errors_naming_them(tmp_path):
    root = messy_folder(tmp_path / "group")
    with pytest.raises(FolderError, match=r"strict mode.*cats/broken.jpg"):
        load_image_folder(root, size=8, strict=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedFilesWarning)
        with pytest.raises(FolderError, match=f"{empty}.*no readable image"):
            load_image_folder(empty, size=8)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_image_folder(tmp_path / "nowhere")


def folder_group(name: str, train: Path, test: Path | None = None, **extra) -> dict:
    folder = {"train": str(train), **({"test": str(test)} if test else {}), **extra}
    return {"name": name, "dataset": "folder", "clients": 2, "folder": folder}


def test_folder_groups_in_a_run_config(tmp_path, monkeypatch):
    for split, n in (("train", 6), ("test", 3)):
        for cls in ("a", "b"):
            for i in range(n):
                save(tmp_path / "g1" / split / cls / f"{i}.png", noise(20 + i, 24, hash((split, cls, i)) % 1000))
    for i in range(10):
        save(tmp_path / "g2" / f"{i}.jpg", noise(30, 30, 100 + i), "JPEG")
    monkeypatch.chdir(tmp_path)
    raw = {
        "data": {
            "groups": [
                folder_group("one", Path("g1/train"), Path("g1/test"), size=16),
                folder_group("two", Path("g2"), size=16, test_fraction=0.3),
            ]
        }
    }
    cfg = load_config(raw=raw)
    assert cfg.data.groups[0].folder.train == str(tmp_path / "g1" / "train")  # absolute once loaded
    one, two = load_groups(cfg)
    assert one.train_images.shape == (12, 3, 16, 16) and one.test_images.shape == (6, 3, 16, 16)
    assert one.train_labels.tolist() == [0] * 6 + [1] * 6 and one.test_labels.tolist() == [0] * 3 + [1] * 3
    assert two.train_images.shape == (7, 3, 16, 16) and two.test_images.shape == (3, 3, 16, 16)  # held out: 30%
    assert float(two.train_images.min()) >= 0.0 and float(two.train_images.max()) <= 1.0
    with pytest.raises(ConfigError, match="folder: set it exactly when dataset is 'folder'"):
        load_config(raw={"data": {"groups": [{"name": "x", "dataset": "folder"}]}})
    with pytest.raises(ConfigError, match="same image shape"):
        load_config(raw={"data": {"groups": [folder_group("x", Path("g2")), {"name": "m", "dataset": "mnist"}]}})
    with pytest.raises(ConfigError, match="unknown config key.*folder.sise"):
        load_config(raw={"data": {"groups": [folder_group("x", Path("g2"), sise=8)]}})


# --------------------------------------------------------------------------- CHARM


def charm_sources(root: Path, n: int = 14) -> dict[str, Path]:
    """Five tiny sources, one per distributed layout, each with ``n`` images (some with extra junk)."""
    src = {}
    src["anime"] = root / "anime"
    for i in range(n):
        save(src["anime"] / "images" / f"{i}_2019.jpg", noise(20, 22, i), "JPEG")
    (src["anime"] / "README.txt").write_text("junk")
    src["celeba-hq"] = root / "celeba_hq"
    for i in range(n):
        save(
            src["celeba-hq"] / ("train" if i % 3 else "val") / ("female" if i % 2 else "male") / f"{i:06d}.jpg",
            noise(40, 40, 50 + i),
            "JPEG",
        )
    for name, cols in (("awa2", ("FILE_NAME", "CATEGORY")), ("marvel", ("file", "vessel"))):
        folder = root / f"{name}_Extended" / name.upper()
        src[name] = root / f"{name}_Extended"  # labels.csv one level down
        rows = [f"{cols[0]},{cols[1]},SUPER_CATEGORY"]
        for i in range(n):
            save(folder / "images" / f"{name}{i}.jpg", noise(16, 16, 200 + i), "JPEG")
            rows.append(f"{name}{i}.jpg,{'killer whale' if i % 2 else 'tug/boat'},NAN")
        (folder / "labels.csv").write_text("\n".join(rows) + "\n")
        (folder / "info.json").write_text(json.dumps({"image_column_name": cols[0], "category_column_name": cols[1]}))
    src["eurosat"] = root / "EuroSAT_RGB"
    for i in range(n):
        save(src["eurosat"] / ("Forest" if i % 2 else "River") / f"x_{i}.jpg", noise(64, 64, 300 + i), "JPEG")
    (src["eurosat"] / "River" / "x_corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return src


def test_charm_builder_counts_layouts_and_disjoint_seeded_splits(tmp_path):
    src = charm_sources(tmp_path / "src")
    assert {s.label for s in scan_source(src["marvel"])} == {"killer whale", "tug/boat"}
    assert {s.label for s in scan_source(src["eurosat"])} == {"Forest", "River"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = build_charm(src, tmp_path / "a", seed=0, n_train=10, n_test=4, size=16, progress=False)
    # all 14 images are needed, so every file is visited: junk is named, never silently used
    assert any("README.txt" in str(w.message) for w in caught) and any(
        "x_corrupt.jpg" in str(w.message) for w in caught
    )
    assert set(summary["groups"]) == {"anime", "celeba-hq", "awa2", "eurosat", "marvel"}
    for name in summary["groups"]:
        m = json.loads((tmp_path / "a" / name / "manifest.json").read_text())
        train = [r["source"] for r in m["images"] if r["split"] == "train"]
        test = [r["source"] for r in m["images"] if r["split"] == "test"]
        assert (len(train), len(test)) == (10, 4) and not set(train) & set(test)
        imgs = load_image_folder(tmp_path / "a" / name / "train", size=16, progress=False)
        assert imgs.images.shape == (10, 3, 16, 16)
        assert len(list((tmp_path / "a" / name / "test").rglob("*.png"))) == 4
    assert load_image_folder(tmp_path / "a" / "marvel" / "train", size=16).classes == ("killer_whale", "tug_boat")
    assert load_image_folder(tmp_path / "a" / "anime" / "train", size=16).classes == ("",)
    # the same seed draws the same images; another seed others
    for out, seed, workers in (("b", 0, 0), ("c", 1, 0), ("d", 0, 2)):
        with pytest.warns(SkippedFilesWarning):
            build_charm(
                {"eurosat": src["eurosat"]},
                tmp_path / out,
                seed=seed,
                n_train=10,
                n_test=4,
                size=16,
                workers=workers,
                progress=False,
            )

    def images(out):
        return json.loads((tmp_path / out / "eurosat" / "manifest.json").read_text())["images"]

    assert images("a") == images("b") == images("d") and images("a") != images("c")  # decoding processes change nothing

    def png(out):
        return sorted(
            (p.relative_to(tmp_path / out), p.read_bytes()) for p in (tmp_path / out / "eurosat").rglob("*.png")
        )

    assert png("b") == png("d")


def test_charm_builder_errors_and_cli(tmp_path, capsys):
    src = charm_sources(tmp_path / "src", n=6)
    with pytest.raises(CharmError, match="holds 7 file"):
        build_charm({"anime": src["anime"]}, tmp_path / "out", n_train=8, n_test=4, progress=False)
    with pytest.raises(CharmError, match="does not exist"):
        build_charm({"anime": tmp_path / "missing"}, tmp_path / "out", progress=False)
    args = [
        "data",
        "charm",
        "--awa2",
        str(src["awa2"]),
        "--out",
        str(tmp_path / "out"),
        "--train-per-group",
        "3",
        "--test-per-group",
        "2",
        "--size",
        "8",
        "--no-progress",
    ]
    assert main(args) == 0
    assert "awa2" in capsys.readouterr().out and (tmp_path / "out" / "charm.json").is_file()
    assert main(args) == 2  # exists: refused
    assert "exists and is not empty" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0


def test_charm_configs_point_at_the_builder_layout():
    from tests.helpers import REPO

    raw = yaml.safe_load((REPO / "configs" / "charm" / "_federation.yaml").read_text())  # shared by the VAEs and FedGAN
    groups = raw["data"]["groups"]
    assert [g["name"] for g in groups] == ["anime", "celeba-hq", "awa2", "eurosat", "marvel"]
    assert all(
        g["folder"]["train"] == f"data/charm/{g['name']}/train"
        and g["folder"]["test"] == f"data/charm/{g['name']}/test"
        for g in groups
    )


def test_charm_fedgan_trains_on_a_built_charm_folder(tmp_path, monkeypatch):
    """configs/charm/fedgan.yaml as shipped (relative data/charm/... folders, 32x32 RGB DCGAN), on
    generated sources built by the CHARM builder, shrunk to one client per group and two rounds."""
    from tests.helpers import REPO

    from fissionvae.federation.engine import train
    from fissionvae.runs import RunDir

    monkeypatch.chdir(tmp_path)
    with pytest.warns(SkippedFilesWarning):  # the generated sources hold junk files on purpose
        build_charm(
            charm_sources(tmp_path / "src", n=10),
            tmp_path / "data" / "charm",
            n_train=6,
            n_test=3,
            size=32,
            progress=False,
        )
    small = [f"data.groups.{i}.clients=1" for i in range(5)]
    cfg = load_config(
        REPO / "configs" / "charm" / "fedgan.yaml",
        [
            *small,
            "federation.participation=1.0",
            "train.rounds=2",
            "train.local_steps=2",
            "eval.test_per_group=3",
            "eval.grid_size=10",
            "eval.recon_per_group=2",
        ],
    )
    groups = load_groups(cfg)
    assert [g.name for g in groups] == ["anime", "celeba-hq", "awa2", "eurosat", "marvel"]
    assert all(g.train_images.shape[1:] == (3, 32, 32) for g in groups)
    run = RunDir.create(tmp_path / "runs", cfg, "charm-fedgan")
    state = train(cfg, run, progress=False)
    rounds = [m for m in run.metrics() if m["type"] == "round"]
    assert state.round == 2 and [m["clients"] for m in rounds] == [[0, 1, 2, 3, 4]] * 2
    assert all(0 < m["test/d_real"] < 1 and 0 < m["train/d_loss"] < 10 for m in rounds)
    assert (run.images_dir / "samples.png").stat().st_size > 1000
