"""The data module is driven by ``DATASETS``: a data set added as one table entry is located, read, framed,
labelled, paired and scored through its entry alone, and no module keeps its own map of data set names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

import ganbench
from ganbench import GanbenchError
from ganbench.data import DATASETS, DatasetInfo, GANDataModule
from ganbench.data.toy import ToyMixture, make_toy

N_TRAIN, N_TEST = 24, 6


def tiny_images(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct 1x8x8 images in [-1, 1] (image i is filled with one value) and labels i mod 3."""
    n, start = (N_TRAIN, 0) if split == "train" else (N_TEST, N_TRAIN)
    values = torch.linspace(-1, 1, N_TRAIN + N_TEST)[start : start + n]
    return values.view(n, 1, 1, 1).expand(n, 1, 8, 8).contiguous(), torch.arange(n) % 3


class TinyFolder(Dataset):
    def __init__(self, images: list[torch.Tensor]) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], 0


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """Four new entries: a tensor set (with a feature net), an image-to-image set made from it, a
    folder set and a toy; ``calls`` records what the table's functions were given."""
    calls: list = []

    def locate(req):
        calls.append(("locate", req.dataset, req.root, req.download))
        return {"where": req.root}

    def read(location, split):
        calls.append(("read", location, split))
        return tiny_images(split)

    def open_folder(location, split, transform, req):
        calls.append(("open", split, req.dataset))
        return TinyFolder(location[:5] if split == "train" else location[5:])

    entries = {
        "tiny8": DatasetInfo("tensor", 1, 3, 8, features="digits", locate=locate, read=read),
        "tiny8_pairs": DatasetInfo("tensor", 1, 0, 8, source="tiny8", layout="paired",
                                   make=lambda x, y, seed: (x, -x)),
        "tinyfolder": DatasetInfo("folder", 3, lambda location: len(location) - 4,
                                  locate=lambda req: [torch.full((3, 4, 4), i / 8) for i in range(7)],
                                  open=open_folder),
        "line3": DatasetInfo("toy", 0, 3, uses_location=True,
                             toy=lambda std, location: ToyMixture(
                                 torch.tensor([[location, 0.0], [1.0, 0.0], [2.0, 0.0]]), 0.1 if std is None else std)),
    }
    for name, info in entries.items():
        monkeypatch.setitem(DATASETS, name, info)
    return calls


def test_tensor_entry_is_located_read_and_framed_through_the_table(tiny, tmp_path):
    dm = GANDataModule("tiny8", root=str(tmp_path), resolution=8, batch_size=4, download=False)
    assert tiny == [("locate", "tiny8", str(tmp_path), False)]
    assert (dm.shape, dm.channels, dm.num_classes, dm.is_toy, dm.mixture) == ((1, 8, 8), 1, 3, False, None)
    assert (dm.split_size("train"), dm.split_size("test")) == (N_TRAIN, N_TEST)
    assert tiny[1:] == [("read", {"where": str(tmp_path)}, "train"), ("read", {"where": str(tmp_path)}, "test")]
    x_test, _ = tiny_images("test")
    pick = torch.randperm(N_TEST, generator=torch.Generator().manual_seed(0))
    assert torch.equal(dm.real_samples(N_TEST, "test", seed=0), x_test[pick])
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 1, 8, 8) and y.dtype == torch.long
    assert set(y.tolist()) <= {0, 1, 2}
    # at another side the rule of to_resolution applies (native 8: a resize, no MNIST frame)
    dm16 = GANDataModule("tiny8", resolution=16, batch_size=4)
    assert dm16.shape == (1, 16, 16)
    assert dm16.real_samples(1, "test", seed=0).shape == (1, 1, 16, 16)
    assert torch.equal(dm16.real_samples(N_TEST, "test")[:, :, 5, 7], x_test[pick][:, :, 0, 0])  # constant images


def test_image_to_image_entry_reads_its_source_and_makes_its_pairs(tiny):
    dm = GANDataModule("tiny8_pairs", resolution=8, batch_size=2)
    b, a = dm.real_pairs(3, "test")
    assert tiny == [("locate", "tiny8_pairs", None, True), ("read", {"where": None}, "test")]  # tiny8's, via source
    assert torch.equal(a, -b) and b.shape == (3, 1, 8, 8)
    with pytest.raises(GanbenchError, match=r"^data.dataset=tiny8 is not an image-to-image data set; use one of: "
                                            r"fashion_edges2image, .*tiny8_pairs$"):
        GANDataModule("tiny8").real_pairs(1)


def test_folder_entry_counts_classes_from_its_files_and_opens_per_item(tiny):
    dm = GANDataModule("tinyfolder", resolution=4, batch_size=2)
    assert (dm.num_classes, dm.shape) == (3, (3, 4, 4))
    assert (dm.split_size("train"), dm.split_size("test")) == (5, 2)
    assert tiny == [("open", "train", "tinyfolder"), ("open", "test", "tinyfolder")]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 4, 4) and y.tolist() == [0, 0]


def test_toy_entry_builds_its_distribution_and_takes_the_location(tiny):
    dm = GANDataModule("line3", n_toy_samples=30, batch_size=10, dirac_location=0.5, toy_std=0.0)
    assert dm.is_toy and dm.shape == (2,) and dm.num_classes == 3
    assert dm.mixture is not None and dm.mixture.centers.tolist() == [[0.5, 0.0], [1.0, 0.0], [2.0, 0.0]]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (10, 2) and torch.equal(x, dm.mixture.centers[y])  # std 0: every point on its mode
    assert make_toy("line3").std == 0.1
    with pytest.raises(GanbenchError, match=r"^data.dirac_location=0.5 places the dirac, line3 data set's point "
                                            r"mass; data.dataset=ring8 does not use it$"):
        GANDataModule("ring8", dirac_location=0.5)


def test_an_entry_without_what_its_kind_needs_is_refused():
    with pytest.raises(ValueError, match="^a tensor data set needs read, or a source that has them$"):
        DatasetInfo("tensor", 1, 10, 28)
    with pytest.raises(ValueError, match="^a folder data set needs locate and open, or a source that has them$"):
        DatasetInfo("folder", 3, 0, locate=lambda req: None)


def test_the_feature_net_of_a_data_set_is_its_entry():
    from ganbench.commands import train_features
    from ganbench.metrics.features import DOMAIN_NETS, FEATURE_NETS

    assert {k: v.features for k, v in DATASETS.items() if v.features} == {"fashion_mnist": "fmnist", "digits": "digits"}
    assert DOMAIN_NETS == {"fmnist": {"dataset": "fashion_mnist", "resolution": 28, "channels": 1},
                           "digits": {"dataset": "digits", "resolution": 8, "channels": 1}}
    assert FEATURE_NETS == ("inception", "fmnist", "digits")
    assert train_features.DATASETS == {"fashion_mnist": "fmnist", "digits": "digits"}


#: a data set name compared with a literal or used as a key of a literal map: ``dataset == "x"``,
#: ``name in ("a", "b")``, ``{"x": ...}.get(dm.dataset)``, ``{...}[self.source]``
NAME_BRANCH = re.compile(r"\b(dataset|source|name)\s*(==|!=|\bin\b)\s*[\"'(\[{]"
                         r"|\}(\.get)?[\[(]\s*(self\.|dm\.)?(dataset|source)\b")
_NAMES = "|".join(map(re.escape, DATASETS))
#: a copy of the data set -> feature net map: ``"digits": "digits"``, ``"dataset": "fashion_mnist"``
FEATURE_MAP = re.compile(rf"[\"']({_NAMES})[\"']\s*:\s*[\"'](inception|none|fmnist|digits)[\"']"
                         rf"|[\"']dataset[\"']\s*:\s*[\"']({_NAMES})[\"']")


def test_no_name_branch_in_the_data_module_and_one_feature_map():
    root = Path(ganbench.__file__).parent
    assert NAME_BRANCH.search('        if dirac_location and dataset != "dirac":')  # the patterns find
    assert NAME_BRANCH.search('        cls = {"mnist": tvd.MNIST}.get(self.source)')  # what they were
    assert FEATURE_MAP.search('DEFAULT_FEATURES = {"fashion_mnist": "fmnist", "digits": "digits"}')  # written for
    found = [f"data/datamodule.py:{i}: {line.strip()}"
             for i, line in enumerate((root / "data" / "datamodule.py").read_text().splitlines(), 1)
             if NAME_BRANCH.search(line)]
    for path in sorted(root.rglob("*.py")):
        if path != root / "data" / "catalog.py":
            found += [f"{path.relative_to(root)}:{i}: {line.strip()}"
                      for i, line in enumerate(path.read_text().splitlines(), 1) if FEATURE_MAP.search(line)]
    assert found == []
