"""PacGAN: packing for every family, the paper's toy protocol (data, maxout D, init) and its scores."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from ganbench import GanbenchError
from ganbench.data import GANDataModule, make_toy
from ganbench.metrics.toy import mode_metrics
from ganbench.models import FAMILIES
from ganbench.models.base import Batch
from ganbench.nn.common import normal_init
from ganbench.nn.mlp import Maxout, MaxoutDiscriminator
from ganbench.regularizers import gradient_penalty
from ganbench.tricks import pack, packed_shape

TOY = {"data_shape": (2,), "latent_dim": 2, "arch": "mlp", "width": 16}


# ------------------------------------------------------------------------------------------- pack()
@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_pack_concatenates_consecutive_samples(m):
    x = torch.arange(12 * 2, dtype=torch.float32).view(12, 2)
    p = pack(x, m)
    assert p.shape == (12 // m, 2 * m)
    for i in range(12 // m):
        assert torch.equal(p[i], torch.cat([x[i * m + j] for j in range(m)]))
    img = torch.randn(12, 3, 4, 4)
    q = pack(img, m)
    assert q.shape == (12 // m, 3 * m, 4, 4) and packed_shape((3, 4, 4), m) == (3 * m, 4, 4)
    for i in range(12 // m):  # channel-wise: pack i holds the channels of its m images in order
        assert torch.equal(q[i], torch.cat([img[i * m + j] for j in range(m)], dim=0))
    reps = torch.randn(5, 12, 2)  # a leading replica axis (population) keeps every replica's own packs
    assert torch.equal(pack(reps, m, batch_dim=1), torch.stack([pack(r, m) for r in reps]))


def test_pack_one_is_the_tensor_itself_and_bad_batches_are_one_line():
    x = torch.randn(6, 2)
    assert pack(x, 1) is x
    with pytest.raises(GanbenchError, match=r"^model.pack=4: a batch of 6 samples cannot be split into packs of 4$"):
        pack(x, 4)


# ----------------------------------------------------------------------------------- packed losses
@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_d_and_g_loss_score_packs(m):
    """D's loss is the objective on D(packs of real) and D(packs of m·B fresh fakes); G's likewise.
    m = 1 compares with D on the plain samples: bit for bit the step without packing."""
    torch.manual_seed(0)
    model = FAMILIES["gan"](**TOY, pack=m)
    assert model.discriminator.net[0].in_features == 2 * m
    real = torch.randn(12, 2)
    state = model.rng.state_dict()  # the module draws its latents from its own generator
    loss, logs = model.d_loss(Batch(real))
    model.rng.load_state_dict(state)
    with torch.no_grad():
        fake = model.generator(model.sample_latent(12))
    d = model.discriminator
    as_packs = (lambda x: x) if m == 1 else (lambda x: x.reshape(12 // m, 2 * m))
    d_real, d_fake = d(as_packs(real)), d(as_packs(fake))
    assert logs["d_real"].shape == (12 // m,)
    assert torch.equal(loss, model.objective.d(d_real, d_fake))
    state = model.rng.state_dict()
    g_loss, _ = model.g_loss(Batch(real))
    model.rng.load_state_dict(state)
    fake = model.generator(model.sample_latent(12))
    assert torch.equal(g_loss, model.objective.g(d(as_packs(fake)), None))


@pytest.mark.parametrize("family", ["dcgan", "wgan_gp"])
def test_image_families_pack_channel_wise(family):
    """An image D gets m·C input channels; its losses are those of D on the channel-wise packs."""
    torch.manual_seed(0)
    model = FAMILIES[family](data_shape=(1, 32, 32), width=8, pack=2)
    real = torch.rand(6, 1, 32, 32) * 2 - 1
    state = model.rng.state_dict()
    loss, _ = model.d_loss(Batch(real))
    model.rng.load_state_dict(state)
    with torch.no_grad():
        fake = model.generator(model.sample_latent(6))
    d = model.discriminator
    expected = model.objective.d(d(real.reshape(3, 2, 32, 32)), d(fake.reshape(3, 2, 32, 32)))
    if family == "wgan_gp":  # the same draws of the penalty's interpolation, on the packed pairs
        expected = expected + 10.0 * gradient_penalty(d, real.reshape(3, 2, 32, 32), fake.reshape(3, 2, 32, 32),
                                                      generator=model.rng.generators[0])
    assert torch.equal(loss, expected)


def test_penalty_is_taken_on_packed_inputs():
    torch.manual_seed(0)
    model = FAMILIES["wgan_gp"](**TOY, pack=2, d_norm="none", g_norm="none")
    real, fake = torch.randn(8, 2), torch.randn(8, 2)
    state = model.rng.state_dict()  # the penalty's interpolation draws from the module's generator
    value = model.penalty(real, fake, None)
    model.rng.load_state_dict(state)
    ref = gradient_penalty(model.discriminator, real.reshape(4, 4), fake.reshape(4, 4),
                           generator=model.rng.generators[0])
    assert torch.equal(value, 10.0 * ref)


@pytest.mark.parametrize("family", ["unrolled", "loss_sensitive", "mmdgan", "sngan"])
def test_other_vector_families_train_packed(family):
    """One G iteration with pack 3 through Lightning: every real D batch holds 3 × batch_size samples."""
    L.seed_everything(0, verbose=False)
    extra = {"unroll_steps": 1} if family == "unrolled" else {}
    model = FAMILIES[family](**TOY, pack=3, **extra)
    dm = GANDataModule("ring8", batch_size=4, n_toy_samples=200)
    seen = []
    model.split_batch = (lambda f: lambda batch: seen.append(len(batch[0])) or f(batch))(model.split_batch)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    assert seen == [4 * 3 * model.n_critic] and dm.train_batch_size == 4 * 3 * model.n_critic
    assert model.status == "running" and trainer.global_step == 1


@pytest.mark.parametrize("family, why", [
    ("ebgan", "its discriminator is an autoencoder"), ("began", "its discriminator is an autoencoder"),
    ("magan", "its discriminator is an autoencoder"), ("pix2pix", "scores (input, output) image pairs"),
    ("cgan", "needs an unconditional model")])
def test_families_that_cannot_pack_refuse_in_one_line(family, why):
    kw = {"data_shape": (1, 32, 32), "num_classes": 10}
    with pytest.raises(GanbenchError, match=r"^model.pack=2 ") as err:
        FAMILIES[family](**kw, pack=2)
    assert why in str(err.value) and "\n" not in str(err.value)
    FAMILIES[family](**kw, pack=1)  # and build without packing


def test_g_batch_size_must_fill_whole_packs():
    with pytest.raises(GanbenchError, match=r"^model.g_batch_size=10 must be a multiple of model.pack=3"):
        FAMILIES["gan"](**TOY, pack=3, g_batch_size=10)
    with pytest.raises(GanbenchError, match=r"^model.pack must be >= 1 \(1: no packing\), got 0$"):
        FAMILIES["gan"](**TOY, pack=0)


# -------------------------------------------------------------------------------- networks and init
@pytest.mark.parametrize("family, key", [("ebgan", "d_width"), ("began", "d_depth"), ("pix2pix", "g_depth")])
def test_network_options_a_family_does_not_use_are_refused(family, key):
    with pytest.raises(GanbenchError, match=rf"^model.{key}=3 is not used by the {family} family's own "):
        FAMILIES[family](data_shape=(1, 32, 32), num_classes=10, **{key: 3})


def test_maxout_is_the_max_of_its_pieces():
    layer = Maxout(1, 2, pieces=3)
    with torch.no_grad():  # unit 0: max(x, -x, 0) = |x|; unit 1: max(2x, x + 1, -5) (pieces are consecutive rows)
        layer.linear.weight.copy_(torch.tensor([[1.0], [-1.0], [0.0], [2.0], [1.0], [0.0]]))
        layer.linear.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, -5.0]))
    x = torch.tensor([[-2.0], [0.5], [3.0]])
    expected = torch.tensor([[2.0, -1.0], [0.5, 1.5], [3.0, 6.0]])
    assert torch.equal(layer(x), expected)


def test_maxout_discriminator_of_the_paper():
    d = MaxoutDiscriminator(shape=(2 * 4,), width=200, depth=3, pieces=5)
    shapes = [tuple(p.shape) for p in d.parameters()]
    assert shapes == [(1000, 8), (1000,), (1000, 200), (1000,), (1000, 200), (1000,), (1, 200), (1,)]
    assert d(torch.randn(7, 8)).shape == (7,)
    model = FAMILIES["gan"](**{**TOY, "width": 400}, g_depth=4, g_norm="batch", d_arch="maxout", d_width=200,
                            d_depth=3, init_std=0.02, pack=4)
    assert [tuple(p.shape) for p in model.discriminator.parameters()] == shapes
    g_linear = [p.shape for n, p in model.generator.named_parameters() if n.endswith("weight") and p.dim() == 2]
    assert g_linear == [(400, 2), (400, 400), (400, 400), (400, 400), (2, 400)]


def test_normal_init_draws_weights_with_the_given_std():
    torch.manual_seed(0)
    net = FAMILIES["gan"](**{**TOY, "width": 400}, g_depth=4, g_norm="batch", d_norm="spectral").generator
    normal_init(net, 0.02)
    w = torch.cat([m.weight.detach().flatten() for m in net.modules() if isinstance(m, torch.nn.Linear)])
    assert abs(float(w.std()) - 0.02) < 2e-4 and abs(float(w.mean())) < 2e-4  # 482 400 draws: SE 2.9e-5
    assert all(float(m.bias.abs().max()) == 0 for m in net.modules() if isinstance(m, torch.nn.Linear))
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in net.modules()
               if isinstance(m, torch.nn.BatchNorm1d))
    sn = normal_init(FAMILIES["gan"](**TOY, d_norm="spectral").discriminator, 0.5)
    orig = sn.net[0].parametrizations.weight.original  # a spectrally normalized layer: its raw weight
    assert 0.2 < float(orig.std()) < 1.0


# --------------------------------------------------------------------------------------- data sets
def test_ring8_pacgan_moments():
    toy = make_toy("ring8_pacgan")
    k = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    assert torch.allclose(toy.centers.double(), torch.stack([k.cos(), k.sin()], 1), atol=1e-7) and toy.std == 0.01
    x, mode = toy.sample(100_000, torch.Generator().manual_seed(0))
    # mixture: mean 0, per-axis variance r²/2 + σ² = 0.5001; SE of the mean 0.0022
    assert float(x.mean(0).abs().max()) < 0.01
    assert torch.allclose(x.var(0), torch.tensor([0.5001, 0.5001]), atol=0.01)
    # distance to the own centre / σ: Rayleigh with E[d²] = 2σ²
    d2 = ((x - toy.centers[mode]) ** 2).sum(1) / 0.01**2
    assert abs(float(d2.mean()) - 2.0) < 0.03
    freq = torch.bincount(mode, minlength=8) / 100_000.0  # each 1/8, SE 0.001
    assert float((freq - 0.125).abs().max()) < 0.005


def test_grid25_is_the_pacgan_grid():
    toy = make_toy("grid25")
    axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    assert torch.equal(toy.centers, torch.cartesian_prod(axis, axis)) and toy.std == 0.05
    x, _ = toy.sample(100_000, torch.Generator().manual_seed(0))
    # per-axis variance of a uniform choice of {-4..4 step 2} is 8, plus σ² = 0.0025
    assert torch.allclose(x.var(0), torch.tensor([8.0025, 8.0025]), rtol=0.02)


def test_the_training_set_is_fixed_and_iterated_in_epochs():
    dm = GANDataModule("ring8_pacgan", batch_size=100, n_toy_samples=1000, seed=3)
    dm.setup()
    x, _ = dm._split("train")
    assert x.shape == (1000, 2)
    loader = dm.train_dataloader()
    epoch = torch.cat([b[0] for b in loader])
    assert len(list(loader)) == 10  # 1000 samples in batches of 100: one epoch
    assert torch.equal(epoch.sort(0).values, x.sort(0).values)  # each sample once per epoch


# ----------------------------------------------------------------------------------------- scoring
def test_scores_against_a_hand_computed_case():
    toy = make_toy("ring8_pacgan")
    c, s = toy.centers, 0.01
    samples = torch.stack([
        c[0], c[0] + torch.tensor([2.9 * s, 0.0]), c[0] + torch.tensor([0.0, -2.0 * s]),  # 3 on mode 0
        c[3] + torch.tensor([2.0 * s, 2.0 * s]),  # distance 2.83σ: mode 3
        c[5] + torch.tensor([3.1 * s, 0.0]),  # 3.1σ: not high quality
        torch.tensor([0.0, 0.0]),  # far from every mode
    ])
    m = mode_metrics(samples, c, s)
    assert m["modes_covered"] == 2 and m["high_quality_frac"] == 4 / 6
    p = torch.tensor([0.75, 0.25], dtype=torch.float64)  # histogram of the 4 high-quality samples
    rkl = float((p * (p * 8).log()).sum())  # = log 8 - H(p) = 0.75 log 6 + 0.25 log 2
    assert m["reverse_kl"] == pytest.approx(rkl, rel=1e-12)
    assert m["reverse_kl"] == pytest.approx(math.log(8) + 0.75 * math.log(0.75) + 0.25 * math.log(0.25), rel=1e-12)
    assert abs(m["kl_to_uniform"] - m["reverse_kl"]) < 1e-7  # kl_modes: the same up to its smoothing
    uniform = c.repeat(3, 1)  # every mode equally often: 0
    assert mode_metrics(uniform, c, s)["reverse_kl"] == pytest.approx(0.0, abs=1e-15)
    one = c[:1].repeat(5, 1)  # one mode: log K
    assert mode_metrics(one, c, s)["reverse_kl"] == pytest.approx(math.log(8), rel=1e-12)
    assert math.isnan(mode_metrics(torch.zeros(3, 2), c, s)["reverse_kl"])  # no high-quality sample


def test_reproduction_statistics():
    """The table's mean ± standard error and its 'within 2 combined standard errors' verdict."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reproduce_pacgan", "scripts/reproduce_pacgan.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mean, se = mod.mean_se([1.0, 2.0, 3.0, math.nan])  # NaN (no high-quality sample) is left out
    assert mean == 2.0 and se == pytest.approx(1 / math.sqrt(3), rel=1e-12)
    assert math.isnan(mod.mean_se([4.0])[1])
    assert mod.agrees((6.0, 0.3), (6.3, 0.5)) is True  # |0.3| <= 2 √(0.09 + 0.25) = 1.166
    assert mod.agrees((5.0, 0.1), (6.3, 0.5)) is False  # 1.3 > 2 √(0.01 + 0.25) = 1.020
    assert mod.agrees((5.0, math.nan), (6.3, 0.5)) is None
    assert mod.PUBLISHED[("grid", 4)] == ((24.8, 0.2), (93.6, 0.6), (0.04, 0.01))


def test_reproduction_population_scores_each_seed_as_its_own_fit():
    """``--population``: the row's seeds trained as one batched fit score each seed as the ordinary
    fit with that seed does (the same curve of modes, high-quality fraction and reverse KL)."""
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("reproduce_pacgan", "scripts/reproduce_pacgan.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = argparse.Namespace(steps=6, eval_every=3, samples=300, threads=1, accelerator="cpu", seeds=[3, 4])
    pop = mod.fit_one(("ring", "gan", 2, [3, 4], args))
    one = mod.fit_one(("ring", "gan", 2, 4, args))
    assert [f["seed"] for f in pop] == [3, 4] and [f["population"] for f in pop] == [2, 2]
    assert [c["step"] for c in pop[1]["curve"]] == [3, 6]
    for a, b in zip(pop[1]["curve"], one[0]["curve"]):
        assert a["modes"] == b["modes"] and a["hq"] == pytest.approx(b["hq"], abs=2 / 300)
    assert pop[0]["samples"] is not None and pop[1]["samples"] is None


def test_reproduction_config_arguments_reach_every_fit():
    """Arguments after ``--`` override the config after the family's own defaults: LSGAN's loss with
    the protocol's unnormalized D instead of LSGAN's batch-norm D."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reproduce_pacgan", "scripts/reproduce_pacgan.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.build("ring", "lsgan", 1, 0, 2)[0].cfg.d_norm == "batch"
    model, _ = mod.build("ring", "lsgan", 1, 0, 2, config_args=["--model.init_args.d_norm", "none"])
    assert model.cfg.d_norm == "none" and model.cfg.loss == "ls"


def test_reproduction_refuses_a_row_that_cannot_build_before_training(capsys, tmp_path):
    """A family whose own discriminator replaces the protocol's maxout D is one line and exit 2, before
    any fit runs and before anything is written."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reproduce_pacgan", "scripts/reproduce_pacgan.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "pacgan.md"
    with pytest.raises(SystemExit) as exit_info:
        mod.main(["--data", "ring", "--families", "gan", "ebgan", "--packs", "1", "--seeds", "0", "--steps", "2",
                  "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("reproduce_pacgan.py: error: ring ebgan: model.d_width=200 is not used by the ebgan "
                       "family's own discriminator; leave it unset")
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_reproduction_keeps_finished_fits_across_an_interruption(capfd, tmp_path):
    """An invocation stopped after its first fit leaves that fit on disk and no report; the same
    command again trains only the other fit, reports both, and removes the file of finished fits.
    A line cut short by the interruption is ignored. The console shows the script's lines only."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("reproduce_pacgan", "scripts/reproduce_pacgan.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "pacgan.md"
    argv = ["--data", "ring", "--packs", "1", "2", "--seeds", "0", "--steps", "2", "--eval-every", "1",
            "--samples", "100", "--accelerator", "cpu", "--out", str(out)]
    real, trained = mod.fit_one, []

    def stop_after_one(job):
        if trained:
            raise KeyboardInterrupt
        trained.append(job[2])
        return real(job)

    mod.fit_one = stop_after_one
    with pytest.raises(KeyboardInterrupt):
        mod.main(argv)
    finished = tmp_path / ".pacgan.finished.jsonl"
    first = [json.loads(line) for line in finished.read_text().splitlines()]
    assert [(f["pack"], f["seed"]) for f in first] == [(1, 0)] and not out.exists()
    with open(finished, "a") as f:
        f.write('{"data": "ring", "family": "gan", "pack": 2, "se')  # the interrupted write of the next fit

    def count(job):
        trained.append(job[2])
        return real(job)

    mod.fit_one, trained = count, []
    assert mod.main(argv) == 0
    assert trained == [2]  # pack 1 came from the file
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["reused_fits"] == 1 and sorted(f["pack"] for f in record["fits"]) == [1, 2]
    assert [f["status"] for f in record["fits"]] == ["completed", "completed"]
    assert "stopped early" not in out.read_text()  # only a fit that did not complete is listed
    assert next(f for f in record["fits"] if f["pack"] == 1)["curve"] == first[0]["curve"]
    assert "PacGAN2" in out.read_text() and "GAN" in out.read_text() and not finished.exists()
    assert "1 finished before, read from" in capfd.readouterr().out


def test_reproduction_console_has_the_scripts_lines_only(tmp_path):
    """Building the fits through the CLI in a process with its own arguments, Lightning would print
    its banners, seeds and adverts and warn about the arguments; the script's own lines are all there is."""
    import subprocess
    import sys

    out = tmp_path / "pacgan.md"
    run = subprocess.run([sys.executable, "scripts/reproduce_pacgan.py", "--data", "ring", "--packs", "1", "--seeds",
                          "0", "--steps", "1", "--eval-every", "1", "--samples", "50", "--accelerator", "cpu",
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert run.stdout.splitlines() == [
        "1 fits of 1 G iterations", run.stdout.splitlines()[1],
        run.stdout.splitlines()[2], f"wrote {out}, {out.with_suffix('.json')}, {tmp_path / 'pacgan_samples.png'}"]
    assert run.stdout.splitlines()[1].startswith("ring GAN seed 0: step 1/1 modes ")
    assert run.stdout.splitlines()[2].startswith("[1/1] ring GAN seed 0: ")
