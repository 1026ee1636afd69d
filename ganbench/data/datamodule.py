"""``GANDataModule``: every data set ganbench trains on, behind one Lightning data module."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.datasets import ImageFolder

from ganbench import GanbenchError
from ganbench.data import paired, sources
from ganbench.data.loader import TensorLoader, mix_seed
from ganbench.data.toy import DiracMass, SwissRoll, ToyMixture, make_toy

DatasetName = Literal[
    "fashion_mnist",
    "mnist",
    "cifar10",
    "celeba",
    "lsun",
    "imagefolder",
    "digits",
    "ring8",
    "ring8_pacgan",
    "grid25",
    "swissroll",
    "dirac",
    "fashion_edges2image",
    "fashion_a2b",
    "imagefolder_pairs",
    "imagefolder_unpaired",
]
Split = Literal["train", "test"]


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a data set before reading it.

    Attributes:
        kind: ``"tensor"`` (held in memory, served by :class:`TensorLoader`), ``"folder"`` (decoded per
            item by a ``DataLoader`` with workers) or ``"toy"`` (2-D points generated in code).
        channels: image channels (0 for toys).
        num_classes: label classes; ``-1`` when it depends on the files (``imagefolder``).
        native: the stored image side (None where images vary or for toys).
        source: the data set whose files it is made from (``fashion_edges2image`` from ``fashion_mnist``).
        layout: ``single`` (batches ``(x, y)``), or ``paired``/``unpaired`` image-to-image batches
            ``(B, A)`` (see :mod:`ganbench.data.paired`).
    """

    kind: Literal["tensor", "folder", "toy"]
    channels: int
    num_classes: int
    native: int | None = None
    source: str | None = None
    layout: paired.Layout = "single"


DATASETS: dict[str, DatasetInfo] = {
    "fashion_mnist": DatasetInfo("tensor", 1, 10, 28),
    "mnist": DatasetInfo("tensor", 1, 10, 28),
    "cifar10": DatasetInfo("tensor", 3, 10, 32),
    "digits": DatasetInfo("tensor", 1, 10, 8),
    "celeba": DatasetInfo("folder", 3, 0),
    "lsun": DatasetInfo("folder", 3, 0),
    "imagefolder": DatasetInfo("folder", 3, -1),
    "ring8": DatasetInfo("toy", 0, 8),
    "ring8_pacgan": DatasetInfo("toy", 0, 8),
    "grid25": DatasetInfo("toy", 0, 25),
    "swissroll": DatasetInfo("toy", 0, 0),
    "dirac": DatasetInfo("toy", 0, 1),
    "fashion_edges2image": DatasetInfo("tensor", 1, 0, 28, source="fashion_mnist", layout="paired"),
    "fashion_a2b": DatasetInfo("tensor", 1, 0, 28, source="fashion_mnist", layout="unpaired"),
    "imagefolder_pairs": DatasetInfo("folder", 3, 0, layout="paired"),
    "imagefolder_unpaired": DatasetInfo("folder", 3, 0, layout="unpaired"),
}
assert set(DATASETS) == set(get_args(DatasetName))

#: Streams of the toy generators: distinct samples for the train set, the val set and real_samples.
_TRAIN_STREAM, _VAL_STREAM, _REAL_TRAIN_STREAM, _REAL_TEST_STREAM = 0, 1, 2, 3
_FETCH_HINT = {
    "fashion_mnist": "install it with `apt-get install dataset-fashion-mnist`, or put the 4 idx files "
    "in a folder and set GANBENCH_DATA or --data.root to it",
    "mnist": "put the 4 idx files (from http://yann.lecun.com/exdb/mnist/) in a folder and set "
    "GANBENCH_DATA or --data.root to it, or allow --data.download",
    "cifar10": "put cifar-10-batches-py/ (from https://www.cs.toronto.edu/~kriz/cifar.html) in a folder "
    "and set GANBENCH_DATA or --data.root to it, or allow --data.download",
    "celeba": "put celeba/img_align_celeba/ and the celeba/list_*.txt, identity_CelebA.txt files "
    "(torchvision's CelebA layout) in a folder and set GANBENCH_DATA or --data.root to it (download "
    "needs the gdown package), or use --data.dataset=imagefolder --data.root=<folder of images>",
    "lsun": "download <class>_lmdb folders with https://github.com/fyu/lsun (download.py) into a folder "
    "and set GANBENCH_DATA or --data.root to it",
}


def _seed(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(mix_seed(seed, stream))


def to_resolution(x: torch.Tensor, native: int, resolution: int, mnist_like: bool) -> torch.Tensor:
    """Bring images in [-1, 1] of side ``native`` to side ``resolution``.

    Rule: unchanged when ``resolution == native``. For 28x28 MNIST-like data any other resolution first
    pads 2 px per side with the background value -1 to 32x32 (the usual framing of MNIST-like data in
    32x32 GAN architectures), then resizes 32 -> ``resolution`` when that is not 32, so every resolution
    shows the same framing. Other data sets resize native -> ``resolution``. Resizing is bilinear with
    antialiasing (a triangle filter: non-negative weights, so values stay in [-1, 1]).
    """
    if resolution == native:
        return x
    if mnist_like and native == 28:
        x = F.pad(x, (2, 2, 2, 2), value=-1.0)
        if resolution == 32:
            return x
    out = [
        F.interpolate(
            chunk, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False
        )
        for chunk in x.split(4096)
    ]
    return torch.cat(out).clamp_(-1.0, 1.0)


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


class GANDataModule(L.LightningDataModule):
    """Real data for GAN training: images in [-1, 1] or 2-D toy points.

    Batches are ``(x, y)``: images (B, C, R, R) float32 in [-1, 1] with ``y`` the class label (long; zeros
    where a data set has no labels), or toy points (B, 2) float32 with ``y`` the mixture mode index.

    ``shape``, ``channels``, ``num_classes``, ``is_toy`` and ``mixture`` are set by ``__init__`` without
    reading the data, and ``__init__`` checks that the data exist (downloading when allowed), so a
    missing data set fails before any run directory or logger is created.

    Small data sets (fashion_mnist, mnist, cifar10, digits, the toys) are decoded once into one float32
    tensor (already resized and scaled) and served by :class:`TensorLoader`, which slices a permutation
    per batch: far faster than a ``DataLoader`` that collates item by item. celeba, lsun and imagefolder
    are decoded per item by a ``DataLoader`` with ``num_workers`` workers: the shorter side is resized to
    ``resolution`` then center-cropped (the preprocessing of the DCGAN reference implementation, Radford
    et al. 2016). For the in-memory image rule see :func:`to_resolution`.

    Splits: the official train/test splits of fashion_mnist, mnist, cifar10 and celeba; a fixed 90/10
    split (generator seed 0) for digits and imagefolder; LSUN's ``<class>_val`` databases; for toys a
    second sample drawn with another seed.

    Args:
        dataset: which data set.
        root: a folder to search first (see :mod:`ganbench.data.sources` for the search order).
        resolution: image side R (int >= 4; ignored by toys).
        batch_size: samples per discriminator minibatch.
        num_workers: ``DataLoader`` workers for the folder data sets.
        n_toy_samples: points in a toy training set (and in its validation set).
        toy_std: overrides the toy mode std (ring8 0.02, ring8_pacgan 0.01, grid25 0.05, swissroll 0.25/7.5,
            dirac 0: a point mass).
        dirac_location: where the ``dirac`` data set's point mass sits on the line.
        lsun_classes: LSUN databases to use, e.g. ``["bedroom_train"]`` (the default).
        download: fetch a missing data set into ``~/.cache/ganbench`` where torchvision can.
        seed: seed of the shuffling and of the toy samples.
        train_samples: train on a fixed subset of this many training images (the limited-data regime
            of Karras et al. 2020 and Zhao et al. 2020): the first ``train_samples`` of a permutation
            seeded with 0, the same for every run and seed, so runs compare on the same images.
            Metrics still compare against the whole training split; ``None``: every training image.
    """

    def __init__(
        self,
        dataset: DatasetName = "fashion_mnist",
        root: str | None = None,
        resolution: int = 32,
        batch_size: int = 64,
        num_workers: int = 0,
        n_toy_samples: int = 50_000,
        toy_std: float | None = None,
        dirac_location: float = 0.0,
        lsun_classes: list[str] | None = None,
        download: bool = True,
        seed: int = 0,
        train_samples: int | None = None,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise GanbenchError(f"data.dataset={dataset!r} is unknown; valid: {', '.join(DATASETS)}")
        info = DATASETS[dataset]
        if info.kind != "toy" and (
            isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 4
        ):
            raise GanbenchError(f"data.resolution={resolution!r} is unsupported; it must be an integer >= 4")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise GanbenchError(f"data.batch_size={batch_size!r} is invalid; it must be an integer >= 1")
        if num_workers < 0:
            raise GanbenchError(f"data.num_workers={num_workers!r} is invalid; it must be >= 0")
        if info.kind == "toy" and n_toy_samples < 1:
            raise GanbenchError(f"data.n_toy_samples={n_toy_samples!r} is invalid; it must be >= 1")
        if train_samples is not None and (isinstance(train_samples, bool) or not isinstance(train_samples, int)
                                          or train_samples < 1):
            raise GanbenchError(f"data.train_samples={train_samples!r} is invalid; it must be an integer >= 1 "
                                "(or null: every training image)")
        if train_samples is not None and info.kind == "toy":
            raise GanbenchError(f"data.train_samples={train_samples} limits image data sets; a toy's training set "
                                "size is data.n_toy_samples")
        if toy_std is not None and toy_std < 0:
            raise GanbenchError(f"data.toy_std={toy_std!r} is invalid; it must be >= 0")
        if dirac_location and dataset != "dirac":
            raise GanbenchError(f"data.dirac_location={dirac_location} places the dirac data set's point mass; "
                                f"data.dataset={dataset} does not use it")
        self.save_hyperparameters()
        self.dataset = dataset
        self.root = root
        self.resolution = resolution
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.n_toy_samples = n_toy_samples
        self.toy_std = toy_std
        self.lsun_classes = list(lsun_classes) if lsun_classes else ["bedroom_train"]
        self.download = download
        self.seed = seed
        self.train_samples = train_samples
        #: set by the model/CLI before setup: a training batch holds batch_size * batches_per_step samples.
        self.batches_per_step = 1

        self.info = info
        self.is_toy = info.kind == "toy"
        self.toy: ToyMixture | SwissRoll | DiracMass | None = (
            make_toy(dataset, toy_std, dirac_location) if self.is_toy else None)  # type: ignore[arg-type]
        #: the Gaussian mixture of ring8/grid25 (``.centers`` (K, 2), ``.std``, ``.sample``); None otherwise.
        self.mixture: ToyMixture | None = self.toy if isinstance(self.toy, ToyMixture) else None
        self.channels = info.channels
        self.shape: tuple[int, ...] = (self.toy.dim,) if self.toy is not None else (
            info.channels, resolution, resolution)

        self._location: Any = self._locate()
        self.num_classes = len(self._location[1]) if dataset == "imagefolder" else info.num_classes
        self._tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._folders: dict[str, Dataset] = {}

    # ------------------------------------------------------------------------------------------
    # locating (existence checks only)
    # ------------------------------------------------------------------------------------------
    def _missing(self, places: list, extra: str = "") -> GanbenchError:
        idx = f"the 4 idx files ({', '.join(sources.IDX_FILES.values())}, each optionally .gz)"
        what = {
            "fashion_mnist": idx,
            "mnist": idx,
            "cifar10": "cifar-10-batches-py/",
            "celeba": "celeba/img_align_celeba/",
            "lsun": ", ".join(f"{c}_lmdb/" for c in self.lsun_classes),
        }[self.source]
        sub = {
            "fashion_mnist": " (each also in FashionMNIST/raw/, fashion-mnist/, fashion_mnist/)",
            "mnist": " (each also in MNIST/raw/, mnist/)",
        }.get(self.source, "")
        dl = extra or ("download disabled (data.download=false)" if not self.download else "")
        return GanbenchError(
            f"data.dataset={self.dataset}: {what} not found in {sources.describe_places(places)}{sub}"
            f"{'; ' + dl if dl else ''}; {_FETCH_HINT[self.source]}"
        )

    def _try_download(self) -> str:
        """Download into the cache with torchvision; returns '' on success, else the reason."""
        import torchvision.datasets as tvd

        cls = {"fashion_mnist": tvd.FashionMNIST, "mnist": tvd.MNIST, "cifar10": tvd.CIFAR10}.get(
            self.source
        )
        try:
            if cls is not None:
                for train in (True, False):
                    cls(root=str(sources.cache_dir()), train=train, download=True)
            elif self.dataset == "celeba":
                tvd.CelebA(root=str(sources.cache_dir()), split="all", target_type=[], download=True)
            else:
                return "torchvision cannot download it"
        except Exception as e:  # network errors come in many types; all of them mean "not downloaded"
            msg = " ".join(str(e).split())
            return f"download into {sources.cache_dir()} failed ({type(e).__name__}: {msg[:200]})"
        return ""

    @property
    def source(self) -> str:
        """The data set whose files are read (itself, or the one it is made from)."""
        return self.info.source or self.dataset

    def _locate(self) -> Any:
        name = self.source
        if self.is_toy or name == "digits":
            return None
        if name == "imagefolder":
            return self._locate_imagefolder()
        if name in ("imagefolder_pairs", "imagefolder_unpaired"):
            return paired.locate_folder(name, self.root)
        finder = {
            "fashion_mnist": lambda: sources.find_idx(name, self.root),
            "mnist": lambda: sources.find_idx(name, self.root),
            "cifar10": lambda: sources.find_cifar10(self.root),
            "celeba": self._find_celeba,
            "lsun": self._find_lsun,
        }[name]
        found, places = finder()
        if found is None and self.download and name != "lsun":
            reason = self._try_download()
            if not reason:
                found, places = finder()
                reason = (
                    "" if found is not None else f"download into {sources.cache_dir()} left no usable files"
                )
            if found is None:
                raise self._missing(places, reason)
        if found is None:
            raise self._missing(places, "LSUN cannot be downloaded by torchvision" if name == "lsun" else "")
        if name == "lsun":
            try:
                import lmdb  # noqa: F401
            except ImportError as e:
                raise GanbenchError(
                    "data.dataset=lsun needs the lmdb package, which is not installed; run `pip install lmdb`"
                ) from e
        return found

    def _find_celeba(self) -> tuple[Path | None, list]:
        places = sources.search_places(self.root)
        for _, base in places:
            if (base / "celeba" / "img_align_celeba").is_dir():
                return base, places
        return None, places

    def _find_lsun(self) -> tuple[Path | None, list]:
        places = sources.search_places(self.root)
        for _, base in places:
            if all((base / f"{c}_lmdb").is_dir() for c in self.lsun_classes):
                return base, places
        return None, places

    def _locate_imagefolder(self) -> tuple[Path, list[str]]:
        folder = self.root or os.environ.get("GANBENCH_DATA")
        if not folder:
            raise GanbenchError(
                "data.dataset=imagefolder needs data.root (or $GANBENCH_DATA): a folder of images"
            )
        path = Path(folder).expanduser()
        classes = sources.inspect_image_folder(path)
        if classes is None:
            kind = "does not exist" if not path.is_dir() else "holds no images"
            raise GanbenchError(
                f"data.root={folder}: the folder {kind} (data.dataset=imagefolder wants image files "
                f"{'/'.join(sources.IMG_EXTENSIONS)} directly in it or in class sub-folders)"
            )
        return path, classes

    # ------------------------------------------------------------------------------------------
    # loading
    # ------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Load (or open) the train and test splits."""
        for split in ("train", "test"):
            self._split(split)

    def _split(self, split: Split) -> tuple[torch.Tensor, torch.Tensor] | Dataset:
        if split not in ("train", "test"):
            raise GanbenchError(f"split={split!r} is unknown; valid: train, test")
        if self.info.kind == "folder":
            if split not in self._folders:
                self._folders[split] = self._open_folder(split)
            return self._folders[split]
        if split not in self._tensors:
            self._tensors[split] = self._load_tensor(split)
        return self._tensors[split]

    def _load_tensor(self, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
        name = self.source
        if self.is_toy:
            assert self.toy is not None
            n = self.n_toy_samples
            x, y = self.toy.sample(n, _seed(self.seed, _TRAIN_STREAM if split == "train" else _VAL_STREAM))
            return x.contiguous(), y
        if name in ("fashion_mnist", "mnist"):
            # the (Fashion-)MNIST idx files hold 10 classes, also under an image-to-image set built on them
            raw, y = sources.load_idx_split(self._location, split, num_classes=10)
            x = raw.unsqueeze(1).to(torch.float32) / 127.5 - 1.0
        elif name == "cifar10":
            raw, y = sources.load_cifar10_split(self._location, split)
            x = raw.to(torch.float32) / 127.5 - 1.0
        elif name == "digits":
            raw, y = sources.load_digits_split(split)
            x = raw.unsqueeze(1) / 8.0 - 1.0
        else:  # pragma: no cover - DATASETS and this branch list the same names
            raise AssertionError(name)
        x = to_resolution(
            x, self.info.native or x.shape[-1], self.resolution, mnist_like=self.info.native == 28
        )
        if self.dataset in paired.TENSOR_MAKERS:  # image-to-image sets: (B, A), see ganbench.data.paired
            return paired.TENSOR_MAKERS[self.dataset](x.contiguous(), y, mix_seed(self.seed, split == "test"))
        return x.contiguous(), y.to(torch.long)

    def _image_transform(self) -> Any:
        from torchvision import transforms as T

        c = self.channels
        return T.Compose(
            [
                T.Resize(self.resolution, antialias=True),
                T.CenterCrop(self.resolution),
                T.ToTensor(),
                T.Normalize([0.5] * c, [0.5] * c),
            ]
        )

    def _open_folder(self, split: Split) -> Dataset:
        import torchvision.datasets as tvd

        tf = self._image_transform()
        if self.info.layout != "single":
            return paired.open_folder(self.dataset, self._location, split, tf)
        if self.dataset == "imagefolder":
            folder, classes = self._location
            if classes:
                full: Dataset = _ClassFolder(
                    str(folder), transform=tf, loader=sources.load_rgb, allow_empty=True
                )
            else:
                full = sources.FlatImageFolder(folder, transform=tf)
            train_idx, test_idx = sources.holdout_split(len(full))  # type: ignore[arg-type]
            return Subset(full, (train_idx if split == "train" else test_idx).tolist())
        if self.dataset == "celeba":
            try:
                ds = tvd.CelebA(
                    root=str(self._location),
                    split="train" if split == "train" else "test",
                    target_type=[],
                    transform=tf,
                    download=False,
                )
            except Exception as e:  # torchvision raises RuntimeError for missing/corrupt files
                raise GanbenchError(
                    f"data.dataset=celeba: {self._location / 'celeba'} is incomplete or corrupt "
                    "(torchvision's CelebA checks the md5 of the list_*.txt and identity_CelebA.txt "
                    f"files): {e}"
                ) from e
            names = [str(self._location / "celeba" / "img_align_celeba" / f) for f in ds.filename]
            return _ZeroLabels(ds, names)
        # lsun
        classes = (
            self.lsun_classes
            if split == "train"
            else [c.replace("_train", "_val") for c in self.lsun_classes]
        )
        try:
            ds = tvd.LSUN(root=str(self._location), classes=classes, transform=tf)
        except Exception as e:
            raise GanbenchError(
                f"data.lsun_classes={classes}: cannot open the LSUN databases in {self._location}: {e}"
            ) from e
        return _ZeroLabels(ds, what="LSUN record")

    # ------------------------------------------------------------------------------------------
    # loaders
    # ------------------------------------------------------------------------------------------
    @property
    def train_batch_size(self) -> int:
        """Samples per training batch: ``batch_size * batches_per_step``."""
        return self.batch_size * self.batches_per_step

    def train_dataloader(self) -> TensorLoader | DataLoader:
        """Shuffled batches of ``batch_size * batches_per_step`` training samples; drops the last one."""
        data = self.training_data()
        n = len(data[0]) if isinstance(data, tuple) else len(data)  # type: ignore[arg-type]
        bs = self.train_batch_size
        if n < bs:
            raise GanbenchError(
                f"data.batch_size * batches_per_step = {bs} exceeds the {n} training samples of "
                f"data.dataset={self.dataset}"
            )
        if isinstance(data, tuple):
            loader = TensorLoader(*data, batch_size=bs, shuffle=True, drop_last=True, seed=self.seed)
            device = self.trainer.strategy.root_device if self.trainer is not None else None
            if device is not None and device.type == "cuda":
                loader.to(device)  # small data sets live on the GPU: a batch is one gather, no host copy
            return loader
        return self._folder_loader(data, bs, shuffle=True)

    def training_subset(self) -> torch.Tensor | None:
        """Indices of the training images a fit trains on (``train_samples``), None for all of them."""
        if self.train_samples is None:
            return None
        total = self.split_size("train")
        if self.train_samples > total:
            raise GanbenchError(f"data.train_samples={self.train_samples} exceeds the {total} training images of "
                                f"data.dataset={self.dataset}")
        return torch.randperm(total, generator=torch.Generator().manual_seed(0))[: self.train_samples]

    def training_data(self) -> tuple[torch.Tensor, torch.Tensor] | Dataset:
        """What the training loader serves: the training split, or its ``train_samples`` subset."""
        data = self._split("train")
        idx = self.training_subset()
        if idx is None:
            return data
        if isinstance(data, tuple):
            return data[0][idx].contiguous(), data[1][idx]
        return Subset(data, idx.tolist())

    def training_samples(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` of the samples the fit trains on (a seeded subset of :meth:`training_data`; for a toy,
        of its fixed training set): what a discriminator may have memorized, for comparing its
        outputs with held-out samples."""
        data = self.training_data()
        total = len(data[0]) if isinstance(data, tuple) else len(data)  # type: ignore[arg-type]
        if n > total:
            raise GanbenchError(f"{n} training samples requested but the fit trains on {total} "
                                f"(data.dataset={self.dataset}"
                                + (f", data.train_samples={self.train_samples})" if self.train_samples else ")"))
        pick = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
        if isinstance(data, tuple):
            return data[0][pick]
        loader = DataLoader(Subset(data, pick.tolist()), batch_size=256, num_workers=self.num_workers)
        return torch.cat([x for x, _ in loader])

    def val_dataloader(self) -> TensorLoader | DataLoader:
        """The held-out split (a second sample for toys) in batches of ``batch_size``, in a fixed order."""
        data = self._split("test")
        if isinstance(data, tuple):
            return TensorLoader(
                *data,
                batch_size=self.batch_size,
                shuffle=False,
                drop_last=False,
                seed=self.seed,
                restart_each_iter=True,
            )
        return self._folder_loader(data, self.batch_size, shuffle=False)

    def _folder_loader(self, ds: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.seed),
        )

    # ------------------------------------------------------------------------------------------
    # samples for metrics
    # ------------------------------------------------------------------------------------------
    def split_size(self, split: Split = "train") -> int:
        """How many images ``split`` holds (the most ``real_samples`` can return); loads the split."""
        data = self._split(split)
        return len(data[0]) if isinstance(data, tuple) else len(data)  # type: ignore[arg-type]

    def real_samples(self, n: int, split: Split = "train", seed: int = 0) -> torch.Tensor:
        """``n`` real samples, the same for the same ``(n, split, seed)``.

        Images (n, C, R, R) in [-1, 1]: a seeded random subset of ``split`` (without replacement).
        Toys (n, 2): a fresh draw from the true distribution (a stream distinct from the train/val sets).
        """
        if split not in ("train", "test"):
            raise GanbenchError(f"split={split!r} is unknown; valid: train, test")
        if self.is_toy:
            assert self.toy is not None
            stream = _REAL_TRAIN_STREAM if split == "train" else _REAL_TEST_STREAM
            return self.toy.sample(n, _seed(seed, stream))[0]
        data = self._split(split)
        total = self.split_size(split)
        if n > total:
            raise GanbenchError(
                f"{n} real samples requested but the {split} split of data.dataset={self.dataset} has {total}"
            )
        idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
        if isinstance(data, tuple):
            return data[0][idx]
        loader = DataLoader(Subset(data, idx.tolist()), batch_size=256, num_workers=self.num_workers)
        return torch.cat([x for x, _ in loader])

    def real_pairs(self, n: int, split: Split = "test", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` items ``(B, A)`` of an image-to-image data set (a seeded subset of ``split``), e.g. the
        fixed inputs and targets of a sample grid."""
        if self.info.layout == "single":
            raise GanbenchError(f"data.dataset={self.dataset} is not an image-to-image data set; use one of: "
                                f"{', '.join(k for k, v in DATASETS.items() if v.layout != 'single')}")
        data = self._split(split)
        total = len(data[0]) if isinstance(data, tuple) else len(data)  # type: ignore[arg-type]
        idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[: min(n, total)]
        if isinstance(data, tuple):
            return data[0][idx], data[1][idx]
        return paired.take(data, idx.tolist())
