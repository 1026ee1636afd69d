"""Image-to-image and two-stage families: PatchGAN, U-Net, CycleGAN pieces, StackGAN, paired data sets."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from PIL import Image

from ganbench import GanbenchError
from ganbench.cli import EXIT_USAGE, main
from ganbench.data import GANDataModule
from ganbench.data.paired import sobel_edges
from ganbench.models.cyclegan import ImagePool, cycle_terms
from ganbench.nn.patch import PatchDiscriminator, patch_receptive_field
from ganbench.nn.unet import UNetGenerator
from tests.conftest import needs_fmnist
from tests.tiny import CPU, NO_EXTRAS, tiny_fit

FAST = ["--model.init_args.width", "4", "--data.batch_size", "2", "--data.resolution", "16", *CPU,
        "--trainer.log_every_n_steps", "1", *NO_EXTRAS, "--run.sample_every", "2", "--run.checkpoint_every", "2"]


def grid_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


# ------------------------------------------------------------------------------------------------ networks
@pytest.mark.parametrize(("resolution", "n"), [(16, 1), (32, 2), (64, 3), (128, 3)])
def test_patch_map_size_and_receptive_field(resolution, n):
    """n = clamp(log2 R − 3, 1, 3) stride-2 layers; map side R/2ⁿ − 2; a logit sees RF = 9·2ⁿ − 2 pixels
    (70 for n = 3): the input-gradient of one interior logit is non-zero on exactly an RF×RF square."""
    d = PatchDiscriminator((2, resolution, resolution), width=2, norm="none")
    assert d.n_layers == n and d.receptive_field == patch_receptive_field(n) == 9 * 2**n - 2
    x = torch.randn(1, 2, resolution, resolution, requires_grad=True)
    out = d(x)
    side = resolution // 2**n - 2
    assert out.shape == (1, 1, side, side)
    if resolution == 128:  # 14×14 map: logit (7, 7) sees an interior 70×70 patch
        out[0, 0, 7, 7].backward()
        rows, cols = torch.nonzero(x.grad.abs().sum((0, 1)), as_tuple=True)
        assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (70, 70)
        assert patch_receptive_field(3) == 70


@pytest.mark.parametrize("resolution", [16, 32])
def test_unet_depth_shapes_and_skips(resolution):
    """log2(R) levels down to a 1×1 bottleneck; with the bottleneck zeroed the output still depends on the
    input (through the skips); with every encoder output zeroed it does not."""
    g = UNetGenerator((1, resolution, resolution), width=4, norm="none", dropout=0.0)
    assert g.levels == int(math.log2(resolution))
    x1, x2 = torch.randn(2, 1, resolution, resolution), torch.randn(2, 1, resolution, resolution)
    assert g(x1).shape == (2, 1, resolution, resolution)
    feats = []
    hook = g.downs[-1].register_forward_hook(lambda m, i, o: feats.append(o.shape) or torch.zeros_like(o))
    y1, y2 = g(x1), g(x2)
    assert feats[0][-2:] == (1, 1)
    assert not torch.equal(y1, y2)  # input detail reaches the output around the bottleneck
    hooks = [d.register_forward_hook(lambda m, i, o: torch.zeros_like(o)) for d in g.downs[:-1]]
    assert torch.equal(g(x1), g(x2))  # no path left from the input
    for h in [hook, *hooks]:
        h.remove()


def test_unet_dropout_is_noise_also_in_eval():
    x = torch.randn(2, 1, 32, 32)
    noisy, plain = UNetGenerator((1, 32, 32), width=4).eval(), UNetGenerator((1, 32, 32), width=4, dropout=0).eval()
    assert noisy.noisy == {1, 2, 3}
    torch.manual_seed(0)
    assert not torch.equal(noisy(x), noisy(x))
    assert torch.equal(plain(x), plain(x))


# ------------------------------------------------------------------------------------------------ CycleGAN pieces
def test_cycle_and_identity_losses_closed_form():
    a = torch.randint(-8, 9, (3, 1, 8, 8)) / 8.0  # dyadic values: the sums below are exact in float32
    b = torch.randint(-8, 9, (3, 1, 8, 8)) / 8.0
    t = cycle_terms(nn.Identity(), nn.Identity(), a, b)
    assert t.cycle.item() == 0.0 and t.identity.item() == 0.0
    assert torch.equal(t.fake_b, a) and torch.equal(t.fake_a, b)

    class Shift(nn.Module):
        def forward(self, x):
            return x + 0.25

    t = cycle_terms(Shift(), nn.Identity(), a, b)  # G_BA(G_AB(a)) = a + ¼, G_AB(G_BA(b)) = b + ¼
    assert t.cycle.item() == 0.5 and t.identity.item() == 0.25
    assert cycle_terms(Shift(), nn.Identity(), a, b, identity=False).identity.item() == 0.0


def test_image_pool_before_full_exact_then_half_past_images():
    pool = ImagePool(50, seed=0)
    first = torch.arange(50.0).view(50, 1, 1, 1)
    assert torch.equal(pool.query(first[:30]), first[:30]) and torch.equal(pool.query(first[30:]), first[30:])
    assert torch.equal(torch.stack(pool.images), first)
    returned, past = [], 0
    for i in range(50, 2050):  # image i is filled with the value i
        out = pool.query(torch.full((1, 1, 1, 1), float(i)))
        v = int(out.item())
        past += v != i
        assert v <= i
        returned.append(v)
    assert len(pool.images) == 50
    # every image inserted after the pool filled is returned now or later, or still pooled: exactly once
    assert sorted(returned + [int(t.item()) for t in pool.images]) == list(range(2050))
    assert abs(past - 1000) <= 5 * math.sqrt(2000 * 0.25)  # Binomial(2000, ½), five standard deviations
    clone = ImagePool(50, seed=123)
    clone.load_state_dict(pool.state_dict())
    probe = torch.arange(3000.0, 3040.0).view(40, 1, 1, 1)
    assert torch.equal(clone.query(probe), pool.query(probe))


# ------------------------------------------------------------------------------------------------ data sets
def test_sobel_edges_of_a_step():
    """A vertical step from -1 to 1 between columns 3 and 4: |G_x| = 4 on columns 3 and 4, 0 elsewhere."""
    x = torch.full((1, 1, 6, 8), -1.0)
    x[..., 4:] = 1.0
    expected = torch.full_like(x, -1.0)
    expected[..., 3:5] = 1.0
    assert torch.equal(sobel_edges(x), expected)


@needs_fmnist
def test_fashion_image_to_image_sets():
    dm = GANDataModule("fashion_edges2image", resolution=16, batch_size=4)
    b, a = dm._split("test")
    assert dm.shape == (1, 16, 16) and dm.num_classes == 0 and b.shape == a.shape == (10000, 1, 16, 16)
    assert torch.equal(a, sobel_edges(b))
    rb, ra = dm.real_pairs(5, "test", seed=1)
    idx = torch.randperm(10000, generator=torch.Generator().manual_seed(1))[:5]
    assert torch.equal(rb, b[idx]) and torch.equal(ra, a[idx])
    dm = GANDataModule("fashion_a2b", resolution=16, batch_size=4)
    # tops {0,2,4,6}: 4×1000 test images; footwear {5,7,9}: 3×1000, repeated to 4000
    b, a = dm._split("test")
    assert len(a) == len(b) == 4000 and len(torch.unique(b.flatten(1), dim=0)) <= 3000


def _png(path: Path, array: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.to(torch.uint8).numpy()).save(path)


def test_imagefolder_pairs_left_is_input_right_is_target(tmp_path):
    ab = torch.zeros(8, 16, 3)
    ab[:, 8:] = 255  # A (left) black, B (right) white
    for i in range(3):
        _png(tmp_path / "train" / f"{i}.png", ab)
    _png(tmp_path / "val" / "0.png", ab)
    dm = GANDataModule("imagefolder_pairs", root=str(tmp_path), resolution=8, batch_size=2)
    b, a = next(iter(dm.train_dataloader()))
    assert dm.shape == (3, 8, 8) and b.shape == a.shape == (2, 3, 8, 8)
    assert torch.equal(b, torch.ones_like(b)) and torch.equal(a, -torch.ones_like(a))
    assert len(dm._split("test")) == 1


def test_imagefolder_unpaired_cycles_the_shorter_domain(tmp_path):
    for i in range(3):
        _png(tmp_path / "trainA" / f"{i}.png", torch.full((8, 8, 3), 0.0))
    _png(tmp_path / "trainB" / "0.png", torch.full((8, 8, 3), 255.0))
    dm = GANDataModule("imagefolder_unpaired", root=str(tmp_path), resolution=8, batch_size=1)
    assert len(dm._split("train")) + len(dm._split("test")) == 3  # no testA/testB: 10 % of train held out
    b, a = dm._split("train")[0]
    assert torch.equal(b, torch.ones(3, 8, 8)) and torch.equal(a, -torch.ones(3, 8, 8))


def test_unpaired_folder_without_images_is_one_line(tmp_path, capsys):
    _png(tmp_path / "data" / "trainB" / "0.png", torch.zeros(8, 8, 3))
    (tmp_path / "data" / "trainA").mkdir()
    code = main(["fit", "--config", "configs/cyclegan.yaml", "--data.dataset", "imagefolder_unpaired",
                 "--data.root", str(tmp_path / "data"), "--trainer.default_root_dir", str(tmp_path / "run")])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / 'data' / 'trainA'} holds no images" in err[0]
    assert not (tmp_path / "run").exists()


def test_paired_image_of_odd_width_is_one_line(tmp_path, capsys):
    _png(tmp_path / "data" / "a.png", torch.zeros(8, 16, 3))
    _png(tmp_path / "data" / "b.png", torch.zeros(8, 17, 3))
    code = main(["fit", "--config", "configs/pix2pix.yaml", "--data.dataset", "imagefolder_pairs",
                 "--data.root", str(tmp_path / "data"), "--trainer.default_root_dir", str(tmp_path / "run")])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"data: {tmp_path / 'data' / 'b.png'} has odd width 17" in err[0]


# ------------------------------------------------------------------------------------------------ fits
@needs_fmnist
def test_pix2pix_fits_on_fashion_edges_with_paired_metrics(tmp_path):
    import csv

    root = tmp_path / "run"
    tiny_fit(root, "pix2pix", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "2",
             "--model.init_args.n_grid", "4", steps=2, base=FAST)
    with open(root / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/psnr")]
    assert len(rows) == 1 and all(math.isfinite(float(rows[0][k])) for k in ("val/l1", "val/psnr", "val/ssim"))
    # 3 rows (input | output | target) of 4 columns of 16 px with 2 px padding
    assert grid_size(root / "samples" / "step_0000002.png") == (4 * 18 + 2, 3 * 18 + 2)


@needs_fmnist
def test_cyclegan_fits_on_fashion_a2b_and_checkpoints_its_pools(tmp_path):
    from ganbench.models import load_module

    root = tmp_path / "run"
    tiny_fit(root, "cyclegan", "--model.init_args.n_blocks", "1", "--model.init_args.n_grid", "4", steps=2, base=FAST)
    ckpt = torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)
    pools = ckpt["ganbench"]["image_pools"]
    assert [len(pools[k]["images"]) for k in ("a", "b")] == [4, 4]  # 2 D steps × 2 fakes, pool not yet full
    module = load_module(root / "checkpoints" / "last.ckpt")
    assert all(torch.equal(x, y) for x, y in zip(module.pools[0]["a"].images, pools["a"]["images"]))
    assert grid_size(root / "samples" / "step_0000002.png") == (4 * 18 + 2, 6 * 18 + 2)
    with pytest.raises(GanbenchError, match="no latent space"):
        module.sample(2)


@needs_fmnist
def test_stackgan_trains_stage_by_stage(tmp_path):
    args = ["--data.resolution", "32", "--model.init_args.c_dim", "8", "--model.init_args.stage1_resolution", "16"]
    tiny_fit(tmp_path / "s1", "stackgan", *args, steps=2, base=FAST)
    s1 = tmp_path / "s1" / "checkpoints" / "last.ckpt"
    tiny_fit(tmp_path / "s2", "stackgan", *args, "--model.init_args.stage", "2", "--model.init_args.stage1_ckpt",
             str(s1), steps=2, base=FAST)
    a = torch.load(s1, weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "s2" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    stage1 = [k for k in a if k.startswith("generator.stage1.")]
    assert stage1 and all(torch.equal(a[k], b[k]) for k in stage1)  # frozen: weights and BN statistics
    assert not any(k.startswith("generator.stage2.") for k in a)
    # 10 classes per row; 4 groups of (stage-I row, stage-II row) of 32 px tiles
    assert grid_size(tmp_path / "s2" / "samples" / "step_0000002.png") == (10 * 34 + 2, 8 * 34 + 2)


def test_stackgan_stage_checks_are_one_line(tmp_path):
    from ganbench.models import StackGAN

    with pytest.raises(GanbenchError, match="model.stage1_ckpt is required"):
        StackGAN(stage=2, num_classes=10)
    with pytest.raises(GanbenchError, match="model.conditional must be true"):
        StackGAN(num_classes=0)
    with pytest.raises(GanbenchError, match="model.stage1_resolution=12"):
        StackGAN(num_classes=10, stage1_resolution=12)
    m = StackGAN(stage=2, stage1_ckpt=str(tmp_path / "missing.ckpt"), num_classes=10, width=4, c_dim=8)
    with pytest.raises(GanbenchError, match="does not exist"):
        m.load_stage1(tmp_path / "missing.ckpt")
    assert m.sample(3, labels=torch.arange(3)).shape == (3, 1, 32, 32)
