"""The dataset and checksum registry: MNIST and FashionMNIST as four IDX files each.

Every file is known by the SHA-256 of its decompressed content (mirrors gzip differently) and
the published MD5 of the original gzip file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["DATASETS", "SPLITS", "DatasetSpec", "check_split", "get_spec"]

#: Valid split names.
SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetSpec:
    """Static description of a dataset distributed as four IDX files.

    Attributes
    ----------
    name : str
        Registry key, also the sub-directory name (``mnist``, ``fashion-mnist``).
    files : Mapping[str, tuple[str, str]]
        Split -> (images file, labels file).
    sha256 : Mapping[str, str]
        File -> SHA-256 (hex) of its decompressed content.
    gz_md5 : Mapping[str, str]
        File -> published MD5 (hex) of the gzip file of the original mirrors.
    mirrors : tuple of str
        Base URLs under which the files live directly.
    image_shape : tuple of int
        Shape of one image.
    num_classes : int
        Number of label classes.
    class_names : tuple of str
        Human-readable class names, indexed by label.
    """

    name: str
    files: Mapping[str, tuple[str, str]]
    sha256: Mapping[str, str]
    gz_md5: Mapping[str, str]
    mirrors: tuple[str, ...]
    image_shape: tuple[int, ...] = (28, 28)
    num_classes: int = 10
    class_names: tuple[str, ...] = field(default=tuple(str(i) for i in range(10)))

    def __post_init__(self) -> None:
        for attr in ("files", "sha256", "gz_md5"):
            object.__setattr__(self, attr, MappingProxyType(dict(getattr(self, attr))))

    def __hash__(self) -> int:  # the mappings are unhashable; the name identifies a spec
        return hash(self.name)

    @property
    def filenames(self) -> tuple[str, ...]:
        """All files of the dataset, split by split, images before labels."""
        return tuple(f for split in self.files for f in self.files[split])

    def accepted_gz_md5(self, filename: str) -> tuple[str, ...]:
        """Published gzip MD5s accepted for ``filename`` (empty if none)."""
        md5 = self.gz_md5.get(filename)
        return (md5,) if md5 else ()


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

#: Registered datasets by name (read-only mapping).
DATASETS: Mapping[str, DatasetSpec] = MappingProxyType(
    {
        "mnist": DatasetSpec(
            name="mnist",
            files=_MNIST_FILES,
            sha256={
                "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            },
            gz_md5={
                "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
                "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
            },
            mirrors=(
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "http://yann.lecun.com/exdb/mnist/",
            ),
        ),
        "fashion-mnist": DatasetSpec(
            name="fashion-mnist",
            files=_MNIST_FILES,
            sha256={
                "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            },
            gz_md5={
                "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
            },
            mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
            class_names=(
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ),
        ),
    }
)


def get_spec(name: str) -> DatasetSpec:
    """Return the registered :class:`DatasetSpec` called ``name``.

    Raises
    ------
    ValueError
        If ``name`` is unknown; the message lists the valid names.
    """
    try:
        return DATASETS[name]
    except KeyError:
        valid = ", ".join(repr(n) for n in DATASETS)
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {valid}") from None


def check_split(split: str) -> None:
    if split not in SPLITS:
        valid = ", ".join(repr(s) for s in SPLITS)
        raise ValueError(f"unknown split {split!r}; valid splits: {valid}")
