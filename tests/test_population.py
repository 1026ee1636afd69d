"""Populations: N independent fits in one batched step equal N ordinary fits, replica by replica."""

import copy
import json
import os
from pathlib import Path

import pytest
import torch

from ganbench import GanbenchError
from ganbench.cli import EXIT_USAGE, main
from ganbench.nn.cnn import CNNDiscriminator, CNNGenerator, DCGANDiscriminator, DCGANGenerator
from ganbench.nn.mlp import MLPDiscriminator, MLPGenerator
from ganbench.nn.population import ReplicaRNG, unstack_state
from ganbench.nn.resnet import ResNetDiscriminator, ResNetGenerator
from ganbench.nn.stacking import stack_modules
from ganbench.optim import PopulationAdam
from tests.tiny import CPU, NO_EXTRAS, RING8_2000, tiny_fit

#: families whose step is the base step (the ones a population batches), by config
FAMILIES = ["gan", "dcgan", "wgan", "wgan_gp", "lsgan", "dragan", "sngan", "fgan", "softmax_gan"]

TOY = [*RING8_2000, "--model.init_args.width", "8", "--model.init_args.latent_dim", "2", "--data.batch_size", "16",
       "--model.init_args.g_batch_size", "16", *CPU, *NO_EXTRAS, "--run.sample_every", "1000",
       "--run.checkpoint_every", "1000"]


def fit(root: Path, config: str, seed: int, *args: str, steps: int = 20) -> dict:
    """The last checkpoint of a toy fit of ``config`` from ``seed``."""
    return tiny_fit(root, config, *args, steps=steps, seed=seed, base=TOY).checkpoint()


def noise_only(key: str, state: dict, shift_invariant: bool = False) -> bool:
    """Values that are rounding noise in exact arithmetic, so no two implementations agree on them: the
    bias of a layer whose output goes only into batch norm has zero gradient (batch norm removes it) and
    Adam turns its float noise into full steps; batch norm's running mean tracks that bias. Likewise D's
    output bias under a loss that a constant shift of every score leaves unchanged (the softmax GAN's)."""
    if key.endswith("running_mean") or (shift_invariant and key == "discriminator.head.linear.bias"):
        return True
    parts = key.split(".")
    if len(parts) < 2:  # the module's own buffers (an image-to-image family's grid of test pairs)
        return False
    head = 2 if parts[1] == "module" else 1  # the EMA generator's copy: ema_generator.module.…
    net, names = ".".join(parts[:head]), parts[head:-1]
    if parts[-1] != "bias" or not names:
        return False
    if names[0] == "blocks" and names[-1] in ("c1", "c2", "skip") and f"{net}.norm.norm.running_mean" in state:
        return True  # ResNet generator with batch norm: a convolution's per-channel constant rides the skip
        # connections (1×1 convolutions, up-sampling) unchanged into the next batch norm, so every
        # convolution bias in the blocks has zero gradient
    layer, index = ".".join(names), names[-1]
    if index.isdigit() and f"{net}.{'.'.join([*names[:-1], str(int(index) + 1)])}.running_mean" in state:
        return True  # a layer of a Sequential whose next entry is its batch norm (the autoencoders' layout)
    block = names[1] if len(names) > 1 else ""
    in_g = net != "discriminator"
    followed_by = {  # the layer → the batch norm its output goes into, in ganbench's networks
        f"layers.{index}": f"norms.{index}.norm",  # MLP generator
        f"net.{index}": f"net.{int(index) + 1}" if index.isdigit() else None,  # MLP / DCGAN discriminator
        f"ups.{index}": f"norms.{int(index) + 1}.norm" if index.isdigit() else None,  # CNN generator
        f"blocks.{block}.c1": f"blocks.{block}.n2.norm" if in_g else f"blocks.{block}.n1",  # ResNet
        f"blocks.{block}.c2": None if in_g else f"blocks.{block}.n2",  # ResNet discriminator
    }.get(layer)
    return followed_by is not None and f"{net}.{followed_by}.running_mean" in state


def assert_replica_equals(pop: dict, k: int, one: dict, rtol: float, atol: float) -> None:
    state = one["state_dict"]
    mine = unstack_state(pop["state_dict"], k)
    shift_invariant = one["ganbench"]["family"] == "softmax_gan"
    compared = 0
    for key, value in state.items():
        if value.dim() == 0 or key.startswith("fixed_") or noise_only(key, state, shift_invariant):
            continue
        torch.testing.assert_close(mine[key], value, rtol=rtol, atol=atol,
                                   msg=lambda m, key=key: f"{key}: {m}")
        compared += 1
    assert compared >= 8


# ----------------------------------------------------------------------------------- building blocks
@pytest.mark.parametrize("norm", ["none", "spectral", "batch", "layer", "weight"])
def test_stacked_networks_compute_each_replica(norm):
    nets = []
    for r in range(3):
        torch.manual_seed(r)
        nets.append((MLPGenerator(2, (2,), 16, 3, norm), MLPDiscriminator((2,), 16, 3, norm)))
    G = stack_modules([copy.deepcopy(g) for g, _ in nets])
    D = stack_modules([copy.deepcopy(d) for _, d in nets])
    assert sum(p.numel() for p in G.parameters()) == 3 * sum(p.numel() for p in nets[0][0].parameters())
    z = torch.randn(3 * 5, 2)
    for _ in range(3):  # training mode: power iterations and batch statistics advance each time
        x = G(z)
        ref = torch.cat([g(z[5 * r:5 * r + 5]) for r, (g, _) in enumerate(nets)])
        torch.testing.assert_close(x, ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(D(ref), torch.cat([d(ref[5 * r:5 * r + 5]) for r, (_, d) in enumerate(nets)]),
                                   rtol=1e-5, atol=1e-6)


def _reference_spectral_divide(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, dim: int) -> torch.Tensor:
    """``W / (uᵀ W v)`` per replica as plain autograd ops (the graph autograd builds by itself)."""
    w = (weight if dim == 0 else weight.movedim(dim + 1, 1)).flatten(2)
    sigma = torch.einsum("nr,nrc,nc->n", u, w, v)
    return weight / sigma.view(-1, *([1] * (weight.dim() - 1)))


@pytest.mark.parametrize("shape, dim", [((3, 5, 4), 0), ((2, 4, 3, 3, 3), 0), ((2, 3, 4, 3, 3), 1)],
                         ids=["linear", "conv", "transposed-conv"])
def test_spectral_divide_gradients_are_autograds_own(shape, dim):
    """The closed-form backward of spectral norm's division (and its double backward, which a penalty
    through an unrolled D step takes) equals autograd's graph of the same arithmetic, in float64."""
    from ganbench.nn.population import _SpectralDivide

    torch.manual_seed(0)
    weight = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    rows = shape[1] if dim == 0 else shape[2]
    u = torch.nn.functional.normalize(torch.randn(shape[0], rows, dtype=torch.float64), dim=1)
    v = torch.nn.functional.normalize(torch.randn(shape[0], weight[0].numel() // rows, dtype=torch.float64), dim=1)
    ours = _SpectralDivide.apply(weight, u, v, dim)
    ref = _reference_spectral_divide(weight, u, v, dim)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn(shape, dtype=torch.float64)
    (grad,) = torch.autograd.grad((ours * g).sum(), weight, create_graph=True)
    (grad_ref,) = torch.autograd.grad((ref * g).sum(), weight, create_graph=True)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-12, atol=1e-12)
    h = torch.randn(shape, dtype=torch.float64)  # second order: d<∂L/∂W, H>/dW
    torch.testing.assert_close(torch.autograd.grad((grad * h).sum(), weight)[0],
                               torch.autograd.grad((grad_ref * h).sum(), weight)[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("transpose", [False, True])
def test_matvec_is_the_batched_product_on_both_paths(monkeypatch, transpose):
    from ganbench.nn import population

    torch.manual_seed(0)
    w, x = torch.randn(4, 6, 5, dtype=torch.float64), torch.randn(4, 6 if transpose else 5, dtype=torch.float64)
    ref = torch.einsum("nrc,nr->nc" if transpose else "nrc,nc->nr", w, x)
    torch.testing.assert_close(population.matvec(w, x, transpose), ref, rtol=1e-12, atol=1e-12)  # elementwise
    monkeypatch.setattr(population, "MATVEC_ELEMENTWISE_MAX", 0)  # bmm
    torch.testing.assert_close(population.matvec(w, x, transpose), ref, rtol=1e-12, atol=1e-12)


FAULTS = """
import resource, sys, torch
from ganbench.nn.population import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def cycle():  # a step's activations (12 MiB each), all freed at its end
    xs = [torch.ones(3 << 20) for _ in range(8)]
    del xs
for _ in range(3):
    cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="glibc's allocator on Linux")
def test_keeping_freed_memory_stops_the_page_faults_of_each_step():
    """glibc's defaults hand a step's freed activations back to the system and fault them in again
    in the next step; after keep_freed_memory() the next steps reuse the same pages."""
    import subprocess
    import sys

    # glibc's default thresholds (128 KiB), held there: by themselves they move with the history of a
    # process's frees, which makes the default's faults depend on what ran before; no tunables inherited
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env.update(MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")

    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True,
                             env=env)
        return int(out.stdout.split()[-1])

    default, kept = faults("default"), faults("keep")
    # 8 × 3 072 small pages a step come back with every step (fewer faults where the kernel backs
    # them with transparent huge pages, but still thousands); kept, the steps reuse their memory
    assert default >= 2000
    assert kept * 20 <= default


#: image networks at 16×16 (their smallest size), 4 channels wide: (generator, discriminator) builders
IMAGE_NETS = {
    "cnn": (CNNGenerator, CNNDiscriminator),
    "dcgan": (DCGANGenerator, DCGANDiscriminator),
    "resnet": (ResNetGenerator, ResNetDiscriminator),
}


@pytest.mark.parametrize("arch", sorted(IMAGE_NETS))
@pytest.mark.parametrize("norm", ["none", "spectral", "batch", "layer", "instance", "weight"])
def test_stacked_image_networks_are_each_replica_as_grouped_convolutions(arch, norm):
    """Forward (three training-mode passes, so power iterations and batch statistics advance), the
    gradients of every parameter, and eval mode: the population equals its replicas one by one."""
    make_g, make_d = IMAGE_NETS[arch]
    nets = []
    for r in range(3):
        torch.manual_seed(r)
        nets.append((make_g(8, (1, 16, 16), 4, norm), make_d((1, 16, 16), 4, norm)))
    G = stack_modules([copy.deepcopy(g) for g, _ in nets])
    D = stack_modules([copy.deepcopy(d) for _, d in nets])
    assert sum(p.numel() for p in D.parameters()) == 3 * sum(p.numel() for p in nets[0][1].parameters())
    z = torch.randn(3 * 4, 8)
    for _ in range(3):
        x = G(z)
        ref = torch.cat([g(z[4 * r:4 * r + 4]) for r, (g, _) in enumerate(nets)])
        torch.testing.assert_close(x, ref, rtol=1e-4, atol=1e-5)
        out = D(x)
        torch.testing.assert_close(out, torch.cat([d(ref[4 * r:4 * r + 4]) for r, (_, d) in enumerate(nets)]),
                                   rtol=1e-4, atol=1e-5)
    G.zero_grad()
    D.zero_grad()
    (D(G(z)) * torch.arange(12.0)).sum().backward()
    for r, (g, d) in enumerate(nets):
        g.zero_grad()
        d.zero_grad()
        (d(g(z[4 * r:4 * r + 4])) * torch.arange(4.0 * r, 4.0 * r + 4)).sum().backward()
    for pop, k in ((G, 0), (D, 1)):
        one = [dict(n[k].named_parameters()) for n in nets]
        # float32 sums in another order: entries that cancel to (near) zero in exact arithmetic (batch
        # norm's gradients, weight norm's along v) differ by rounding relative to the network's gradient
        # scale, not to their own size
        scale = max(float(p.grad.abs().max()) for p in pop.parameters())
        for name, p in pop.named_parameters():
            torch.testing.assert_close(p.grad, torch.stack([o[name].grad for o in one]), rtol=1e-4, atol=1e-5 * scale,
                                       msg=lambda m, name=name: f"{name}: {m}")
    G.eval()
    [g.eval() for g, _ in nets]
    torch.testing.assert_close(G(z), torch.cat([g(z[4 * r:4 * r + 4]) for r, (g, _) in enumerate(nets)]),
                               rtol=1e-4, atol=1e-5)


def test_stacked_batch_norm_runs_under_bf16_autocast_as_batch_norm_does():
    """Convolutions give bf16 under autocast; batch norm keeps float32 statistics and running buffers,
    as torch's does, and returns the input's dtype."""
    torch.manual_seed(0)
    nets = [CNNGenerator(8, (1, 16, 16), 4, "batch") for _ in range(2)]
    G = stack_modules([copy.deepcopy(g) for g in nets])
    z = torch.randn(2 * 4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = G(z)
        ref = torch.cat([g(z[4 * r:4 * r + 4]) for r, g in enumerate(nets)])
    assert x.dtype == ref.dtype
    assert G.norms[0].norm.running_var.dtype == torch.float32
    torch.testing.assert_close(x.float(), ref.float(), rtol=0.05, atol=0.05)  # bf16: 8 bits of mantissa
    torch.testing.assert_close(G.norms[0].norm.running_var[1], nets[1].norms[0].norm.running_var, rtol=0.02, atol=1e-3)


def test_unbatchable_networks_refuse_with_the_reason():
    with pytest.raises(GanbenchError, match="minibatch"):
        stack_modules([MLPDiscriminator((2,), 8, 2, "none", minibatch="std") for _ in range(2)])
    with pytest.raises(GanbenchError, match="padding_idx"):
        stack_modules([torch.nn.Embedding(3, 4, padding_idx=0) for _ in range(2)])


def test_replica_rng_draws_what_each_generator_draws():
    rng = ReplicaRNG([3, 4])
    like = torch.zeros(())
    x = rng.randn(6, 2, like=like)
    torch.testing.assert_close(x[:3], torch.randn(3, 2, generator=torch.Generator().manual_seed(3)), rtol=0, atol=0)
    torch.testing.assert_close(x[3:], torch.randn(3, 2, generator=torch.Generator().manual_seed(4)), rtol=0, atol=0)
    with pytest.raises(ValueError):
        rng.rand(5, like=like)


@pytest.mark.parametrize("decoupled", [False, True])
def test_population_adam_is_adam_per_replica(decoupled):
    torch.manual_seed(0)
    w = torch.randn(3, 5, 4)
    lrs, b1, b2 = torch.tensor([1e-3, 2e-3, 5e-4]), torch.tensor([0.0, 0.5, 0.9]), torch.tensor([0.9, 0.99, 0.999])
    p = torch.nn.Parameter(w.clone())
    opt = PopulationAdam([p], lrs.double() / 2e-4, b1, b2, lr=2e-4, betas=(0.5, 0.999), weight_decay=0.01,
                         decoupled_weight_decay=decoupled)
    refs = [torch.nn.Parameter(w[r].clone()) for r in range(3)]
    ref_opts = [torch.optim.Adam([refs[r]], lr=float(lrs.double()[r]), betas=(float(b1[r]), float(b2[r])),
                                 weight_decay=0.01, decoupled_weight_decay=decoupled) for r in range(3)]
    for _ in range(30):
        g = torch.randn(3, 5, 4) * 10 ** torch.randn(())
        p.grad = g.clone()
        opt.step()
        for r in range(3):
            refs[r].grad = g[r].clone()
            ref_opts[r].step()
    for r in range(3):
        torch.testing.assert_close(p.detach()[r], refs[r].detach(), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------- whole fits
LRS = [2e-4, 4e-4, 1e-4]


#: PacGAN's protocol (maxout D, batch norm in G, N(0, 0.02²) init) with packs of 2
PACKED = ["--model.init_args.pack", "2", "--model.init_args.d_width", "16"]


@pytest.mark.parametrize("config, extra", [(c, []) for c in FAMILIES] + [("pacgan_ring", PACKED)],
                         ids=[*FAMILIES, "pacgan_ring-pack2"])
def test_replica_equals_the_fit_with_its_seed(tmp_path, config, extra):
    """Replica 2 of a population with seeds 5, 6, 7 (and, with Adam, its own learning rates) equals
    the population-1 fit with seed 7 and that learning rate after 20 G iterations."""
    adam = config != "wgan"  # WGAN's RMSprop has no per-replica learning rates
    over = ["--model.init_args.population_overrides", json.dumps([{"g_lr": x, "d_lr": x} for x in LRS])] if adam else []
    pop = fit(tmp_path / "pop", config, 5, "--model.init_args.population", "3", *over, *extra)
    lr = ["--model.init_args.g_optimizer.init_args.lr", str(LRS[2]),
          "--model.init_args.d_optimizer.init_args.lr", str(LRS[2])] if adam else []
    one = fit(tmp_path / "one", config, 7, *lr, *extra)
    assert_replica_equals(pop, 2, one, rtol=1e-4, atol=1e-5)


#: 16×16 digits through the image networks (grouped convolutions), 4 channels wide
IMAGES = ["--data.dataset", "digits", "--data.resolution", "16", "--model.init_args.arch", "auto",
          "--model.init_args.width", "4", "--model.init_args.latent_dim", "8", "--data.batch_size", "8",
          "--model.init_args.g_batch_size", "8"]


@pytest.mark.parametrize("config, extra", [
    ("sngan", ["--model.init_args.ema_decay", "0.9", "--model.init_args.augment", "diffaugment"]),  # CNN, SN + BN
    ("dcgan", []),  # DCGAN: transposed convolutions, batch norm in G and D
    ("wgan_gp", ["--model.init_args.d_norm", "layer"]),  # ResNet, gradient penalty, group norm
], ids=["sngan-cnn-ema-diffaugment", "dcgan", "wgan_gp-resnet-layer"])
def test_image_replica_equals_the_fit_with_its_seed(tmp_path, config, extra):
    """The same as above on images: replica 2 of seeds 5, 6, 7 with its own learning rates is the fit
    with seed 7 and that learning rate, through grouped convolutions."""
    over = json.dumps([{"g_lr": x, "d_lr": x} for x in LRS])
    pop = fit(tmp_path / "pop", config, 5, *IMAGES, *extra, "--model.init_args.population", "3",
              "--model.init_args.population_overrides", over)
    one = fit(tmp_path / "one", config, 7, *IMAGES, *extra, "--model.init_args.g_optimizer.init_args.lr", str(LRS[2]),
              "--model.init_args.d_optimizer.init_args.lr", str(LRS[2]))
    assert_replica_equals(pop, 2, one, rtol=1e-4, atol=1e-5)


def test_image_metrics_of_a_replica_are_those_of_the_fit_with_its_seed(tmp_path, monkeypatch):
    """FD/KID/IS/precision-recall/... of replica 1 (own metric states, keys ``/r1``) at G iterations 0, 2
    and 4 are those of the fit with seed 6, and differ from replica 0's."""
    import csv

    from ganbench.metrics.features import DomainCNN, save_domain_net

    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    save_domain_net(DomainCNN(resolution=8), "digits", accuracy=0.0)
    metrics = ["--run.metrics_every", "2", "--run.image_metrics_n", "100"]
    fit(tmp_path / "pop", "sngan", 5, *IMAGES, *metrics, "--model.init_args.population", "2", steps=4)
    fit(tmp_path / "one", "sngan", 6, *IMAGES, *metrics, steps=4)

    def rows(root: Path) -> dict[int, dict[str, float]]:
        out: dict[int, dict[str, float]] = {}
        for row in csv.DictReader((root / "metrics.csv").open()):
            vals = {k: float(v) for k, v in row.items() if k.startswith("val/") and v}
            if vals:
                out.setdefault(int(row["step"]), {}).update(vals)
        return out

    pop, one = rows(tmp_path / "pop"), rows(tmp_path / "one")
    assert sorted(one) == sorted(pop) == [0, 2, 4]
    assert "val/fd_digits_100" in one[4] and "val/kid_digits_100" in one[4]
    for step, values in one.items():
        for key, value in values.items():
            assert pop[step][f"{key}/r1"] == pytest.approx(value, rel=1e-3, abs=1e-6), (step, key)
    assert pop[4]["val/fd_digits_100/r0"] != pytest.approx(pop[4]["val/fd_digits_100/r1"], rel=1e-3)


def test_every_replica_with_spectral_and_batch_norm_penalty_ema_and_noise(tmp_path):
    extra = ["--model.init_args.penalty", "gp", "--model.init_args.penalty_weight", "1",
             "--model.init_args.ema_decay", "0.9", "--model.init_args.instance_noise", "0.1",
             "--model.init_args.instance_noise_steps", "10"]
    over = [{"g_lr": x, "d_lr": x, "penalty_weight": w} for x, w in zip(LRS, (1.0, 5.0, 0.5))]
    pop = fit(tmp_path / "pop", "sngan", 5, "--model.init_args.population", "3",
              "--model.init_args.population_overrides", json.dumps(over), *extra)
    for k in range(3):
        one = fit(tmp_path / f"one{k}", "sngan", 5 + k, *extra,
                  "--model.init_args.g_optimizer.init_args.lr", str(LRS[k]),
                  "--model.init_args.d_optimizer.init_args.lr", str(LRS[k]),
                  "--model.init_args.penalty_weight", str(over[k]["penalty_weight"]))
        assert_replica_equals(pop, k, one, rtol=1e-4, atol=1e-5)


def test_given_replica_seeds_repeat_a_seed_with_other_learning_rates(tmp_path):
    """``population_seeds`` (what a study batching two trials gives): replica 1 of seeds [9, 9] is the fit
    with seed 9 and replica 1's learning rate, not the fit with seed_everything + 1."""
    over = json.dumps([{"g_lr": x, "d_lr": x} for x in LRS[:2]])
    pop = fit(tmp_path / "pop", "gan", 5, "--model.init_args.population", "2", "--model.init_args.population_seeds",
              "[9, 9]", "--model.init_args.population_overrides", over, steps=10)
    one = fit(tmp_path / "one", "gan", 9, "--model.init_args.g_optimizer.init_args.lr", str(LRS[1]),
              "--model.init_args.d_optimizer.init_args.lr", str(LRS[1]), steps=10)
    assert pop["ganbench"]["replica_seeds"] == [9, 9]
    assert_replica_equals(pop, 1, one, rtol=1e-4, atol=1e-5)


def test_a_diverged_replica_is_frozen_and_the_others_train_on(tmp_path):
    over = json.dumps([{"g_lr": 2e-4, "d_lr": 2e-4}, {"g_lr": 1e10, "d_lr": 1e10}])
    pop = fit(tmp_path / "pop", "gan", 5, "--model.init_args.population", "2", "--model.init_args.population_overrides",
              over, "--model.init_args.check_every", "5")
    summary = json.loads((tmp_path / "pop" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert [r["status"] for r in summary["replicas"]] == ["completed", "diverged"]
    assert [r["seed"] for r in summary["replicas"]] == [5, 6]
    assert summary["replicas"][1]["divergence"]["step"] == 5
    one = fit(tmp_path / "one", "gan", 5)  # replica 0 never saw its neighbour's NaNs
    # (to float rounding: the population's per-replica Adam and torch's Adam differ in the last bit)
    assert_replica_equals(pop, 0, one, rtol=1e-5, atol=1e-6)
    assert not torch.isfinite(pop["state_dict"]["generator.out.weight"][1]).all() or \
        pop["state_dict"]["generator.out.weight"][1].abs().max() > 1e3


def assert_resume_exact(root: Path, config: str, seed: int, args: list[str], steps: int) -> dict:
    """A fit stopped at ``steps // 2`` and resumed to ``steps`` equals the uninterrupted fit, bit for bit;
    returns the uninterrupted fit's checkpoint."""
    straight = fit(root / "a", config, seed, *args, steps=steps)
    fit(root / "b", config, seed, *args, steps=steps // 2)
    resumed = fit(root / "b", config, seed, *args, "--ckpt_path", str(root / "b" / "checkpoints" / "last.ckpt"),
                  steps=steps)
    for key, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0)
    return straight


def test_population_resume_is_exact(tmp_path):
    args = ["--model.init_args.population", "2", "--model.init_args.instance_noise", "0.1"]
    assert_resume_exact(tmp_path, "wgan_gp", 3, args, steps=12)


@pytest.mark.parametrize("args, message", [
    (["--config", "configs/sngan.yaml", "--model.init_args.population", "2", "--model.init_args.minibatch", "std"],
     "minibatch"),
    (["--config", "configs/sngan.yaml", "--model.init_args.population", "0"], "model.population must be >= 1"),
    (["--config", "configs/sngan.yaml", "--model.init_args.population", "2",
      "--model.init_args.population_overrides", '[{"g_lr": 0.001}]'], "one dict per replica"),
    (["--config", "configs/sngan.yaml", "--model.init_args.population", "2",
      "--model.init_args.population_overrides", '[{"lr": 0.001}, {}]'], "not a per-replica setting"),
    (["--config", "configs/wgan.yaml", "--model.init_args.population", "2",
      "--model.init_args.population_overrides", '[{"d_lr": 0.001}, {}]'], "needs torch.optim.Adam"),
    (["--config", "configs/sngan.yaml", "--model.init_args.population", "2", "--model.init_args.grad_clip", "1"],
     "grad_clip"),
    (["--config", "configs/sngan.yaml", "--model.init_args.population", "2", "--model.init_args.population_seeds",
      "[3]"], "one seed per replica"),
])
def test_population_refusals_are_one_line(tmp_path, capsys, args, message):
    code = main(["fit", *args, "--trainer.default_root_dir", str(tmp_path / "r"), "--trainer.max_steps", "1",
                 *TOY[:2], "--run.wandb", "false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "r").exists()


def test_sweep_trial_seeds_as_one_population_score_like_one_fit_each(tmp_path, monkeypatch):
    """A trial's consecutive seeds run as one population fit (one run directory) and score what one
    fit per seed scores: the same per-seed quality, collapse value and status."""
    import optuna

    from tests.test_sweep import TINY, write

    monkeypatch.setenv("GANBENCH_SWEEP_SEED", "4")  # both studies sample the same learning rate
    data = {**TINY, "seeds": [3, 4], "budget": 6, "objectives": ["quality", "instability"],
            "factors": {"model.init_args.d_norm": ["spectral"], "model.init_args.penalty": ["none"]}}
    results = {}
    for population in (True, False):
        name = f"pop_{population}".lower()
        config = write(tmp_path, {**data, "name": name, "population": population}, f"{name}.yaml")
        storage = f"sqlite:///{tmp_path / name}.db"
        assert main(["sweep", "--config", str(config), "--storage", storage, "--n-trials", "1",
                     "--runs-root", str(tmp_path / "runs"), "--threads", "1", "--no-progress"]) == 0
        (trial,) = optuna.load_study(study_name=name, storage=storage).trials
        runs = sorted(p.name for p in (tmp_path / "runs" / name / "trial_00000").iterdir() if p.is_dir())
        assert runs == (["seeds_3-4"] if population else ["seed_3", "seed_4"])
        results[population] = trial
    batched, single = results[True], results[False]
    assert batched.params == single.params
    assert batched.user_attrs["seed_status"] == single.user_attrs["seed_status"] == ["completed", "completed"]
    assert batched.user_attrs["seed_quality"] == pytest.approx(single.user_attrs["seed_quality"], rel=1e-4)
    assert batched.values == pytest.approx(single.values, rel=1e-4)


def test_a_replica_loads_as_the_ordinary_module_it_is(tmp_path, capsys):
    from ganbench.models import load_module

    pop = fit(tmp_path / "pop", "sngan", 5, "--model.init_args.population", "3", "--model.init_args.ema_decay", "0.9",
              steps=3)
    ckpt = tmp_path / "pop" / "checkpoints" / "last.ckpt"
    one = load_module(ckpt, replica=2)
    assert one.population == 1 and one.replica_seeds == [7]
    for key, value in one.state_dict().items():
        expected = pop["state_dict"][key]
        if key.startswith(("generator.", "discriminator.", "ema_generator.")) and value.dim() == expected.dim() - 1:
            expected = expected[2]
        torch.testing.assert_close(value, expected, rtol=0, atol=0)
    assert main(["sample", "--ckpt", str(ckpt), "--replica", "1", "--n", "16", "--out", str(tmp_path / "r1.png")]) == 0
    assert (tmp_path / "r1.png").is_file()
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(ckpt), "--n", "16", "--out", str(tmp_path / "x.png")]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "population of 3 replicas: pass --replica K with K in 0..2" in err[0]


def test_bench_population_reports_one_fit_and_the_population_in_the_same_run(capsys):
    args = ["bench", "--config", "configs/sngan.yaml", "--device", "cpu", "--steps", "4", "--warmup", "1",
            "--block", "2", "--population", "3", "--", "--data.dataset", "ring8", "--model.init_args.width", "8",
            "--model.init_args.latent_dim", "2", "--data.batch_size", "8", "--model.init_args.g_batch_size", "8",
            "--trainer.max_steps", "300"]
    assert main(args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    one, pop, summary = lines
    assert (one["population"], pop["population"], summary["population"]) == (1, 3, 3)
    assert summary["population_fit_g_it_per_s"] == pytest.approx(3 * pop["ganbench_g_it_per_s"], rel=1e-3)
    assert summary["speedup"] == pytest.approx(summary["population_fit_g_it_per_s"] / one["ganbench_g_it_per_s"],
                                               rel=1e-3)
    assert summary["fits_per_hour_one"] == pytest.approx(3600 * one["ganbench_g_it_per_s"] / 300, rel=1e-3)
    assert summary["interleaved_step_speedup"] == pytest.approx(
        summary["interleaved_step_population_fit_g_it_per_s"] / summary["interleaved_step_one_g_it_per_s"], rel=1e-3)
