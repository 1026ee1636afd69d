"""``DATASETS``: every data set ganbench trains on, one entry each.

An entry says everything the data module and the metrics need to know about a data set: how its files
are located (and downloaded), how they are read (into one tensor, or per item from a folder), or which
toy distribution generates it; its channels, native image side and label classes; whether its batches
are single images or image-to-image pairs; and which domain feature net scores it. Adding a data set
is adding an entry; :class:`ganbench.data.GANDataModule` and the metrics read the table and never the
name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset, Subset
from torchvision.datasets import ImageFolder

from ganbench import GanbenchError
from ganbench.data import paired, sources
from ganbench.data import toy as toys


@dataclass(frozen=True)
class Request:
    """The options of a data module that locating and opening files read."""

    dataset: str
    root: str | None
    download: bool
    lsun_classes: list[str]


def _torchvision_download(name: str) -> Callable[[Path], None]:
    """Fetch both splits of torchvision's data set class ``name`` into a folder."""

    def fetch(cache: Path) -> None:
        import torchvision.datasets as tvd

        for train in (True, False):
            getattr(tvd, name)(root=str(cache), train=train, download=True)

    return fetch


def _celeba_download(cache: Path) -> None:
    import torchvision.datasets as tvd

    tvd.CelebA(root=str(cache), split="all", target_type=[], download=True)


@dataclass(frozen=True)
class Search:
    """Files looked for in the search places of :mod:`ganbench.data.sources`, downloaded into the cache
    when allowed and possible; a miss raises one line naming every place searched and how to fetch them.

    Attributes:
        find: ``request -> (what was found or None, the places searched)``.
        what: the files looked for, as the error names them (or a function of the request).
        hint: how to get them.
        download: fetches them into a folder (the cache), or says why they cannot be downloaded.
        also: the other sub-folders searched, as the error names them.
        needs: a module that reading them imports (checked once located).
    """

    find: Callable[[Request], tuple[Any, list]]
    what: str | Callable[[Request], str]
    hint: str
    download: Callable[[Path], None] | str
    also: str = ""
    needs: str | None = None

    def __call__(self, req: Request) -> Any:
        found, places = self.find(req)
        if found is None and req.download and not isinstance(self.download, str):
            reason = self._fetch()
            if not reason:
                found, places = self.find(req)
                reason = "" if found is not None else f"download into {sources.cache_dir()} left no usable files"
            if found is None:
                raise self.missing(req, places, reason)
        if found is None:
            raise self.missing(req, places, self.download if isinstance(self.download, str) else "")
        if self.needs:
            try:
                __import__(self.needs)
            except ImportError as e:
                raise GanbenchError(f"data.dataset={req.dataset} needs the {self.needs} package, which is not "
                                    f"installed; run `pip install {self.needs}`") from e
        return found

    def _fetch(self) -> str:
        """Download into the cache; returns '' on success, else the reason."""
        assert not isinstance(self.download, str)
        try:
            self.download(sources.cache_dir())
        except Exception as e:  # network errors come in many types; all of them mean "not downloaded"
            msg = " ".join(str(e).split())
            return f"download into {sources.cache_dir()} failed ({type(e).__name__}: {msg[:200]})"
        return ""

    def missing(self, req: Request, places: list, extra: str = "") -> GanbenchError:
        what = self.what(req) if callable(self.what) else self.what
        dl = extra or ("download disabled (data.download=false)" if not req.download else "")
        return GanbenchError(
            f"data.dataset={req.dataset}: {what} not found in {sources.describe_places(places)}{self.also}"
            f"{'; ' + dl if dl else ''}; {self.hint}"
        )


def _find_idx(name: str) -> Callable[[Request], tuple[Any, list]]:
    return lambda req: sources.find_idx(name, req.root)


def _find_celeba(req: Request) -> tuple[Path | None, list]:
    places = sources.search_places(req.root)
    for _, base in places:
        if (base / "celeba" / "img_align_celeba").is_dir():
            return base, places
    return None, places


def _find_lsun(req: Request) -> tuple[Path | None, list]:
    places = sources.search_places(req.root)
    for _, base in places:
        if all((base / f"{c}_lmdb").is_dir() for c in req.lsun_classes):
            return base, places
    return None, places


def _locate_imagefolder(req: Request) -> tuple[Path, list[str]]:
    import os

    folder = req.root or os.environ.get("GANBENCH_DATA")
    if not folder:
        raise GanbenchError("data.dataset=imagefolder needs data.root (or $GANBENCH_DATA): a folder of images")
    path = Path(folder).expanduser()
    classes = sources.inspect_image_folder(path)
    if classes is None:
        kind = "does not exist" if not path.is_dir() else "holds no images"
        raise GanbenchError(
            f"data.root={folder}: the folder {kind} (data.dataset=imagefolder wants image files "
            f"{'/'.join(sources.IMG_EXTENSIONS)} directly in it or in class sub-folders)"
        )
    return path, classes


# ----------------------------------------------------------------------------------------------
# reading: in-memory tensors (images in [-1, 1] at the native side, labels) and folders per item
# ----------------------------------------------------------------------------------------------
def _read_idx(files: dict[str, Path], split: str) -> tuple[torch.Tensor, torch.Tensor]:
    # the (Fashion-)MNIST idx files hold 10 classes, also under an image-to-image set built on them
    raw, y = sources.load_idx_split(files, split, num_classes=10)
    return raw.unsqueeze(1).to(torch.float32) / 127.5 - 1.0, y


def _read_cifar10(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    raw, y = sources.load_cifar10_split(folder, split)
    return raw.to(torch.float32) / 127.5 - 1.0, y


def _read_digits(_: None, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    raw, y = sources.load_digits_split(split)
    return raw.unsqueeze(1) / 8.0 - 1.0, y


class _ClassFolder(ImageFolder):
    """torchvision's ``ImageFolder`` whose classes are exactly the sub-folders that hold images."""

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        classes = sources.inspect_image_folder(Path(directory)) or []
        return classes, {c: i for i, c in enumerate(classes)}


class _ZeroLabels(Dataset):
    """Wrap a data set so every item is ``(image, 0)`` and a decoding failure names the file."""

    def __init__(self, ds: Dataset, names: list[str] | None = None, what: str = "image") -> None:
        self.ds, self.names, self.what = ds, names, what

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        try:
            x = self.ds[i][0]
        except GanbenchError:
            raise
        except Exception as e:  # PIL and lmdb raise many types for a broken item
            name = self.names[i] if self.names is not None else f"item {i}"
            raise GanbenchError(f"data: cannot read {self.what} {name}: {type(e).__name__}: {e}") from e
        return x, 0


def _open_imagefolder(location: tuple[Path, list[str]], split: str, tf: Callable, req: Request) -> Dataset:
    folder, classes = location
    if classes:
        full: Dataset = _ClassFolder(str(folder), transform=tf, loader=sources.load_rgb, allow_empty=True)
    else:
        full = sources.FlatImageFolder(folder, transform=tf)
    train_idx, test_idx = sources.holdout_split(len(full))  # type: ignore[arg-type]
    return Subset(full, (train_idx if split == "train" else test_idx).tolist())


def _open_celeba(location: Path, split: str, tf: Callable, req: Request) -> Dataset:
    import torchvision.datasets as tvd

    try:
        ds = tvd.CelebA(root=str(location), split="train" if split == "train" else "test", target_type=[],
                        transform=tf, download=False)
    except Exception as e:  # torchvision raises RuntimeError for missing/corrupt files
        raise GanbenchError(
            f"data.dataset=celeba: {location / 'celeba'} is incomplete or corrupt "
            "(torchvision's CelebA checks the md5 of the list_*.txt and identity_CelebA.txt "
            f"files): {e}"
        ) from e
    names = [str(location / "celeba" / "img_align_celeba" / f) for f in ds.filename]
    return _ZeroLabels(ds, names)


def _open_lsun(location: Path, split: str, tf: Callable, req: Request) -> Dataset:
    import torchvision.datasets as tvd

    classes = req.lsun_classes if split == "train" else [c.replace("_train", "_val") for c in req.lsun_classes]
    try:
        ds = tvd.LSUN(root=str(location), classes=classes, transform=tf)
    except Exception as e:
        raise GanbenchError(
            f"data.lsun_classes={classes}: cannot open the LSUN databases in {location}: {e}"
        ) from e
    return _ZeroLabels(ds, what="LSUN record")


# ----------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a data set before reading it, and how to read it.

    Attributes:
        kind: ``"tensor"`` (held in memory, served by :class:`TensorLoader`), ``"folder"`` (decoded per
            item by a ``DataLoader`` with workers) or ``"toy"`` (2-D points generated in code).
        channels: image channels (0 for toys).
        num_classes: label classes, or a function of the located files that counts them (``imagefolder``).
        native: the stored image side (None where images vary or for toys).
        source: the data set whose files it is made from (``fashion_edges2image`` from ``fashion_mnist``);
            its entry locates and reads them.
        layout: ``single`` (batches ``(x, y)``), or ``paired``/``unpaired`` image-to-image batches
            ``(B, A)`` (see :mod:`ganbench.data.paired`).
        features: the domain feature net that scores its images (``fd_<net>``; see
            :mod:`ganbench.metrics.features`); None: Inception, or nothing during a fit.
        locate: ``request -> location`` (existence checks only; raises one line when absent); None when
            nothing is stored (toys, scikit-learn's bundled digits).
        read: ``(location, split) -> (images float32 (N, C, native, native) in [-1, 1], labels)`` (tensor).
        make: ``(images, labels, seed) -> (B, A)``: the pairs of an image-to-image set built on ``source``.
        open: ``(location, split, transform, request) -> Dataset`` of ``(image, label)`` items (folder).
        toy: ``(std or None for the default, location) -> distribution`` (toy).
        uses_location: whether ``toy`` places a point mass at ``data.dirac_location``.
    """

    kind: Literal["tensor", "folder", "toy"]
    channels: int
    num_classes: int | Callable[[Any], int]
    native: int | None = None
    source: str | None = None
    layout: paired.Layout = "single"
    features: str | None = None
    locate: Callable[[Request], Any] | None = None
    read: Callable[[Any, str], tuple[torch.Tensor, torch.Tensor]] | None = None
    make: Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]] | None = None
    open: Callable[[Any, str, Callable, Request], Dataset] | None = None
    toy: Callable[[float | None, float], toys.Toy] | None = None
    uses_location: bool = False

    def __post_init__(self) -> None:
        needs = {"toy": ("toy",), "tensor": ("read",), "folder": ("locate", "open")}[self.kind]
        if self.source is None and any(getattr(self, f) is None for f in needs):
            raise ValueError(f"a {self.kind} data set needs {' and '.join(needs)}, or a source that has them")


_IDX = f"the 4 idx files ({', '.join(sources.IDX_FILES.values())}, each optionally .gz)"
_FASHION_MNIST = Search(
    _find_idx("fashion_mnist"), _IDX,
    "install it with `apt-get install dataset-fashion-mnist`, or put the 4 idx files in a folder and set "
    "GANBENCH_DATA or --data.root to it",
    _torchvision_download("FashionMNIST"), also=" (each also in FashionMNIST/raw/, fashion-mnist/, fashion_mnist/)")
_MNIST = Search(
    _find_idx("mnist"), _IDX,
    "put the 4 idx files (from http://yann.lecun.com/exdb/mnist/) in a folder and set GANBENCH_DATA or "
    "--data.root to it, or allow --data.download",
    _torchvision_download("MNIST"), also=" (each also in MNIST/raw/, mnist/)")
_CIFAR10 = Search(
    lambda req: sources.find_cifar10(req.root), f"{sources.CIFAR10_DIR}/",
    "put cifar-10-batches-py/ (from https://www.cs.toronto.edu/~kriz/cifar.html) in a folder and set "
    "GANBENCH_DATA or --data.root to it, or allow --data.download",
    _torchvision_download("CIFAR10"))
_CELEBA = Search(
    _find_celeba, "celeba/img_align_celeba/",
    "put celeba/img_align_celeba/ and the celeba/list_*.txt, identity_CelebA.txt files (torchvision's CelebA "
    "layout) in a folder and set GANBENCH_DATA or --data.root to it (download needs the gdown package), or use "
    "--data.dataset=imagefolder --data.root=<folder of images>",
    _celeba_download)
_LSUN = Search(
    _find_lsun, lambda req: ", ".join(f"{c}_lmdb/" for c in req.lsun_classes),
    "download <class>_lmdb folders with https://github.com/fyu/lsun (download.py) into a folder and set "
    "GANBENCH_DATA or --data.root to it",
    "LSUN cannot be downloaded by torchvision", needs="lmdb")

DATASETS: dict[str, DatasetInfo] = {
    "fashion_mnist": DatasetInfo("tensor", 1, 10, 28, features="fmnist", locate=_FASHION_MNIST, read=_read_idx),
    "mnist": DatasetInfo("tensor", 1, 10, 28, locate=_MNIST, read=_read_idx),
    "cifar10": DatasetInfo("tensor", 3, 10, 32, locate=_CIFAR10, read=_read_cifar10),
    "celeba": DatasetInfo("folder", 3, 0, locate=_CELEBA, open=_open_celeba),
    "lsun": DatasetInfo("folder", 3, 0, locate=_LSUN, open=_open_lsun),
    "imagefolder": DatasetInfo("folder", 3, lambda location: len(location[1]), locate=_locate_imagefolder,
                               open=_open_imagefolder),
    "digits": DatasetInfo("tensor", 1, 10, 8, features="digits", read=_read_digits),
    "ring8": DatasetInfo("toy", 0, 8, toy=toys.make_ring8),
    "ring8_pacgan": DatasetInfo("toy", 0, 8, toy=toys.make_ring8_pacgan),
    "grid25": DatasetInfo("toy", 0, 25, toy=toys.make_grid25),
    "swissroll": DatasetInfo("toy", 0, 0, toy=toys.make_swissroll),
    "dirac": DatasetInfo("toy", 0, 1, toy=toys.make_dirac, uses_location=True),
    "fashion_edges2image": DatasetInfo("tensor", 1, 0, 28, source="fashion_mnist", layout="paired",
                                       make=paired.edges2image),
    "fashion_a2b": DatasetInfo("tensor", 1, 0, 28, source="fashion_mnist", layout="unpaired",
                               make=paired.class_groups),
    "imagefolder_pairs": DatasetInfo("folder", 3, 0, layout="paired", locate=lambda req: paired.locate_pairs(req.root),
                                     open=lambda loc, split, tf, req: paired.PairedFolder(loc[split], tf)),
    "imagefolder_unpaired": DatasetInfo("folder", 3, 0, layout="unpaired",
                                        locate=lambda req: paired.locate_unpaired(req.root),
                                        open=lambda loc, split, tf, req: paired.UnpairedFolder(*loc[split], tf)),
}


def names(where: Callable[[DatasetInfo], bool] = lambda info: True) -> str:
    """``name, name, ...`` of the entries for which ``where`` holds: the valid values an error lists."""
    return ", ".join(name for name, info in DATASETS.items() if where(info))
