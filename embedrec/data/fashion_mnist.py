"""Fashion-MNIST: a system copy first (Debian's dataset-fashion-mnist, or the folder that
`$EMBEDREC_FASHION_MNIST_DIR` names), then files downloaded earlier into the cache, then the
official download.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedrec.common.settings import FASHION_MNIST_INSTALL, cache_root, fashion_mnist_dir
from embedrec.data.fetching import DatasetCorrupt, DatasetUnavailable, download

FASHION_MNIST_CLASSES = [
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
]
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FMNIST_FILES = {
    ("train", "images"): ("train-images-idx3-ubyte.gz", 60000),
    ("train", "labels"): ("train-labels-idx1-ubyte.gz", 60000),
    ("test", "images"): ("t10k-images-idx3-ubyte.gz", 10000),
    ("test", "labels"): ("t10k-labels-idx1-ubyte.gz", 10000),
}
_IDX_MAGIC = {"images": (0x00000803, 16), "labels": (0x00000801, 8)}


@dataclass
class FashionMNIST:
    train_images: np.ndarray  # uint8 (60000, 28, 28)
    train_labels: np.ndarray  # int64 (60000,)
    test_images: np.ndarray  # uint8 (10000, 28, 28)
    test_labels: np.ndarray  # int64 (10000,)
    classes: list[str]  # index = label

    def product_ids(self, split: str) -> list[str]:
        """Stable ids, e.g. "fmnist-train-00042": the split and the row in the official file."""
        n = {"train": len(self.train_labels), "test": len(self.test_labels)}.get(split)
        if n is None:
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        return [f"fmnist-{split}-{i:05d}" for i in range(n)]


def read_idx(path: Path, kind: str, expected_count: int | None = None) -> np.ndarray:
    """Parse a gzipped idx file (images: magic 2051, labels: 2049), checking header and size."""
    magic, header = _IDX_MAGIC[kind]
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetCorrupt(f"{path}: truncated or corrupt gzip: {exc}") from exc
    if len(data) < header:
        raise DatasetCorrupt(f"{path}: {len(data)} bytes, shorter than the idx header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DatasetCorrupt(f"{path}: idx magic {found}, expected {magic} for {kind}")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range((header - 4) // 4)]
    if expected_count is not None and dims[0] != expected_count:
        raise DatasetCorrupt(f"{path}: header says {dims[0]} {kind}, expected {expected_count}")
    size = int(np.prod(dims))
    if len(data) - header != size:
        raise DatasetCorrupt(
            f"{path}: {len(data) - header} bytes of data, header {dims} needs {size}"
            + (" (truncated file)" if len(data) - header < size else "")
        )
    arr = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    return arr.astype(np.int64) if kind == "labels" else arr.copy()


def _fashion_file(name: str, downloads: Path) -> Path:
    system = fashion_mnist_dir()
    for folder in (system, downloads):
        if (folder / name).exists():
            return folder / name
    try:
        return download(FASHION_MNIST_URL + name, downloads / name)
    except OSError as exc:
        raise DatasetUnavailable(
            f"Fashion-MNIST file {name} not found in {system} (install it with "
            f"`{FASHION_MNIST_INSTALL}`) and download of {FASHION_MNIST_URL + name} "
            f"failed: {exc}"
        ) from exc


def load_fashion_mnist(cache: Path | None = None) -> FashionMNIST:
    """Fashion-MNIST from Debian's dataset-fashion-mnist, else the official download."""
    downloads = (Path(cache) if cache is not None else cache_root()) / "fashion-mnist"
    arrays = {}
    for (split, kind), (name, count) in _FMNIST_FILES.items():
        arrays[split, kind] = read_idx(_fashion_file(name, downloads), kind, count)
    for split in ("train", "test"):
        shape = arrays[split, "images"].shape
        if shape[1:] != (28, 28):
            raise DatasetCorrupt(f"Fashion-MNIST {split} images are {shape[1:]}, not 28x28")
        bad = arrays[split, "labels"] >= len(FASHION_MNIST_CLASSES)
        if bad.any():
            raise DatasetCorrupt(
                f"Fashion-MNIST {split} label at row {int(np.argmax(bad))} is out of range"
            )
    return FashionMNIST(
        train_images=arrays["train", "images"],
        train_labels=arrays["train", "labels"],
        test_images=arrays["test", "images"],
        test_labels=arrays["test", "labels"],
        classes=list(FASHION_MNIST_CLASSES),
    )
