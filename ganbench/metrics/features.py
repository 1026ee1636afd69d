"""Feature networks for image metrics: TF-ported Inception-v3 and small per-dataset classifiers.

Every network is a torch-fidelity ``FeatureExtractorBase`` (uint8 RGB input, a tuple of named
feature layers out) built through torch-fidelity's registry, so the same object serves the
after-training ``ganbench evaluate`` and the in-training callbacks (which feed its features to
torchmetrics). Generated and real images alike enter as floats in [-1, 1] and are quantised to
uint8 exactly as a saved PNG would be (``to_uint8_rgb``).

``inception``: torch-fidelity's ``FeatureExtractorInceptionV3`` (Szegedy et al. 2016, weights
ported from the TF graph used by Heusel et al. 2017): pool3 (2048-d) for FID/KID/PR, unbiased
logits for IS (Salimans et al. 2016).

``fmnist`` / ``digits``: ``DomainCNN`` classifiers trained by ``ganbench train-features``; their
penultimate layer (128-d) feeds FD/KID/PR and their 10 logits feed IS. Numbers from them are keyed
``fd_<net>``/``is_<net>``/``kid_<net>``, never ``fid``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor
from torch_fidelity.utils import create_feature_extractor

from ganbench import GanbenchError
from ganbench.data.catalog import DATASETS

DOMAIN_NETS: dict[str, dict] = {
    # name -> the data set it is trained on and scores (its entry's ``features``), its native input
    # resolution and channels (that data set's)
    info.features: {"dataset": name, "resolution": info.native, "channels": info.channels}
    for name, info in DATASETS.items() if info.features is not None
}
FEATURE_NETS = ("inception", *DOMAIN_NETS)
"""Valid values of ``--features`` / ``ImageMetrics(features=...)``."""
FIDELITY_NAMES = {
    "inception": "inception-v3-compat",
    "fmnist": "ganbench-fmnist",
    "digits": "ganbench-digits",
}
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
"""SHA-256 of torch-fidelity's published TF-ported Inception-v3 weights (``URL_INCEPTION_V3``, whose
file name carries its first 8 hex digits, as torch.hub's ``check_hash`` expects)."""


def cache_root() -> Path:
    """``$GANBENCH_CACHE`` if set, else ``~/.cache/ganbench``."""
    return Path(os.environ.get("GANBENCH_CACHE") or Path.home() / ".cache" / "ganbench")


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def to_uint8_rgb(x: Tensor) -> Tensor:
    """Quantise images in [-1, 1] to uint8 [0, 255] (as saving a PNG does); grey becomes 3 channels."""
    if x.dim() != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
    q = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if q.shape[1] == 1:
        q = q.expand(-1, 3, -1, -1)
    return q.contiguous()


class DomainCNN(nn.Module):
    """Small classifier whose penultimate layer is the feature space for ``fd_<net>`` metrics.

    Two conv blocks (3x3 conv-BN-ReLU twice, 2x2 max-pool) then a 128-unit fully connected layer
    (the features, after ReLU) and a linear classifier (the logits for IS).
    """

    def __init__(
        self, in_channels: int = 1, resolution: int = 28, num_classes: int = 10, feature_dim: int = 128
    ) -> None:
        super().__init__()
        self.config = {
            "in_channels": in_channels,
            "resolution": resolution,
            "num_classes": num_classes,
            "feature_dim": feature_dim,
        }

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        self.body = nn.Sequential(
            *block(in_channels, 32),
            *block(32, 32),
            nn.MaxPool2d(2),
            *block(32, 64),
            *block(64, 64),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        side = resolution // 4
        self.fc = nn.Sequential(nn.Dropout(0.3), nn.Linear(64 * side * side, feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features of images in [-1, 1] at the native resolution."""
        return self.fc(self.body(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class DomainFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity wrapper of a trained ``DomainCNN``: uint8 RGB in, ('features', 'logits') out.

    Input is converted to grey (mean of the RGB channels, which inverts ``to_uint8_rgb``'s channel
    copy) and mapped to [-1, 1]. At a resolution other than the net's native one R, it undoes the
    data module's framing (``ganbench.data.to_resolution``): resize (antialiased bilinear) to
    R + 2 * FRAME_PAD, then crop FRAME_PAD pixels per side (MNIST-like 28 px data are framed by
    2 px of background to 32 px; digits are resized without a frame).
    """

    NET = ""
    FRAME_PAD = 0

    def __init__(
        self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None, **kwargs
    ) -> None:
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise GanbenchError(f"feature net '{self.NET}' needs a weights file (feature_extractor_weights_path)")
        ckpt = torch.load(feature_extractor_weights_path, map_location="cpu", weights_only=True)
        self.net = DomainCNN(**ckpt["config"])
        self.net.load_state_dict(ckpt["state_dict"])
        self.resolution = int(ckpt["config"]["resolution"])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> DomainFeatureExtractor:
        return super().train(False)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("features", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return "logits" if metric == "isc" else "features"

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> Tensor:
        return torch.zeros(1, 3, 28, 28, dtype=torch.uint8)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected uint8 images (N, 3, H, W), got {x.dtype} {tuple(x.shape)}")
        g = x.float().mean(dim=1, keepdim=True) / 127.5 - 1.0
        r, pad = self.resolution, self.FRAME_PAD
        if g.shape[-1] != r or g.shape[-2] != r:
            framed = r + 2 * pad
            if g.shape[-1] != framed or g.shape[-2] != framed:
                g = F.interpolate(g, size=(framed, framed), mode="bilinear", align_corners=False, antialias=True)
            g = g[..., pad : pad + r, pad : pad + r]
        feats = self.net.features(g)
        out = {"features": feats, "logits": self.net.head(feats)}
        return tuple(out[name] for name in self.features_list)


class FeatureExtractorFMNIST(DomainFeatureExtractor):
    NET = "fmnist"
    FRAME_PAD = 2


class FeatureExtractorDigits(DomainFeatureExtractor):
    NET = "digits"


for _name, _cls in (("ganbench-fmnist", FeatureExtractorFMNIST), ("ganbench-digits", FeatureExtractorDigits)):
    if _name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(_name, _cls)


@dataclass
class FeatureNet:
    """A loaded feature network and the facts that make up its part of a metric protocol."""

    name: str
    extractor: FeatureExtractorBase
    feature_layer: str
    logits_layer: str
    weights_path: str
    sha256: str

    @property
    def verified(self) -> bool:
        """Inception weights are torch-fidelity's published file (domain nets: always true)."""
        return self.name != "inception" or self.sha256 == INCEPTION_SHA256

    @property
    def label(self) -> str:
        """The net's name in metric keys: ``inception-unverified`` for any other Inception weights."""
        return self.name if self.verified else "inception-unverified"

    @property
    def num_features(self) -> int:
        return 2048 if self.name == "inception" else int(self.extractor.net.config["feature_dim"])

    @property
    def protocol(self) -> dict:
        out = {
            "feature_net": self.name,
            "feature_layer": self.feature_layer,
            "feature_sha256": self.sha256,
            "fidelity_extractor": FIDELITY_NAMES[self.name],
        }
        if self.name == "inception":
            out["inception_weights"] = (
                "torch-fidelity's published file " + URL_INCEPTION_V3 if self.verified else
                f"unverified: sha256 {self.sha256} is not that of torch-fidelity's published file "
                f"{URL_INCEPTION_V3} ({INCEPTION_SHA256}), so FD is not called FID")
        return out

    def to(self, device: torch.device | str) -> FeatureNet:
        self.extractor.to(device)
        return self

    @torch.no_grad()
    def extract(self, images: Tensor) -> dict[str, Tensor]:
        """Features and logits (float32, on the extractor's device) of images in [-1, 1]."""
        device = next(self.extractor.parameters()).device
        out = self.extractor(to_uint8_rgb(images).to(device))
        d = self.extractor.convert_features_tuple_to_dict(out)
        return {"features": d[self.feature_layer].float(), "logits": d[self.logits_layer].float()}


def inception_weights_path(path: str | Path | None = None) -> Path:
    """Locate (or download through torch-fidelity's URL) the TF-ported Inception-v3 weights.

    Order: ``path``, ``$GANBENCH_INCEPTION_WEIGHTS``, torch hub's cache, a download. Raises
    ``GanbenchError`` with one line when none works.
    """
    path = path or os.environ.get("GANBENCH_INCEPTION_WEIGHTS")
    if path:
        if not Path(path).is_file():
            raise GanbenchError(
                f"inception weights file not found: {path} (--inception-weights / GANBENCH_INCEPTION_WEIGHTS)"
            )
        return Path(path)
    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / URL_INCEPTION_V3.rsplit("/", 1)[1]
    if not hub_file.is_file():
        try:
            torch.hub.load_state_dict_from_url(URL_INCEPTION_V3, progress=False, map_location="cpu")
        except Exception:
            hub_file.unlink(missing_ok=True)
        if not hub_file.is_file():
            raise GanbenchError(
                "Inception-v3 weights unavailable: the download from " + URL_INCEPTION_V3 + " failed; fetch that "
                "file elsewhere and pass --inception-weights PATH or set GANBENCH_INCEPTION_WEIGHTS=PATH"
            )
    return hub_file


def find_domain_weights(name: str, path: str | Path | None = None) -> Path:
    """Weights of a domain feature net: ``path`` or the newest ``<cache>/features/<name>-*.pt``."""
    if path:
        if not Path(path).is_file():
            raise GanbenchError(f"feature weights file not found: {path} (--feature-weights)")
        return Path(path)
    found = sorted((cache_root() / "features").glob(f"{name}-*.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        data = DOMAIN_NETS[name]["dataset"]
        raise GanbenchError(
            f"no weights for feature net '{name}' in {cache_root() / 'features'}: run "
            f"`ganbench train-features --data {data}` or pass --feature-weights PATH"
        )
    return found[-1]


SHIPPED_WEIGHTS: dict[str, str] = {
    # name -> SHA-256 of the weights file shipped in ganbench/assets/<name>-<sha256[:12]>.pt: the standard
    # net of `ganbench train-features --data <dataset>` (default epochs, seed 0), trained once and
    # shipped so that a first run needs no training (docs/metrics.md, "Feature nets")
    "fmnist": "fc82f8b7765c7afc106847cf2c3275ee60bc4eccb924596d9131611438a98984",
}


def shipped_weights(name: str) -> Path:
    """The shipped weights file of domain net ``name``, its SHA-256 checked (``GanbenchError`` if it is
    missing or altered)."""
    digest = SHIPPED_WEIGHTS.get(name)
    if digest is None:
        raise GanbenchError(f"no shipped weights for feature net '{name}' (shipped: {', '.join(SHIPPED_WEIGHTS)})")
    path = Path(__file__).resolve().parent.parent / "assets" / f"{name}-{digest[:12]}.pt"
    if not path.is_file():
        raise GanbenchError(f"shipped feature weights missing: {path} (reinstall ganbench, or run "
                            f"`ganbench train-features --data {DOMAIN_NETS[name]['dataset']}`)")
    found = sha256_file(path)
    if found != digest:
        raise GanbenchError(f"shipped feature weights {path} have SHA-256 {found}, not {digest}: the file is "
                            "altered; reinstall ganbench")
    return path


def install_shipped_weights(name: str) -> Path:
    """Copy the checked shipped weights of ``name`` into ``<cache>/features`` (atomically), where
    :func:`find_domain_weights` finds them; returns the cached path."""
    source = shipped_weights(name)
    target = cache_root() / "features" / source.name
    if target.is_file() and sha256_file(target) == SHIPPED_WEIGHTS[name]:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)
    return target


def load_feature_net(name: str, weights: str | Path | None = None, device: torch.device | str = "cpu") -> FeatureNet:
    """Build feature net ``name`` (one of ``FEATURE_NETS``) through torch-fidelity's registry."""
    if name not in FEATURE_NETS:
        raise GanbenchError(f"unknown features '{name}'; valid choices: {', '.join(FEATURE_NETS)}")
    if name == "inception":
        path = inception_weights_path(weights)
        layers = ["2048", "logits_unbiased"]
    else:
        path = find_domain_weights(name, weights)
        layers = ["features", "logits"]
    try:
        extractor = create_feature_extractor(
            FIDELITY_NAMES[name], layers, cuda=False, feature_extractor_weights_path=str(path), verbose=False
        )
    except (RuntimeError, KeyError, OSError) as exc:
        raise GanbenchError(
            f"could not load weights for feature net '{name}' from {path}: {str(exc).splitlines()[0]}"
        ) from None
    return FeatureNet(name, extractor.to(device), layers[0], layers[1], str(path), sha256_file(path))


# ----------------------------------------------------------------------------------------------
# training the domain nets


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_labelled(dataset: str, split: str, root: str | Path | None = None) -> tuple[Tensor, Tensor]:
    """Labelled images of an offline data set in [-1, 1], shape (N, 1, R, R), and int64 labels.

    ``fashion_mnist``: the raw idx files (Debian's dataset-fashion-mnist, or ``root``/
    ``$GANBENCH_FASHION_MNIST``). ``digits``: scikit-learn's bundled 8x8 digits (values 0..16),
    split deterministically 80/20 (every fifth image is test).
    """
    if dataset == "fashion_mnist":
        dirs = [root, os.environ.get("GANBENCH_FASHION_MNIST"), *FASHION_MNIST_DIRS]
        prefix = "train" if split == "train" else "t10k"
        for d in dirs:
            if d and (Path(d) / f"{prefix}-images-idx3-ubyte.gz").is_file():
                images = _read_idx(Path(d) / f"{prefix}-images-idx3-ubyte.gz")
                labels = _read_idx(Path(d) / f"{prefix}-labels-idx1-ubyte.gz")
                x = torch.from_numpy(images.copy()).float().div(127.5).sub(1.0).unsqueeze(1)
                return x, torch.from_numpy(labels.astype(np.int64))
        raise GanbenchError(
            "Fashion-MNIST idx files not found in "
            + ", ".join(str(d) for d in dirs if d)
            + "; install dataset-fashion-mnist or set GANBENCH_FASHION_MNIST=DIR"
        )
    if dataset == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.from_numpy(d.images).float().div(8.0).sub(1.0).unsqueeze(1)
        y = torch.from_numpy(d.target.astype(np.int64))
        test = torch.arange(len(y)) % 5 == 0
        keep = test if split == "test" else ~test
        return x[keep], y[keep]
    raise GanbenchError(f"unknown data set '{dataset}' for train-features; valid choices: fashion_mnist, digits")


def train_domain_net(
    dataset: str,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    root: str | Path | None = None,
    progress: bool = True,
) -> tuple[DomainCNN, float]:
    """Train a ``DomainCNN`` on ``dataset``; returns the net (eval mode) and its test accuracy.

    Adam with a one-cycle learning-rate schedule, random +-2 px translations as augmentation.
    """
    torch.manual_seed(seed)
    net_name = {v["dataset"]: k for k, v in DOMAIN_NETS.items()}[dataset]
    spec = DOMAIN_NETS[net_name]
    x, y = load_labelled(dataset, "train", root)
    xt, yt = load_labelled(dataset, "test", root)
    net = DomainCNN(spec["channels"], spec["resolution"], int(y.max()) + 1)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps_per_epoch = (len(x) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    from ganbench.progress import progress as bar_for

    with bar_for(f"training feature net {net_name} ({epochs} epochs): batches", epochs * steps_per_epoch,
                 enabled=progress) as bar:
        for _ in range(epochs):
            net.train()
            perm = torch.randperm(len(x), generator=gen)
            for i in range(steps_per_epoch):
                idx = perm[i * batch_size : (i + 1) * batch_size]
                xb = x[idx]
                pad = 2 if spec["resolution"] >= 16 else 1
                shift = torch.randint(-pad, pad + 1, (2,), generator=gen).tolist()
                xb = torch.roll(F.pad(xb, (pad,) * 4, value=-1.0), shifts=shift, dims=(2, 3))[
                    ..., pad : pad + xb.shape[-2], pad : pad + xb.shape[-1]
                ]
                loss = F.cross_entropy(net(xb), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
    return net.eval(), evaluate_accuracy(net, xt, yt)


@torch.no_grad()
def evaluate_accuracy(net: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``net`` on (x, y)."""
    net.eval()
    correct = sum(
        int((net(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum()) for i in range(0, len(x), batch_size)
    )
    return correct / len(x)


def save_domain_net(
    net: DomainCNN, name: str, accuracy: float, out: str | Path | None = None, extra: dict | None = None
) -> tuple[Path, str]:
    """Save weights; the file is named ``<name>-<sha256[:12]>.pt`` under ``<cache>/features`` unless ``out``.

    Returns the path and the full SHA-256 of its bytes (the hash recorded in metric protocols).
    """
    payload = {
        "name": name,
        "config": dict(net.config),
        "state_dict": net.state_dict(),
        "test_accuracy": float(accuracy),
        **(extra or {}),
    }
    target_dir = cache_root() / "features" if out is None else Path(out).parent
    target_dir.mkdir(parents=True, exist_ok=True)
    tmp = target_dir / f".{name}-partial.pt"
    from ganbench.signals import deferred

    with deferred():  # a signal waits for the file to be whole and in place
        torch.save(payload, tmp)
        digest = sha256_file(tmp)
        path = target_dir / f"{name}-{digest[:12]}.pt" if out is None else Path(out)
        os.replace(tmp, path)
    return path, digest
