"""``GANDataModule``: every data set ganbench trains on, behind one Lightning data module."""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from ganbench import GanbenchError
from ganbench.data import paired
from ganbench.data.catalog import DATASETS, Request, names
from ganbench.data.loader import TensorLoader, mix_seed
from ganbench.data.toy import Toy, ToyMixture

DatasetName = Literal[tuple(DATASETS)]  # type: ignore[valid-type]  # the table's names, checked by the CLI
Split = Literal["train", "test"]

#: Streams of the toy generators: distinct samples for the train set, the val set and real_samples.
_TRAIN_STREAM, _VAL_STREAM, _REAL_TRAIN_STREAM, _REAL_TEST_STREAM = 0, 1, 2, 3


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
            raise GanbenchError(f"data.dataset={dataset!r} is unknown; valid: {names()}")
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
        if dirac_location and not info.uses_location:
            raise GanbenchError(f"data.dirac_location={dirac_location} places the "
                                f"{names(lambda i: i.uses_location)} data set's point mass; "
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
        self.toy: Toy | None = info.toy(toy_std, dirac_location) if info.toy and self.is_toy else None
        #: the Gaussian mixture of ring8/grid25 (``.centers`` (K, 2), ``.std``, ``.sample``); None otherwise.
        self.mixture: ToyMixture | None = self.toy if isinstance(self.toy, ToyMixture) else None
        self.channels = info.channels
        self.shape: tuple[int, ...] = (self.toy.dim,) if self.toy is not None else (
            info.channels, resolution, resolution)

        #: the entry whose files are read: this data set's, or that of the one it is made from
        self.files = DATASETS[self.source]
        self._request = Request(dataset, root, download, self.lsun_classes)
        self._location: Any = self.files.locate(self._request) if self.files.locate is not None else None
        self.num_classes = info.num_classes(self._location) if callable(info.num_classes) else info.num_classes
        self._tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._folders: dict[str, Dataset] = {}

    @property
    def source(self) -> str:
        """The data set whose files are read (itself, or the one it is made from)."""
        return self.info.source or self.dataset

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
        if self.is_toy:
            assert self.toy is not None
            n = self.n_toy_samples
            x, y = self.toy.sample(n, _seed(self.seed, _TRAIN_STREAM if split == "train" else _VAL_STREAM))
            return x.contiguous(), y
        x, y = self.files.read(self._location, split)  # type: ignore[misc]
        x = to_resolution(
            x, self.info.native or x.shape[-1], self.resolution, mnist_like=self.info.native == 28
        )
        if self.info.make is not None:  # image-to-image sets: (B, A), see ganbench.data.paired
            return self.info.make(x.contiguous(), y, mix_seed(self.seed, split == "test"))
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
        return self.files.open(self._location, split, self._image_transform(), self._request)  # type: ignore[misc]

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
                                f"{names(lambda i: i.layout != 'single')}")
        data = self._split(split)
        total = len(data[0]) if isinstance(data, tuple) else len(data)  # type: ignore[arg-type]
        idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[: min(n, total)]
        if isinstance(data, tuple):
            return data[0][idx], data[1][idx]
        return paired.take(data, idx.tolist())
