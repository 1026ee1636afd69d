"""Image-to-image data sets: paired (Pix2Pix) and unpaired (CycleGAN) translation A → B.

**Batch layout.** Every item and batch of these data sets is ``(B, A)``: the *target* image(s) first,
where the other data sets have their images, and the *input* image(s) second, where the others have
their labels. So ``GANDataModule.real_samples`` returns images of the target domain B (what a feature
distance of G(A) compares against), and both A and B have the data module's ``shape``.

* ``fashion_edges2image`` (paired): A = the Sobel edge map of a Fashion-MNIST image (edge pixels 1 on a
  -1 background), B = the image — made the way edges2shoes was (Isola et al. 2017, §4: edges of the
  photo are the input), with Sobel instead of HED edges, computed at the training resolution.
* ``fashion_a2b`` (unpaired): A = tops {T-shirt, pullover, coat, shirt} (classes 0, 2, 4, 6),
  B = footwear {sandal, sneaker, ankle boot} (classes 5, 7, 9), disjoint class groups as in the unpaired
  domain pairs of Zhu et al. 2017 (horse ↔ zebra). The shorter domain is repeated through a seeded
  permutation up to the length of the longer one.
* ``imagefolder_pairs`` (paired, Pix2Pix layout): each file holds A and B side by side (A left, B right,
  even width), in ``root/train/`` and ``root/val/`` (or ``root/test/``), or directly in ``root``
  (then a fixed 90/10 split).
* ``imagefolder_unpaired`` (unpaired, CycleGAN layout): ``root/trainA/`` and ``root/trainB/``, and
  ``root/testA/``, ``root/testB/`` for the test split when present (else a fixed 10 % of train, or
  the one image of a domain that has only one).
  Item ``i`` is ``(B[i mod |B|], A[i mod |A|])`` for ``i < max(|A|, |B|)``; shuffling draws the pairs.

In the unpaired sets a pair is only a convenient unit of batching: no CycleGAN loss compares an A
image with the B image it was batched with.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, Subset

from ganbench import GanbenchError
from ganbench.data import sources

Layout = Literal["single", "paired", "unpaired"]

#: Fashion-MNIST class groups of ``fashion_a2b``: (domain A = tops, domain B = footwear)
FASHION_A2B_GROUPS: tuple[tuple[int, ...], tuple[int, ...]] = ((0, 2, 4, 6), (5, 7, 9))

#: Sobel gradient magnitude (of images scaled to [0, 1]) above which a pixel is an edge
SOBEL_THRESHOLD = 0.5


def sobel_edges(images: torch.Tensor, threshold: float = SOBEL_THRESHOLD) -> torch.Tensor:
    """Binary edge maps of images in [-1, 1]: 1 where the Sobel gradient magnitude of the image in
    [0, 1] (Sobel & Feldman 1968; kernels ``[[1,0,-1],[2,0,-2],[1,0,-1]]`` and its transpose, replicate
    padding, summed over channels) exceeds ``threshold``, -1 elsewhere. Same shape as ``images``."""
    kx = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
    kernels = torch.stack([kx, kx.t()])[:, None]  # (2, 1, 3, 3)
    x = (images.to(torch.float32) + 1) / 2
    n, c, h, w = x.shape
    grads = F.conv2d(F.pad(x.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate"), kernels)
    magnitude = grads.pow(2).sum(1).sqrt().reshape(n, c, h, w).sum(1, keepdim=True)
    return torch.where(magnitude > threshold, 1.0, -1.0).expand(n, c, h, w).contiguous()


def edges2image(x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, A) = (images, their Sobel edges)`` (labels unused)."""
    return x, sobel_edges(x)


def class_groups(x: torch.Tensor, y: torch.Tensor, seed: int,
                 groups: tuple[tuple[int, ...], tuple[int, ...]] = FASHION_A2B_GROUPS
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, A)`` of two disjoint class groups, the shorter repeated (seeded) to the longer's length."""
    a = x[torch.isin(y, torch.tensor(groups[0]))]
    b = x[torch.isin(y, torch.tensor(groups[1]))]
    n = max(len(a), len(b))
    gen = torch.Generator().manual_seed(seed)

    def fill(t: torch.Tensor) -> torch.Tensor:
        reps = -(-n // len(t))
        idx = torch.cat([torch.randperm(len(t), generator=gen) for _ in range(reps)])[:n] if len(t) < n else None
        return t if idx is None else t[idx]

    return fill(b).contiguous(), fill(a).contiguous()


# ------------------------------------------------------------------------------------------------
# folders
# ------------------------------------------------------------------------------------------------
def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and sources.is_image(p.name))


def _need_root(root: str | None, dataset: str, wants: str) -> Path:
    import os

    folder = root or os.environ.get("GANBENCH_DATA")
    if not folder:
        raise GanbenchError(f"data.dataset={dataset} needs data.root (or $GANBENCH_DATA): {wants}")
    return Path(folder).expanduser()


def locate_pairs(root: str | None) -> dict[str, list[Path]]:
    """The AB files of each split of an ``imagefolder_pairs`` root; checks that every width is even
    (PIL reads only the headers)."""
    wants = "a folder of side-by-side AB images (A left, B right) in train/ and val/, or directly in it"
    base = _need_root(root, "imagefolder_pairs", wants)
    train = _images_in(base / "train")
    if train:
        test = _images_in(base / "val") or _images_in(base / "test")
        if not test:
            train_idx, test_idx = sources.holdout_split(len(train))
            train, test = [train[i] for i in train_idx], [train[i] for i in test_idx]
    else:
        files = _images_in(base)
        if not files:
            kind = "does not exist" if not base.is_dir() else "holds no images"
            raise GanbenchError(f"data.root={base}: the folder {kind} (data.dataset=imagefolder_pairs wants {wants})")
        train_idx, test_idx = sources.holdout_split(len(files))
        train, test = [files[i] for i in train_idx], [files[i] for i in test_idx]
    for path in (*train, *test):
        try:
            with Image.open(path) as img:
                width = img.size[0]
        except Exception as e:
            raise GanbenchError(f"data: cannot read image {path}: {type(e).__name__}: {e}") from e
        if width % 2:
            raise GanbenchError(f"data: {path} has odd width {width}; data.dataset=imagefolder_pairs wants A and B "
                                "side by side in one image of even width (A the left half, B the right half)")
    return {"train": train, "test": test}


def locate_unpaired(root: str | None) -> dict[str, tuple[list[Path], list[Path]]]:
    """The (A files, B files) of each split of an ``imagefolder_unpaired`` root (CycleGAN layout)."""
    base = _need_root(root, "imagefolder_unpaired", "a folder with trainA/ and trainB/ (and testA/, testB/)")
    found = {}
    for split, prefix in (("train", "train"), ("test", "test")):
        found[split] = (_images_in(base / f"{prefix}A"), _images_in(base / f"{prefix}B"))
    for folder, files in ((base / "trainA", found["train"][0]), (base / "trainB", found["train"][1])):
        if not files:
            kind = "does not exist" if not folder.is_dir() else "holds no images"
            raise GanbenchError(f"data.root={base}: {folder} {kind} (data.dataset=imagefolder_unpaired wants image "
                                f"files {'/'.join(sources.IMG_EXTENSIONS)} in trainA/ and trainB/)")
    if not all(found["test"]):
        a, b = found["train"]
        (a_tr, a_te), (b_tr, b_te) = sources.holdout_split(len(a)), sources.holdout_split(len(b))
        found = {"train": ([a[i] for i in a_tr], [b[i] for i in b_tr]),  # a one-image domain: same image in both
                 "test": ([a[i] for i in a_te] or a, [b[i] for i in b_te] or b)}
    return found


class PairedFolder(Dataset):
    """Side-by-side AB images → ``(transform(B), transform(A))``, A the left half."""

    def __init__(self, files: list[Path], transform: Callable) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        ab = sources.load_rgb(str(self.files[i]))
        w, h = ab.size
        return self.transform(ab.crop((w // 2, 0, w, h))), self.transform(ab.crop((0, 0, w // 2, h)))


class UnpairedFolder(Dataset):
    """Item ``i < max(|A|, |B|)`` is ``(transform(B[i mod |B|]), transform(A[i mod |A|]))``."""

    def __init__(self, a: list[Path], b: list[Path], transform: Callable) -> None:
        self.a, self.b, self.transform = a, b, transform

    def __len__(self) -> int:
        return max(len(self.a), len(self.b)) if self.a and self.b else 0

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        b = sources.load_rgb(str(self.b[i % len(self.b)]))
        a = sources.load_rgb(str(self.a[i % len(self.a)]))
        return self.transform(b), self.transform(a)


def take(ds: Dataset, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Items ``idx`` of a ``(B, A)`` data set, stacked."""
    items = [Subset(ds, idx)[i] for i in range(len(idx))]
    return torch.stack([b for b, _ in items]), torch.stack([a for _, a in items])
