"""Finding and reading the data sets ganbench trains on.

Locating is cheap (existence checks only) so that a missing data set is reported before any run
directory or logger exists; reading happens later and names the file that is corrupt.

Search order for the files of a data set: the ``root`` argument (``--data.root``), ``$GANBENCH_DATA``,
``~/.cache/ganbench``, then system folders (``/usr/share/datasets/fashion-mnist`` from Debian's
``dataset-fashion-mnist`` package, Fashion-MNIST only). Downloads go to ``~/.cache/ganbench``.
"""

from __future__ import annotations

import gzip
import os
import pickle
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ganbench import GanbenchError

#: Folders searched for Fashion-MNIST after root, $GANBENCH_DATA and the cache (Debian's package).
SYSTEM_DIRS: dict[str, list[Path]] = {
    "fashion_mnist": [Path("/usr/share/datasets/fashion-mnist")],
    "mnist": [],
}

#: Sub-folders of a search place that may hold the idx files (torchvision writes ``<Name>/raw``).
IDX_SUBDIRS: dict[str, list[str]] = {
    "fashion_mnist": ["", "FashionMNIST/raw", "fashion-mnist", "fashion_mnist", "fashion-mnist/data/fashion"],
    "mnist": ["", "MNIST/raw", "mnist"],
}

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR10_TEST = ["test_batch"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def cache_dir() -> Path:
    """``~/.cache/ganbench``: where downloads go (resolved at call time)."""
    return Path.home() / ".cache" / "ganbench"


def search_places(root: str | None, system: Sequence[Path] = ()) -> list[tuple[str, Path]]:
    """The folders to search, in priority order, each with a label for error messages."""
    places: list[tuple[str, Path]] = []
    if root:
        places.append((f"data.root={root}", Path(root).expanduser()))
    env = os.environ.get("GANBENCH_DATA")
    if env:
        places.append((f"$GANBENCH_DATA={env}", Path(env).expanduser()))
    places.append((str(cache_dir()), cache_dir()))
    places.extend((str(p), p) for p in system)
    return places


def describe_places(places: Sequence[tuple[str, Path]]) -> str:
    """``a, b, c`` for an error message."""
    return ", ".join(label for label, _ in places)


# ------------------------------------------------------------------------------------------------
# idx (MNIST / Fashion-MNIST)
# ------------------------------------------------------------------------------------------------
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _existing(path: Path) -> Path | None:
    """``path`` or ``path.gz``, whichever exists (plain first)."""
    if path.is_file():
        return path
    gz = path.with_name(path.name + ".gz")
    return gz if gz.is_file() else None


def _idx_files_in(folder: Path) -> dict[str, Path] | None:
    found = {key: _existing(folder / name) for key, name in IDX_FILES.items()}
    if any(p is None for p in found.values()):
        return None
    return found  # type: ignore[return-value]


def _bounded_dirs(base: Path, depth: int) -> list[Path]:
    """``base`` and its sub-folders down to ``depth`` levels, sorted (a cheap, bounded walk)."""
    out, frontier = [base], [base]
    for _ in range(depth):
        nxt: list[Path] = []
        for d in frontier:
            try:
                nxt.extend(sorted(e for e in d.iterdir() if e.is_dir()))
            except OSError:
                continue
        out.extend(nxt)
        frontier = nxt
    return out


def find_idx(dataset: str, root: str | None) -> tuple[dict[str, Path] | None, list[tuple[str, Path]]]:
    """Locate the 4 idx files of ``dataset`` ("fashion_mnist" or "mnist").

    Returns the file paths (or None) and the places searched. User places are checked at the known
    sub-layouts ``IDX_SUBDIRS``; system folders are also walked two levels deep, since a packaged
    layout may use sub-folders.
    """
    system = SYSTEM_DIRS.get(dataset, [])
    places = search_places(root, system)
    for label, base in places:
        candidates = [base / sub if sub else base for sub in IDX_SUBDIRS[dataset]]
        if any(label == str(p) for p in system):
            candidates += _bounded_dirs(base, 2)
        for folder in candidates:
            if folder.is_dir() and (files := _idx_files_in(folder)) is not None:
                return files, places
            if folder.is_dir() and not any(label == str(p) for p in system):
                _check_partial_idx(folder)
    return None, places


def _check_partial_idx(folder: Path) -> None:
    """A folder the user named that holds some but not all idx files is an error, not a reason to look on."""
    have = [name for name in IDX_FILES.values() if _existing(folder / name) is not None]
    if have and len(have) < len(IDX_FILES):
        missing = [name for name in IDX_FILES.values() if name not in have]
        raise GanbenchError(f"data: {folder} holds {len(have)} of the 4 idx files; missing: {', '.join(missing)} "
                            "(each may be gzip-compressed, .gz)")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (LeCun et al., the MNIST format), optionally gzip-compressed.

    Layout: two zero bytes, a dtype code, the number of dimensions ``d``, ``d`` big-endian uint32 sizes,
    then the data in C order. Raises :class:`ganbench.GanbenchError` naming the file when it is
    truncated or malformed.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as e:
        raise GanbenchError(f"data: cannot read idx file {path}: {e}") from e
    except zlib.error as e:  # damaged deflate data (a flipped byte) before gzip's own CRC check
        raise GanbenchError(f"data: cannot read idx file {path}: the gzip data are corrupt (zlib: {e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise GanbenchError(f"data: {path} is not an idx file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise GanbenchError(f"data: idx file {path} is truncated (header incomplete)")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise GanbenchError(
            f"data: idx file {path} is truncated or corrupt: {len(raw) - header} data bytes, "
            f"expected {expected} for shape {shape}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def load_idx_split(files: dict[str, Path], split: str, num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 (N, 28, 28), labels long (N,))`` of ``split`` ("train"/"test"); the images must be
    28x28 and the labels in ``[0, num_classes)``."""
    prefix = "train" if split == "train" else "test"
    image_file, label_file = files[f"{prefix}_images"], files[f"{prefix}_labels"]
    images = read_idx(image_file)
    labels = read_idx(label_file)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise GanbenchError(
            f"data: {image_file} and {label_file} do not match "
            f"(shapes {images.shape} and {labels.shape})"
        )
    if images.shape[1:] != (28, 28):
        raise GanbenchError(f"data: idx file {image_file} holds images of {images.shape[1]}x{images.shape[2]} "
                            "pixels; MNIST and Fashion-MNIST images are 28x28")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise GanbenchError(f"data: idx file {label_file} has labels from {int(labels.min())} to "
                            f"{int(labels.max())}; the data set has {num_classes} classes (0 to {num_classes - 1})")
    return torch.from_numpy(images.astype(np.uint8)), torch.from_numpy(labels.astype(np.int64))


# ------------------------------------------------------------------------------------------------
# CIFAR-10 (python pickle batches, as distributed by Krizhevsky and used by torchvision)
# ------------------------------------------------------------------------------------------------
def find_cifar10(root: str | None) -> tuple[Path | None, list[tuple[str, Path]]]:
    """Locate a ``cifar-10-batches-py`` folder (the place itself or its sub-folder of that name)."""
    places = search_places(root)
    names = CIFAR10_TRAIN + CIFAR10_TEST
    for _, base in places:
        for folder in (base / CIFAR10_DIR, base):
            if all((folder / n).is_file() for n in names):
                return folder, places
    return None, places


def load_cifar10_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 (N, 3, 32, 32), labels long (N,))`` from the pickle batches of ``split``.

    The batches are read directly (the same layout torchvision's ``CIFAR10`` reads: a dict with
    ``data`` (N, 3072) uint8 in CHW order and ``labels``); torchvision's download verifies the md5.
    """
    xs, ys = [], []
    for name in CIFAR10_TRAIN if split == "train" else CIFAR10_TEST:
        path = folder / name
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(
                entry["labels"] if "labels" in entry else entry["fine_labels"], dtype=np.int64
            )
        except Exception as e:
            raise GanbenchError(f"data: cannot read CIFAR-10 batch {path}: {type(e).__name__}: {e}") from e
        if data.shape[0] != labels.shape[0]:
            raise GanbenchError(
                f"data: CIFAR-10 batch {path} has {data.shape[0]} images but {labels.shape[0]} labels"
            )
        xs.append(data)
        ys.append(labels)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


# ------------------------------------------------------------------------------------------------
# scikit-learn digits
# ------------------------------------------------------------------------------------------------
def load_digits_split(split: str, test_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16) as ``(float (N, 8, 8), long (N,))``.

    The split is fixed (independent of any run seed): a permutation from a generator seeded 0 puts
    ``round(1797 * test_fraction)`` = 180 images in "test" and the other 1617 in "train".
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32))
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    train_idx, test_idx = holdout_split(images.shape[0], test_fraction)
    idx = train_idx if split == "train" else test_idx
    return images[idx], labels[idx]


def holdout_split(n: int, test_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed train/test partition of ``range(n)`` (generator seed 0), both parts sorted."""
    n_test = min(n - 1, max(1, round(n * test_fraction))) if n > 1 else 0
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return perm[n_test:].sort().values, perm[:n_test].sort().values


# ------------------------------------------------------------------------------------------------
# Folders of images
# ------------------------------------------------------------------------------------------------
def is_image(path: str | Path) -> bool:
    """Whether ``path`` has an image extension torchvision's ``ImageFolder`` accepts."""
    return str(path).lower().endswith(IMG_EXTENSIONS)


def load_rgb(path: str) -> Image.Image:
    """Open an image as RGB; a file PIL cannot decode raises GanbenchError naming it."""
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except Exception as e:
        raise GanbenchError(f"data: cannot read image {path}: {type(e).__name__}: {e}") from e


def _has_image(folder: Path) -> bool:
    try:
        return any(e.is_file() and is_image(e.name) for e in os.scandir(folder))
    except OSError:
        return False


def inspect_image_folder(folder: Path) -> list[str] | None:
    """Classify a folder cheaply: the class sub-folder names (sorted; those holding images) when it has
    them, ``[]`` when it holds images directly, ``None`` when it has no images at all."""
    if not folder.is_dir():
        return None
    subdirs = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    classes = [d for d in subdirs if _has_image(folder / d)]
    if classes:
        return classes
    return [] if _has_image(folder) else None


class FlatImageFolder(torch.utils.data.Dataset):
    """The images directly inside ``folder`` (sorted by name), each labelled 0."""

    def __init__(self, folder: str | Path, transform: Callable | None = None) -> None:
        self.files = sorted(str(p) for p in Path(folder).iterdir() if p.is_file() and is_image(p.name))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = load_rgb(self.files[i])
        return (self.transform(img) if self.transform else img), 0
