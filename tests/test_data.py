"""Tests of the data layer: readers, the search order, every data set kind, toys and TensorLoader."""

from __future__ import annotations

import gzip
import math
import pickle
import socket
import struct
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from ganbench import GanbenchError
from ganbench.data import DATASETS, GANDataModule, TensorLoader, read_idx, sources
from ganbench.data.toy import SWISSROLL_SCALE, make_toy

FASHION_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


# ------------------------------------------------------------------------------------------------
# helpers and isolation
# ------------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real cache, no $GANBENCH_DATA, no system folders, and no network for every test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("GANBENCH_DATA", raising=False)
    monkeypatch.setitem(sources.SYSTEM_DIRS, "fashion_mnist", [tmp_path / "no-system"])
    monkeypatch.setitem(sources.SYSTEM_DIRS, "mnist", [])
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """Write ``array`` in the idx format by hand (magic, big-endian sizes, big-endian data)."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
    code = codes[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_fake_mnist(folder: Path, marker: int, n_train: int = 3, n_test: int = 2, gz: bool = False) -> dict:
    """Four idx files whose images are filled with ``marker + i`` and labels ``i % 10``."""
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.stack([np.full((28, 28), marker + i, dtype=np.uint8) for i in range(n)])
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz)
        data[prefix] = (images, labels)
    return data


def png(path: Path, rgb: tuple[int, int, int], size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), rgb).save(path)


# ------------------------------------------------------------------------------------------------
# idx reader
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_returns_exact_array(tmp_path, gz):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 7
    ints = np.array([-5, 0, 70000, 2**31 - 1], dtype=np.int32)
    p1 = write_idx(tmp_path / "a-idx3-ubyte", images, gz)
    p2 = write_idx(tmp_path / "b-idx1-ubyte", ints, gz)
    got1, got2 = read_idx(p1), read_idx(p2)
    np.testing.assert_array_equal(got1, images)
    assert got1.dtype == np.uint8
    np.testing.assert_array_equal(got2, ints)


def test_read_idx_hand_written_bytes(tmp_path):
    p = tmp_path / "h-idx2-ubyte"
    p.write_bytes(bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 255]))
    np.testing.assert_array_equal(read_idx(p), np.array([[1, 2, 3], [4, 5, 255]], dtype=np.uint8))


def test_read_idx_truncated_raises_naming_file(tmp_path):
    p = write_idx(tmp_path / "t-idx3-ubyte", np.zeros((4, 5, 5), dtype=np.uint8))
    p.write_bytes(p.read_bytes()[:-7])
    with pytest.raises(GanbenchError, match="t-idx3-ubyte is truncated"):
        read_idx(p)


def test_read_idx_truncated_gz_raises_naming_file(tmp_path):
    p = write_idx(tmp_path / "t-idx3-ubyte", np.arange(600, dtype=np.int32).reshape(6, 10, 10), gz=True)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(GanbenchError, match=r"t-idx3-ubyte\.gz"):
        read_idx(p)


def test_read_idx_bad_magic(tmp_path):
    p = tmp_path / "x-idx1-ubyte"
    p.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(GanbenchError, match="x-idx1-ubyte is not an idx file"):
        read_idx(p)


@pytest.mark.skipif(
    not (FASHION_SYSTEM / "train-images-idx3-ubyte.gz").is_file(),
    reason="no Fashion-MNIST in /usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_from_debian_package(monkeypatch):
    monkeypatch.setitem(sources.SYSTEM_DIRS, "fashion_mnist", [FASHION_SYSTEM])
    dm = GANDataModule("fashion_mnist", download=False)
    assert dm._location["train_images"].parent == FASHION_SYSTEM
    assert (dm.shape, dm.channels, dm.num_classes, dm.is_toy) == ((1, 32, 32), 1, 10, False)
    dm.setup("fit")
    (xtr, ytr), (xte, yte) = dm._tensors["train"], dm._tensors["test"]
    assert (tuple(xtr.shape), tuple(xte.shape)) == ((60000, 1, 32, 32), (10000, 1, 32, 32))
    assert (xtr.dtype, ytr.dtype) == (torch.float32, torch.long)
    assert (xtr.min().item(), xtr.max().item()) == (-1.0, 1.0)
    # Fashion-MNIST is balanced: 6000 train and 1000 test images per class.
    assert torch.bincount(ytr).tolist() == [6000] * 10
    assert torch.bincount(yte).tolist() == [1000] * 10
    # the 2-px padding at 32 is the background value -1
    assert torch.all(xtr[:, :, :2, :] == -1) and torch.all(xtr[:, :, :, -2:] == -1)


# ------------------------------------------------------------------------------------------------
# search order, missing data, download
# ------------------------------------------------------------------------------------------------
def _source_of(dm: GANDataModule) -> int:
    """The marker value of the first training image (identifies which fake copy was loaded)."""
    dm.setup()
    return round((dm._tensors["train"][0][0, 0, 16, 16].item() + 1) * 127.5)


def test_search_order_root_env_cache_system(tmp_path, monkeypatch):
    root, env, system = tmp_path / "root", tmp_path / "env", tmp_path / "sys"
    cache = Path.home() / ".cache" / "ganbench"
    write_fake_mnist(root, 10)
    write_fake_mnist(env / "FashionMNIST" / "raw", 20, gz=True)
    write_fake_mnist(cache / "FashionMNIST" / "raw", 30)
    write_fake_mnist(system / "nested" / "fashion", 40, gz=True)  # a packaged layout in sub-folders
    monkeypatch.setenv("GANBENCH_DATA", str(env))
    monkeypatch.setitem(sources.SYSTEM_DIRS, "fashion_mnist", [system])

    def load(r):
        return _source_of(GANDataModule("fashion_mnist", root=r, download=False, resolution=28))

    assert load(str(root)) == 10
    assert load(None) == 20
    monkeypatch.delenv("GANBENCH_DATA")
    assert load(str(tmp_path / "empty")) == 30
    for f in (cache / "FashionMNIST" / "raw").iterdir():
        f.unlink()
    assert load(None) == 40


def test_missing_data_message_names_every_place(tmp_path, monkeypatch, isolated):
    monkeypatch.setenv("GANBENCH_DATA", str(tmp_path / "envdir"))
    with pytest.raises(GanbenchError) as err:
        GANDataModule("fashion_mnist", root=str(tmp_path / "rootdir"), download=False)
    msg = str(err.value)
    assert "\n" not in msg
    for place in (
        f"data.root={tmp_path / 'rootdir'}",
        f"$GANBENCH_DATA={tmp_path / 'envdir'}",
        str(Path.home() / ".cache" / "ganbench"),
        str(tmp_path / "no-system"),
        "FashionMNIST/raw/",
        "apt-get install dataset-fashion-mnist",
        "download disabled",
    ):
        assert place in msg
    assert isolated == []  # download=False never touched the network


def test_download_false_never_calls_torchvision(monkeypatch, isolated):
    import torchvision.datasets as tvd

    calls = []
    monkeypatch.setattr(tvd, "MNIST", lambda *a, **k: calls.append((a, k)))
    with pytest.raises(GanbenchError, match="data.dataset=mnist"):
        GANDataModule("mnist", download=False)
    assert (calls, isolated) == ([], [])


def test_download_failure_is_caught_and_reported(monkeypatch):
    import urllib.error

    import torchvision.datasets as tvd

    def fail(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(tvd, "FashionMNIST", fail)
    with pytest.raises(
        GanbenchError, match=r"download into .*ganbench failed \(URLError: <urlopen error no route"
    ):
        GANDataModule("fashion_mnist")


def test_download_is_used_when_it_succeeds(monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    def fake_download(root, train, download):
        calls.append((root, train, download))
        write_fake_mnist(Path(root) / "FashionMNIST" / "raw", 77, gz=False)

    monkeypatch.setattr(tvd, "FashionMNIST", fake_download)
    dm = GANDataModule("fashion_mnist", resolution=28)
    cache = str(Path.home() / ".cache" / "ganbench")
    assert calls == [(cache, True, True), (cache, False, True)]
    assert _source_of(dm) == 77


def test_real_network_download_failure_without_mock():
    # the autouse fixture refuses every connection: torchvision's own download must fail cleanly
    with pytest.raises(GanbenchError, match="download into .* failed"):
        GANDataModule("mnist")


# ------------------------------------------------------------------------------------------------
# MNIST-like loading and the resolution rule
# ------------------------------------------------------------------------------------------------
def test_mnist_torchvision_raw_layout_matches_torchvision(tmp_path):
    import torchvision.datasets as tvd

    data = write_fake_mnist(tmp_path / "MNIST" / "raw", 5, n_train=4, n_test=3)
    tv = tvd.MNIST(str(tmp_path), train=True, download=False)
    dm = GANDataModule("mnist", root=str(tmp_path), resolution=28, download=False)
    dm.setup()
    x, y = dm._tensors["train"]
    assert_close(x, tv.data.unsqueeze(1).float() / 127.5 - 1, rtol=0, atol=0)
    assert torch.equal(y, tv.targets)
    assert torch.equal(dm._tensors["test"][1], torch.from_numpy(data["t10k"][1].astype(np.int64)))


def test_resolution_rule_pads_then_resizes(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "mnist"
    images = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.array([1, 2, 3], dtype=np.uint8))
    scaled = torch.from_numpy(images).float().unsqueeze(1) / 127.5 - 1

    def load(r):
        dm = GANDataModule("mnist", root=str(tmp_path), resolution=r, download=False)
        dm.setup()
        return dm._tensors["train"][0]

    x28, x32, x64 = load(28), load(32), load(64)
    assert_close(x28, scaled, rtol=0, atol=0)
    expected32 = torch.full((3, 1, 32, 32), -1.0)
    expected32[:, :, 2:30, 2:30] = scaled
    assert_close(x32, expected32, rtol=0, atol=0)
    expected64 = torch.nn.functional.interpolate(expected32, size=(64, 64), mode="bilinear", antialias=True)
    assert_close(x64, expected64.clamp(-1, 1), rtol=0, atol=0)


@pytest.mark.parametrize("bad", [3, 0, 32.0, "32", True])
def test_unsupported_resolution(bad):
    with pytest.raises(
        GanbenchError, match=r"^data\.resolution=.* is unsupported; it must be an integer >= 4$"
    ):
        GANDataModule("digits", resolution=bad)


def test_unknown_dataset_lists_choices():
    with pytest.raises(GanbenchError) as err:
        GANDataModule("svhn")  # type: ignore[arg-type]
    assert str(err.value) == f"data.dataset='svhn' is unknown; valid: {', '.join(DATASETS)}"


# ------------------------------------------------------------------------------------------------
# CIFAR-10
# ------------------------------------------------------------------------------------------------
def write_fake_cifar(folder: Path, n: int = 2) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        data = ((np.arange(n * 3072).reshape(n, 3072) + 37 * k) % 256).astype(np.uint8)
        labels = [(k + i) % 10 for i in range(n)]
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data, "filenames": []}, f)
        out[name] = (data, labels)
    return out


def test_cifar10_pickle_batches(tmp_path):
    batches = write_fake_cifar(tmp_path / "cifar-10-batches-py")
    dm = GANDataModule("cifar10", root=str(tmp_path), download=False)
    assert (dm.shape, dm.channels, dm.num_classes) == ((3, 32, 32), 3, 10)
    dm.setup()
    x, y = dm._tensors["train"]
    raw = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    assert_close(x, torch.from_numpy(raw).float() / 127.5 - 1, rtol=0, atol=0)
    assert y.tolist() == sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert dm._tensors["test"][1].tolist() == batches["test_batch"][1]


def test_cifar10_corrupt_batch_names_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_fake_cifar(folder)
    (folder / "data_batch_3").write_bytes(b"\x80\x04garbage")
    dm = GANDataModule("cifar10", root=str(tmp_path), download=False)
    with pytest.raises(GanbenchError, match=r"cannot read CIFAR-10 batch .*data_batch_3"):
        dm.setup()


# ------------------------------------------------------------------------------------------------
# folders of images, CelebA, LSUN
# ------------------------------------------------------------------------------------------------
def test_imagefolder_flat(tmp_path):
    colors = [(10 * i, 255 - 10 * i, 128) for i in range(10)]
    for i, c in enumerate(colors):
        png(tmp_path / "imgs" / f"{i:02d}.png", c)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    dm = GANDataModule("imagefolder", root=str(tmp_path / "imgs"), resolution=4, batch_size=3)
    assert (dm.shape, dm.channels, dm.num_classes) == ((3, 4, 4), 3, 0)
    dm.setup()
    assert (len(dm._folders["train"]), len(dm._folders["test"])) == (9, 1)
    x = torch.stack([dm._folders["train"][i][0] for i in range(9)])
    train_ids = dm._folders["train"].indices
    expected = torch.tensor([colors[i] for i in train_ids], dtype=torch.float32) * (2 / 255) - 1
    assert_close(x.mean(dim=(2, 3)), expected, rtol=0, atol=1e-6)
    xb, yb = next(iter(dm.train_dataloader()))
    assert (tuple(xb.shape), yb.tolist()) == ((3, 3, 4, 4), [0, 0, 0])
    pick = torch.randperm(9, generator=torch.Generator().manual_seed(5))[:4]
    assert_close(dm.real_samples(4, "train", seed=5), x[pick], rtol=0, atol=0)


def test_imagefolder_class_subfolders(tmp_path):
    for cls, c in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        for i in range(5):
            png(tmp_path / cls / f"{i}.png", c)
    (tmp_path / "empty_dir").mkdir()
    dm = GANDataModule("imagefolder", root=str(tmp_path), resolution=8, batch_size=2)
    assert dm.num_classes == 2
    dm.setup()
    items = [dm._folders[s][i] for s in ("train", "test") for i in range(len(dm._folders[s]))]
    assert len(items) == 10
    for x, y in items:
        red = y == 0
        assert_close(x[0].mean().item(), 1.0 if red else -1.0, rtol=0, atol=1e-6)
        assert_close(x[2].mean().item(), -1.0 if red else 1.0, rtol=0, atol=1e-6)
    assert sorted(y for _, y in items) == [0] * 5 + [1] * 5


def test_imagefolder_without_images(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(GanbenchError, match=f"data.root={tmp_path}: the folder holds no images"):
        GANDataModule("imagefolder", root=str(tmp_path))
    with pytest.raises(GanbenchError, match="does not exist"):
        GANDataModule("imagefolder", root=str(tmp_path / "nope"))
    with pytest.raises(GanbenchError, match="needs data.root"):
        GANDataModule("imagefolder")


def test_imagefolder_unreadable_image_names_file(tmp_path):
    for i in range(3):
        png(tmp_path / f"{i}.png", (0, 0, 0))
    (tmp_path / "1.png").write_bytes(b"not a png at all")
    dm = GANDataModule("imagefolder", root=str(tmp_path), resolution=4, batch_size=1)
    dm.setup()
    with pytest.raises(GanbenchError, match=r"cannot read image .*/1\.png: UnidentifiedImageError"):
        for split in ("train", "test"):
            for i in range(len(dm._folders[split])):
                dm._folders[split][i]


def test_celeba_absent_and_corrupt(tmp_path):
    with pytest.raises(GanbenchError) as err:
        GANDataModule("celeba", root=str(tmp_path), download=False)
    assert f"celeba/img_align_celeba/ not found in data.root={tmp_path}" in str(err.value)
    png(tmp_path / "celeba" / "img_align_celeba" / "000001.jpg", (1, 2, 3))
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    dm = GANDataModule("celeba", root=str(tmp_path), download=False, resolution=64)
    assert (dm.shape, dm.num_classes) == ((3, 64, 64), 0)
    with pytest.raises(GanbenchError, match="celeba: .* is incomplete or corrupt"):
        dm.setup()


def test_lsun_absent_and_lmdb(tmp_path):
    with pytest.raises(GanbenchError, match=r"church_outdoor_train_lmdb/ not found in data.root="):
        GANDataModule("lsun", root=str(tmp_path), lsun_classes=["church_outdoor_train"])
    (tmp_path / "bedroom_train_lmdb").mkdir()
    try:
        import lmdb  # noqa: F401
    except ImportError:
        with pytest.raises(GanbenchError, match="needs the lmdb package"):
            GANDataModule("lsun", root=str(tmp_path))
    else:
        pytest.skip("lmdb is installed; the missing-package error cannot be shown")


# ------------------------------------------------------------------------------------------------
# digits
# ------------------------------------------------------------------------------------------------
def test_digits_split_and_range():
    from sklearn.datasets import load_digits

    dm = GANDataModule("digits", resolution=8)
    assert (dm.shape, dm.channels, dm.num_classes) == ((1, 8, 8), 1, 10)
    dm.setup()
    (xtr, ytr), (xte, yte) = dm._tensors["train"], dm._tensors["test"]
    assert (len(xtr), len(xte), len(xtr) + len(xte)) == (1617, 180, 1797)
    assert (min(xtr.min(), xte.min()).item(), max(xtr.max(), xte.max()).item()) == (-1.0, 1.0)
    ref = load_digits()
    all_x = torch.cat([xtr, xte]).flatten(1)
    ref_x = torch.from_numpy(ref.images.reshape(1797, 64)).float() / 8 - 1
    # the union of the splits is exactly the data set (as multisets of rows with labels)
    key = lambda x, y: sorted(tuple(r) + (int(c),) for r, c in zip(x.tolist(), y.tolist(), strict=True))
    assert key(all_x, torch.cat([ytr, yte])) == key(ref_x, torch.from_numpy(ref.target))
    dm32 = GANDataModule("digits", resolution=32)
    dm32.setup()
    assert tuple(dm32._tensors["train"][0].shape) == (1617, 1, 32, 32)


# ------------------------------------------------------------------------------------------------
# toys
# ------------------------------------------------------------------------------------------------
def test_ring8_centers_std_and_labels():
    toy = make_toy("ring8")
    angles = torch.arange(8, dtype=torch.float64) * math.pi / 4
    expected = (2 * torch.stack([torch.cos(angles), torch.sin(angles)], 1)).float()
    assert_close(toy.centers, expected, rtol=0, atol=0)
    x, mode = toy.sample(80_000, torch.Generator().manual_seed(3))
    assert torch.equal(torch.cdist(x, toy.centers).argmin(1), mode)
    for k in range(8):
        resid = x[mode == k] - toy.centers[k]
        assert_close(resid.std(0), torch.full((2,), 0.02), rtol=0.03, atol=0)
        assert_close(resid.mean(0), torch.zeros(2), rtol=0, atol=0.001)
    assert_close(
        torch.bincount(mode, minlength=8).float() / 80_000, torch.full((8,), 1 / 8), rtol=0, atol=0.01
    )


def test_grid25_centers_std_and_labels():
    toy = make_toy("grid25")
    vals = [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert toy.centers.tolist() == [[a, b] for a in vals for b in vals]
    x, mode = toy.sample(100_000, torch.Generator().manual_seed(4))
    assert torch.equal(torch.cdist(x, toy.centers).argmin(1), mode)
    for k in range(25):
        assert_close((x[mode == k] - toy.centers[k]).std(0), torch.full((2,), 0.05), rtol=0.05, atol=0)


def test_toy_std_override_and_swissroll_curve():
    assert make_toy("ring8", 0.5).std == 0.5
    roll = make_toy("swissroll", 0.0)
    x, y = roll.sample(1000, torch.Generator().manual_seed(0))
    t = x.double().norm(dim=1) * SWISSROLL_SCALE  # radius = t / 7.5 on the noiseless roll
    on_curve = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / SWISSROLL_SCALE
    assert_close(x.double(), on_curve, rtol=0, atol=1e-5)
    assert (t.min().item() >= 1.5 * math.pi - 1e-4, t.max().item() <= 4.5 * math.pi + 1e-4) == (True, True)
    assert torch.equal(y, torch.zeros(1000, dtype=torch.long))
    assert make_toy("swissroll").std == pytest.approx(0.25 / 7.5, abs=0)


@pytest.mark.parametrize(("name", "modes"), [("ring8", 8), ("grid25", 25), ("swissroll", 0)])
def test_toy_datamodule(name, modes):
    dm = GANDataModule(name, n_toy_samples=1000, batch_size=100, toy_std=0.01)
    assert (dm.shape, dm.channels, dm.num_classes, dm.is_toy) == ((2,), 0, modes, True)
    assert (dm.mixture is None) == (name == "swissroll")
    dm.setup()
    (xtr, ytr), (xva, _) = dm._tensors["train"], dm._tensors["test"]
    assert (tuple(xtr.shape), tuple(xva.shape), xtr.dtype, ytr.dtype) == (
        (1000, 2),
        (1000, 2),
        torch.float32,
        torch.long,
    )
    assert not torch.equal(xtr, xva)
    if dm.mixture is not None:
        assert torch.equal(torch.cdist(xtr, dm.mixture.centers).argmin(1), ytr)
        assert dm.mixture.std == 0.01
    r1, r2, r3 = dm.real_samples(500, seed=1), dm.real_samples(500, seed=1), dm.real_samples(500, seed=2)
    assert (torch.equal(r1, r2), torch.equal(r1, r3), tuple(r1.shape)) == (True, False, (500, 2))
    assert not torch.equal(dm.real_samples(500, "test", seed=1), r1)


# ------------------------------------------------------------------------------------------------
# TensorLoader
# ------------------------------------------------------------------------------------------------
def test_tensorloader_epoch_covers_every_index_once():
    data = torch.arange(100)
    loader = TensorLoader(data, batch_size=10, seed=5)
    assert len(loader) == 10
    epoch0 = torch.cat([b for (b,) in loader])
    assert torch.equal(epoch0.sort().values, data)
    assert not torch.equal(epoch0, data)  # shuffled
    epoch1 = torch.cat([b for (b,) in loader])  # next epoch: another permutation
    assert torch.equal(epoch1.sort().values, data) and not torch.equal(epoch1, epoch0)
    loader.set_epoch(0)
    assert torch.equal(torch.cat([b for (b,) in loader]), epoch0)  # seeded by (seed, epoch)
    other_seed = torch.cat([b for (b,) in TensorLoader(data, batch_size=10, seed=6)])
    assert not torch.equal(other_seed, epoch0)


def test_tensorloader_drop_last_and_no_shuffle():
    loader = TensorLoader(torch.arange(25), batch_size=4)
    assert (len(loader), [len(b) for (b,) in loader]) == (6, [4] * 6)
    loader = TensorLoader(torch.arange(25), batch_size=4, shuffle=False, drop_last=False)
    assert torch.equal(torch.cat([b for (b,) in loader]), torch.arange(25))
    assert len(loader) == 7


def test_tensorloader_ranks_get_disjoint_shards():
    data = torch.arange(103)
    shards = [
        torch.cat([b for (b,) in TensorLoader(data, batch_size=5, seed=1, rank=r, world_size=2)])
        for r in (0, 1)
    ]
    assert (len(shards[0]), len(shards[1])) == (50, 50)  # 103 // 2 = 51 each, 10 full batches of 5
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
    full = [TensorLoader(data, batch_size=1, seed=1, rank=r, world_size=3) for r in range(3)]
    idx = [ld.indices() for ld in full]
    assert [len(i) for i in idx] == [34, 34, 34]
    assert (
        sorted(torch.cat(idx).tolist()) == sorted(set(torch.cat(idx).tolist()))
        and len(set(torch.cat(idx).tolist())) == 102
    )
    # without drop_last the shards are padded (wrap-around) to cover every index
    pad = [
        TensorLoader(data, batch_size=1, shuffle=False, drop_last=False, rank=r, world_size=3).indices()
        for r in range(3)
    ]
    assert sorted(set(torch.cat(pad).tolist())) == list(range(103))


def test_tensorloader_resume_mid_epoch():
    x, y = torch.randn(64, 2), torch.arange(64)
    ref = TensorLoader(x, y, batch_size=8, seed=9)
    first = list(ref)  # epoch 0
    expected = list(ref)  # epoch 1, uninterrupted
    run = TensorLoader(x, y, batch_size=8, seed=9)
    assert len(list(run)) == len(first)
    it = iter(run)
    consumed = [next(it) for _ in range(3)]
    state = run.state_dict()
    assert state == {"epoch": 1, "position": 3, "seed": 9}
    resumed = TensorLoader(x, y, batch_size=8, seed=9)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # what Lightning calls at the (re)start of the epoch: a no-op inside it
    rest = list(resumed)
    assert len(consumed) + len(rest) == len(expected)
    for got, exp in zip(consumed + rest, expected, strict=True):
        assert torch.equal(got[0], exp[0]) and torch.equal(got[1], exp[1])
    assert resumed.state_dict() == {"epoch": 2, "position": 0, "seed": 9}


class _Recorder(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch[0].clone())
        return (self.w * batch[0].sum()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.parametrize("how", ["after_stop", "callback"])
def test_lightning_checkpoint_resumes_loader_mid_epoch(tmp_path, how):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def trainer(steps, callbacks=()):
        return L.Trainer(
            max_steps=steps,
            logger=False,
            callbacks=list(callbacks),
            enable_checkpointing=bool(callbacks),
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            accelerator="cpu",
        )

    def dm():
        return GANDataModule("ring8", n_toy_samples=40, batch_size=10, seed=3)

    full = _Recorder()
    trainer(7).fit(full, datamodule=dm())  # 4 batches per epoch: crosses an epoch boundary
    part = _Recorder()
    if how == "after_stop":  # the run stopped by max_steps mid-epoch, then saved
        t = trainer(3)
        t.fit(part, datamodule=dm())
        t.save_checkpoint(tmp_path / "mid.ckpt")
    else:  # saved by a callback after step 3 of a run that went on (its later batches are discarded)
        ckpt = ModelCheckpoint(dirpath=tmp_path, filename="mid", every_n_train_steps=3, save_top_k=1)
        trainer(4, [ckpt]).fit(part, datamodule=dm())
        part.seen = part.seen[:3]
    rest = _Recorder()
    trainer(7).fit(rest, datamodule=dm(), ckpt_path=tmp_path / "mid.ckpt")
    assert len(full.seen) == 7 and len(part.seen) + len(rest.seen) == 7
    for a, b in zip(full.seen, part.seen + rest.seen, strict=True):
        assert torch.equal(a, b)


def test_train_batch_is_batch_size_times_batches_per_step():
    dm = GANDataModule("grid25", n_toy_samples=600, batch_size=16)
    dm.batches_per_step = 5
    dm.setup()
    loader = dm.train_dataloader()
    x, y = next(iter(loader))
    assert (tuple(x.shape), tuple(y.shape), len(loader)) == ((80, 2), (80,), 7)
    val = dm.val_dataloader()
    xv, _ = next(iter(val))  # a pass stopped after one batch...
    assert tuple(xv.shape) == (16, 2)
    # ...and the next pass starts from the first batch again and covers the held-out sample in order
    assert torch.equal(torch.cat([b for b, _ in val]), dm._tensors["test"][0])
    assert len(val) == 38  # ceil(600 / 16): the last batch is kept
    dm.batches_per_step = 50
    with pytest.raises(GanbenchError, match="data.batch_size \\* batches_per_step = 800 exceeds the 600"):
        dm.train_dataloader()


def test_tensorloader_to_device_keeps_batches():
    loader = TensorLoader(torch.arange(12.0), batch_size=4, seed=0).to("cpu")
    assert torch.equal(torch.cat([b for (b,) in loader]).sort().values, torch.arange(12.0))


def test_real_samples_images_deterministic_and_bounded():
    dm = GANDataModule("digits", resolution=8)
    a, b, c = (
        dm.real_samples(50, "test", seed=0),
        dm.real_samples(50, "test", seed=0),
        dm.real_samples(50, "test", 1),
    )
    assert (torch.equal(a, b), torch.equal(a, c), tuple(a.shape)) == (True, False, (50, 1, 8, 8))
    with pytest.raises(
        GanbenchError, match="181 real samples requested but the test split of data.dataset=digits has 180"
    ):
        dm.real_samples(181, "test")


_DDP_SCRIPT = """
import importlib.util, sys, torch, torch.distributed as dist
# load loader.py alone: it needs only torch and numpy (the package would import lightning, slow to start)
spec = importlib.util.spec_from_file_location("loader", sys.argv[4])
loader_mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(loader_mod)
TensorLoader = loader_mod.TensorLoader
rank, init_file, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=2)
loader = TensorLoader(torch.arange(41), batch_size=4, seed=7)  # rank and world size from torch.distributed
seen = torch.cat([b for (b,) in loader])
torch.save({"rank": loader.rank, "world": loader.world_size, "len": len(loader), "seen": seen}, out)
dist.destroy_process_group()
"""


def test_tensorloader_shards_under_real_torch_distributed(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    root = Path(__file__).resolve().parents[1]
    loader_py = str(root / "ganbench" / "data" / "loader.py")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(r),
                str(tmp_path / "init"),
                str(tmp_path / f"{r}.pt"),
                loader_py,
            ],
            cwd=root,
        )
        for r in (0, 1)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    assert [(r["rank"], r["world"], r["len"]) for r in (r0, r1)] == [(0, 2, 5), (1, 2, 5)]
    assert set(r0["seen"].tolist()).isdisjoint(r1["seen"].tolist())
    for r in (r0, r1):  # identical to the shards given explicitly
        explicit = TensorLoader(torch.arange(41), batch_size=4, seed=7, rank=r["rank"], world_size=2)
        assert torch.equal(r["seen"], torch.cat([b for (b,) in explicit]))
