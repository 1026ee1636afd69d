"""CUDA graphs without a GPU: every family and trick runs its graph step through the emulated graph
(record the ATen calls once, replay them on the recorded tensors) and must equal the eager fit; a
step that is not static is found in the warm-up and falls back to the eager step with the reason."""

import csv
import json
from pathlib import Path

import pytest
import torch

from ganbench.cli import main
from ganbench.models.base import GANModule
from ganbench.models.graph import EmulatedGraphs, GraphStep, OpRecorder, _capturable_here
from tests.test_population import IMAGES, TOY, noise_only
from tests.tiny import tiny_fit

GRAPH = ["--model.init_args.cuda_graph", "true"]


class CountingGraphs(EmulatedGraphs):
    """The emulated graphs, counting captures and replays over a test."""

    captures = 0
    replays = 0

    def capture(self, model, fn):
        type(self).captures += 1
        return super().capture(model, fn)

    def replay(self, graph) -> None:
        type(self).replays += 1
        super().replay(graph)


@pytest.fixture
def emulated(monkeypatch):
    monkeypatch.setattr(GANModule, "graph_backend", CountingGraphs)
    monkeypatch.setattr(CountingGraphs, "captures", 0)
    monkeypatch.setattr(CountingGraphs, "replays", 0)
    return CountingGraphs


def fit(root: Path, config: str, *args: str, steps: int = 12, base: list[str] = TOY) -> dict:
    """The last checkpoint of a fit of ``config`` from seed 3."""
    return tiny_fit(root, config, *args, steps=steps, seed=3, base=base).checkpoint()


def eager_fit(root: Path, config: str, *args: str, **kw) -> dict:
    """The eager fit with torch's capturable optimizers, as the graph step runs them (step counts and
    bias corrections as tensors: the same arithmetic, so the two fits can agree bit for bit)."""
    original = GANModule.configure_optimizers

    def capturable(self):
        opts = original(self)
        self.set_capturable(True, tuple(opts))
        return opts

    with pytest.MonkeyPatch.context() as mp, _capturable_here(torch.device("cpu")):
        mp.setattr(GANModule, "configure_optimizers", capturable)
        return fit(root, config, *args, **kw)


def assert_same_fit(graph: dict, eager: dict) -> None:
    """Every parameter and buffer equal, bit for bit."""
    compared = 0
    for key, value in eager["state_dict"].items():
        assert torch.equal(graph["state_dict"][key], value), key
        compared += 1
    assert compared >= 8


SCHEDULERS = ['{"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 3, "gamma": 0.5}}',
              '{"class_path": "torch.optim.lr_scheduler.ExponentialLR", "init_args": {"gamma": 0.9}}']

#: (config, arguments, phases: graphs captured); 12 G iterations, of which 2P + 1 warm up
CASES = {
    "gan": ("gan", [], 1),
    "sngan": ("sngan", [], 1),
    "wgan-clip-rmsprop": ("wgan", [], 1),
    "wgan_gp": ("wgan_gp", [], 1),
    "lsgan": ("lsgan", [], 1),
    "dragan": ("dragan", [], 1),
    "fgan": ("fgan", [], 1),
    "softmax_gan": ("softmax_gan", [], 1),
    "ebgan": ("ebgan", [], 1),
    "began-k-control": ("began", [], 1),
    "magan-margin-every-3": ("magan", ["--model.init_args.margin_every", "3"], 1),
    "ebgan-population-2": ("ebgan", ["--model.init_args.population", "2"], 1),  # per-replica pulling-away term
    "began-population-2-k-per-replica": ("began", ["--model.init_args.population", "2"], 1),
    "magan-population-2-margin-every-3": ("magan", ["--model.init_args.population", "2",
                                                    "--model.init_args.margin_every", "3"], 1),
    "loss_sensitive": ("loss_sensitive", [], 1),
    "mmdgan": ("mmdgan", [], 1),
    "unrolled-adam": ("unrolled", [], 1),
    "cgan": ("cgan", [], 1),
    "lazy-r1-every-3-n_critic-2": ("sngan", ["--model.init_args.penalty", "r1", "--model.init_args.penalty_every", "3",
                                             "--model.init_args.n_critic", "2"], 3),
    "gp-every-2": ("wgan_gp", ["--model.init_args.penalty_every", "2"], 2),
    "annealed-instance-noise": ("gan", ["--model.init_args.instance_noise", "0.3",
                                        "--model.init_args.instance_noise_steps", "10"], 1),
    "historical-averaging": ("gan", ["--model.init_args.historical_averaging", "0.01"], 1),
    "grad-clip": ("sngan", ["--model.init_args.grad_clip", "1.0"], 1),
    "lr-schedulers": ("gan", ["--model.init_args.g_scheduler", SCHEDULERS[0],
                              "--model.init_args.d_scheduler", SCHEDULERS[1]], 1),
    "ema-label-smoothing": ("gan", ["--model.init_args.ema_decay", "0.9",
                                    "--model.init_args.label_smoothing", "0.1"], 1),
    "virtual-batch-norm": ("gan", ["--model.init_args.g_norm", "virtual_batch"], 1),
    "lecam-zcr": ("gan", ["--model.init_args.lecam_weight", "0.1", "--model.init_args.zcr_dis", "1",
                          "--model.init_args.zcr_gen", "0.5"], 1),
    "feature-matching-minibatch-std": ("gan", ["--model.init_args.feature_matching", "1",
                                               "--model.init_args.minibatch", "std"], 1),
    "minibatch-discrimination-noise": ("gan", ["--model.init_args.minibatch", "discrimination",
                                               "--model.init_args.instance_noise", "0.1"], 1),
    "pacgan-pack-2": ("pacgan_ring", ["--model.init_args.pack", "2", "--model.init_args.d_width", "16"], 1),
    "images-ada": ("sngan", [*IMAGES, "--model.init_args.augment", "ada", "--model.init_args.ada_interval", "2",
                             "--model.init_args.ada_kimg", "0.01"], 1),
    "images-diffaugment-ema": ("sngan", [*IMAGES, "--model.init_args.augment", "diffaugment",
                                         "--model.init_args.ema_decay", "0.9"], 1),
    "images-dcgan": ("dcgan", IMAGES, 1),
    "images-wgan_gp-resnet-layer": ("wgan_gp", [*IMAGES, "--model.init_args.d_norm", "layer"], 1),
    "began-lazy-r1-two-graphs": ("began", ["--model.init_args.penalty", "r1", "--model.init_args.penalty_every", "2"],
                                 2),
    "population-3-per-replica-values": ("gan", ["--model.init_args.population", "3",
                                                "--model.init_args.population_overrides", json.dumps([
                                                    {"g_lr": 2e-4, "d_lr": 2e-4, "label_smoothing": 0.1,
                                                     "instance_noise": 0.1},
                                                    {"g_lr": 4e-4, "d_lr": 4e-4, "label_smoothing": 0.2,
                                                     "instance_noise": 0.2},
                                                    {"g_lr": 1e-4, "d_lr": 1e-4, "instance_noise": 0.3}])], 1),
    "population-gp-weights-lazy": ("wgan_gp", ["--model.init_args.population", "2", "--model.init_args.penalty_every",
                                               "2", "--model.init_args.population_overrides",
                                               json.dumps([{"penalty_weight": 1}, {"penalty_weight": 10}])], 2),
    "population-images-sngan-ema": ("sngan", [*IMAGES, "--model.init_args.population", "2",
                                              "--model.init_args.ema_decay", "0.9"], 1),
}


def metrics_csv(root: Path) -> list[list[str]]:
    """metrics.csv as written: the header and every row, each value the string the logger wrote."""
    with open(root / "metrics.csv", newline="") as f:
        return list(csv.reader(f))


#: case -> columns that only the whole log has: a penalty taken every 2nd D step, annealed instance
#: noise, ADA's p and r_t, LeCam and zCR, a population's per-replica penalties, BEGAN's energies
SAME_LOG_CASES = {
    "gp-every-2": ["train/d_loss", "train/penalty_gp", "train/critic_gap", "train/d_real"],
    "annealed-instance-noise": ["train/d_loss", "train/instance_noise_sigma"],
    "images-ada": ["train/d_loss", "train/ada_p", "train/ada_rt"],
    "lecam-zcr": ["train/d_loss", "train/lecam", "train/zcr_dis", "train/zcr_gen"],
    "population-gp-weights-lazy": ["train/d_loss/r1", "train/penalty_gp/r0", "train/penalty_gp/r1",
                                   "train/critic_gap/r1"],
    "began-k-control": ["train/d_loss", "train/energy_real", "train/energy_fake", "train/began_k"],
}


@pytest.mark.parametrize("case", list(SAME_LOG_CASES))
def test_graph_fit_logs_what_the_eager_fit_logs(tmp_path, emulated, capsys, case):
    """Logging every G iteration, the graph fit's metrics.csv equals the eager fit's: the same columns
    (losses, scores, critic gap, penalty, σ, ADA's values, a family's own, per replica in a
    population) and the same value in every row, warm-up and replays alike."""
    config, args, phases = CASES[case]
    every = ["--trainer.log_every_n_steps", "1"]
    eager_fit(tmp_path / "eager", config, *args, *every)
    fit(tmp_path / "graph", config, *args, *every, *GRAPH)
    assert "falls back" not in capsys.readouterr().err
    assert emulated.replays == 12 - (2 * phases + 1)
    eager, graph = metrics_csv(tmp_path / "eager"), metrics_csv(tmp_path / "graph")
    assert graph[0] == eager[0]
    assert set(SAME_LOG_CASES[case]) < set(eager[0])
    assert [r[eager[0].index("step")] for r in eager[1:]] == [str(s) for s in range(1, 13)]
    assert graph[1:] == eager[1:]


@pytest.mark.parametrize("case", list(CASES))
def test_graph_replays_equal_the_eager_fit(tmp_path, emulated, capsys, case):
    """12 G iterations through warm-up, capture and replays equal the 12 eager ones; nothing falls
    back, and a lazy penalty every k D steps gets one graph per phase."""
    config, args, phases = CASES[case]
    eager = eager_fit(tmp_path / "eager", config, *args)
    graph = fit(tmp_path / "graph", config, *args, *GRAPH)
    out = capsys.readouterr()
    assert "falls back" not in out.out + out.err
    # 2P + 1 eager warm-up iterations, then replays only, each phase captured on its first appearance
    assert (emulated.captures, emulated.replays) == (phases, 12 - (2 * phases + 1))
    assert_same_fit(graph, eager)
    assert metrics_csv(tmp_path / "graph") == metrics_csv(tmp_path / "eager")  # the last step's log


def test_top_k_has_one_graph_per_k(tmp_path, emulated, capsys):
    """Top-k's k shrinks by epoch (here every 4 G iterations): each k is a graph of its own shapes."""
    args = ["--model.init_args.top_k", "true", "--model.init_args.top_k_gamma", "0.5", "--data.n_toy_samples", "64"]
    eager = eager_fit(tmp_path / "eager", "gan", *args)
    graph = fit(tmp_path / "graph", "gan", *args, *GRAPH)
    assert "falls back" not in capsys.readouterr().err
    # k = 16, 8, 8 (floor ν·B = 8) over epochs of 4 iterations: warm-up 0–2, then graphs for 16 and 8
    assert emulated.captures == 2
    assert_same_fit(graph, eager)


def test_a_diverged_replica_gets_a_graph_that_keeps_it_frozen(tmp_path, emulated, capsys):
    """Replica 1 diverges (learning rate 1e10) and is frozen at the check of iteration 5: from then on
    a second graph, which puts its slices back after every update, replays; the fit equals the eager one."""
    args = ["--model.init_args.population", "2", "--model.init_args.check_every", "5",
            "--model.init_args.population_overrides", json.dumps([{"g_lr": 2e-4, "d_lr": 2e-4},
                                                                  {"g_lr": 1e10, "d_lr": 1e10}])]
    eager = eager_fit(tmp_path / "eager", "gan", *args)
    graph = fit(tmp_path / "graph", "gan", *args, *GRAPH)
    assert "falls back" not in capsys.readouterr().err
    summary = json.loads((tmp_path / "graph" / "summary.json").read_text())
    assert [r["status"] for r in summary["replicas"]] == ["completed", "diverged"]
    # 3 warm-up iterations, replays until the check at iteration 5 freezes replica 1; the new set of
    # frozen replicas runs one eager iteration, then its graph is captured and replayed to the end
    assert (emulated.captures, emulated.replays) == (2, 8)
    for key, value in eager["state_dict"].items():  # NaN where replica 1 blew up, in both
        assert torch.equal(graph["state_dict"][key].nan_to_num(), value.nan_to_num()), key


@pytest.mark.parametrize("config, args", [("cyclegan", ["--model.init_args.pool_size", "0"]), ("pix2pix", []),
                                          ("stackgan", ["--model.init_args.c_dim", "8",
                                                        "--model.init_args.stage1_resolution", "8"])],
                         ids=["cyclegan-no-pool", "pix2pix", "stackgan-resized-batch"])
def test_image_to_image_graphs_equal_the_eager_fit(tmp_path, emulated, capsys, config, args):
    """The image-to-image families (image pools, U-Net, patch D) and StackGAN, whose stage I resizes
    the real batch inside the step (so the resize is part of the graph, not done once at capture)."""
    from tests.test_img2img import FAST

    base = [*FAST, "--run.sample_every", "100", "--run.checkpoint_every", "100"]
    eager = eager_fit(tmp_path / "eager", config, *args, steps=10, base=base)
    graph = fit(tmp_path / "graph", config, *args, *GRAPH, steps=10, base=base)
    assert "falls back" not in capsys.readouterr().err
    assert emulated.replays == 10 - 3
    assert_same_fit(graph, eager)
    assert metrics_csv(tmp_path / "graph") == metrics_csv(tmp_path / "eager")  # logged every G iteration


# ------------------------------------------------------------------------- the check can fail
def _python_sigma_d_input(self, x):
    """d_input as it would be with σ a Python float: the annealed value baked into a graph."""
    x = self.augmented(x)
    sigma = self.noise_sigma()
    if sigma > 0:
        x = x + sigma * self.rng.randn_like(x)
    return self.packed(x)


NOISE = ["--model.init_args.instance_noise", "0.5", "--model.init_args.instance_noise_steps", "10"]


def test_a_value_the_host_changes_is_found_in_warm_up(tmp_path, emulated, capsys, monkeypatch):
    monkeypatch.setattr(GANModule, "d_input", _python_sigma_d_input)
    eager = fit(tmp_path / "eager", "gan", *NOISE)
    graph = fit(tmp_path / "graph", "gan", *NOISE, *GRAPH)
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "falls back" in x)
    # σ = 0.5·(1 - t/10): 0.45 at iteration 1, 0.4 at iteration 2
    assert "aten.mul.Tensor(tensor[16, 2], 0.45) in one iteration and aten.mul.Tensor(tensor[16, 2], 0.4)" in line
    assert emulated.captures == emulated.replays == 0
    # the fit went on eagerly: its warm-up ran torch's capturable optimizers, the rest the ordinary
    # ones (the same update but for float32 rounding)
    for key, value in eager["state_dict"].items():
        if value.is_floating_point() and "." in key and not noise_only(key, eager["state_dict"]):
            torch.testing.assert_close(graph["state_dict"][key], value, rtol=1e-5, atol=1e-6)


def test_the_emulated_graph_bakes_what_a_graph_bakes(tmp_path, emulated, monkeypatch):
    """Without the warm-up check the same step is captured, and its replays use the σ of the capture:
    the fit differs from the eager one, so the equality tests above can fail."""
    monkeypatch.setattr(GANModule, "d_input", _python_sigma_d_input)
    monkeypatch.setattr(GraphStep, "check", lambda self: None)
    eager = eager_fit(tmp_path / "eager", "gan", *NOISE)
    graph = fit(tmp_path / "graph", "gan", *NOISE, *GRAPH)
    assert emulated.replays == 9
    worst = max((graph["state_dict"][k] - v).abs().max().item() for k, v in eager["state_dict"].items()
                if v.is_floating_point())
    assert worst > 1e-4  # not rounding: the replays drew instance noise with the capture's σ


def test_a_host_read_in_the_step_falls_back_with_the_reason(tmp_path, emulated, capsys, monkeypatch):
    original = GANModule.d_loss

    def d_loss(self, batch):
        loss, logs = original(self, batch)
        if loss.item() > 1e9:  # a decision on the host
            raise AssertionError
        return loss, logs

    monkeypatch.setattr(GANModule, "d_loss", d_loss)
    fit(tmp_path / "graph", "gan", *GRAPH)
    err = capsys.readouterr().err
    assert ("model.cuda_graph falls back to the eager step because the step reads a device value on the host "
            "(aten._local_scalar_dense.default)") in err
    summary = json.loads((tmp_path / "graph" / "summary.json").read_text())
    assert summary["g_steps"] == 12 and summary["status"] == "completed"


# -------------------------------------------------------------------------------- the emulation
def test_emulated_replays_are_the_eager_iterations_bit_for_bit():
    """Capture (which runs nothing: what it wrote is undone) then 5 replays equal 5 eager iterations
    exactly: parameters, batch-norm statistics, Adam's state and the random stream."""

    def make():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                                  torch.nn.Linear(8, 1))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2, capturable=True)
        return net, opt, torch.Generator().manual_seed(1)

    def iteration(net, opt, gen):
        opt.zero_grad(set_to_none=True)
        x = torch.randn(16, 3, generator=gen)
        loss = net(x).pow(2).mean()
        loss.backward()
        opt.step()
        return loss.detach()

    class Model:  # what the capture asks of a module: its device and replica generators
        device = torch.device("cpu")

        def __init__(self, gen):
            self.rng = type("R", (), {"generators": [gen]})()

    with _capturable_here(torch.device("cpu")):
        net_a, opt_a, gen_a = make()
        eager = [iteration(net_a, opt_a, gen_a).clone() for _ in range(6)]
        net_b, opt_b, gen_b = make()
        iteration(net_b, opt_b, gen_b)  # warm-up: optimizer state exists before the capture
        before = [p.clone() for p in net_b.state_dict().values()]
        graph, loss = EmulatedGraphs().capture(Model(gen_b), lambda: iteration(net_b, opt_b, gen_b))
    assert all(torch.equal(a, b) for a, b in zip(before, net_b.state_dict().values()))  # nothing ran
    replayed = []
    for _ in range(5):
        graph.replay()
        replayed.append(loss.clone())
    assert torch.equal(torch.stack(replayed), torch.stack(eager[1:]))
    for a, b in zip(net_a.state_dict().values(), net_b.state_dict().values()):
        assert torch.equal(a, b)
    for p_a, p_b in zip(net_a.parameters(), net_b.parameters()):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt_a.state[p_a][key], opt_b.state[p_b][key])
    assert torch.equal(gen_a.get_state(), gen_b.get_state())


def test_recorder_sees_host_reads_and_scalars():
    x = torch.ones(3)
    with OpRecorder() as rec:
        y = x * 0.5
        float(y.sum())
    assert rec.host_reads == ["the step reads a device value on the host (aten._local_scalar_dense.default)"]
    assert ("aten.mul.Tensor", ((("tensor", (3,), torch.float32, "cpu"), 0.5), ())) in rec.signature


def test_bench_graph_mode_runs_both_loops_through_the_graph_executor(emulated, capsys):
    """``ganbench bench --modes graph`` on WGAN-GP (a penalty every 2 D steps: two phases): the
    Trainer's step and the plain reference loop both warm up, capture and replay, to the end."""
    code = main(["bench", "--config", "configs/wgan_gp.yaml", "--modes", "graph", "--device", "cpu", "--steps", "8",
                 "--warmup", "6", "--", "--data.dataset", "ring8", "--data.n_toy_samples", "1000",
                 "--model.init_args.width", "8", "--model.init_args.penalty_every", "2"])
    assert code == 0
    out, err = capsys.readouterr()
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert [x["mode"] for x in lines] == ["graph"] and lines[0]["ganbench_g_it_per_s"] > 0
    # the captures are not timed: --warmup 6 is raised to 3·2 + 1 = 7 (5 checked eager iterations, then
    # one capture per phase); each loop then replays from iteration 5 on: 7 + 8 - 5 = 10 replays
    assert lines[0]["warmup"] == 7 and "--warmup 6 raised to 7 for mode graph" in err
    assert (emulated.captures, emulated.replays) == (2 + 2, 10 + 10)


@pytest.mark.parametrize("config, args, reason", [
    ("cyclegan", [], "the image pool (model.pool_size > 0) keeps past fakes in a Python list and draws on the host"),
    ("gan", ["--model.init_args.g_optimizer", '{"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01}}',
             "--model.init_args.g_scheduler", SCHEDULERS[0]],
     "model.g_scheduler drives SGD (model.g_optimizer), whose learning rate cannot live on the device"),
], ids=["cyclegan-image-pool", "scheduler-on-sgd"])
def test_host_state_a_graph_would_freeze_falls_back_up_front(tmp_path, emulated, capsys, config, args, reason):
    """State the warm-up cannot see change (an image pool fills after 50 fakes; a StepLR moves every
    few hundred iterations) is refused before the first iteration, with the reason."""
    from tests.test_img2img import FAST

    base = [*FAST, "--run.sample_every", "100", "--run.checkpoint_every", "100"] if config == "cyclegan" else TOY
    fit(tmp_path / "graph", config, *args, *GRAPH, steps=4, base=base)
    err = capsys.readouterr().err
    assert f"model.cuda_graph falls back to the eager step because {reason}" in err
    assert emulated.captures == 0


def test_annealed_instance_noise_reaches_zero(tmp_path, monkeypatch):
    """σ anneals linearly to 0 over instance_noise_steps; after that D sees no noise at all."""
    seen = []
    original = GANModule.host_values

    def host_values(self):
        original(self)
        seen.append(float(self.device_values["noise_sigma"]))

    monkeypatch.setattr(GANModule, "host_values", host_values)
    fit(tmp_path / "run", "gan", "--model.init_args.instance_noise", "0.4", "--model.init_args.instance_noise_steps",
        "4", steps=6)
    assert seen == pytest.approx([0.4, 0.3, 0.2, 0.1, 0.0, 0.0])


def test_recorder_flags_copies_between_devices():
    with OpRecorder() as rec:
        torch.ones(2).to("meta")
    assert rec.host_reads == ["the step copies between devices (aten._to_copy.default, cpu and meta)"]
