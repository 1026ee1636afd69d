"""``ganbench bench``: generator iterations per second of the ganbench training step against a
plain-PyTorch loop of the same networks, optimizers, losses and batch sizes, in the same process.

    ganbench bench --config configs/sngan.yaml [--steps 300] [--warmup 20] [--device cuda]

Both loops run on random data already on the device (throughput does not depend on content) and
are timed after ``warmup`` iterations with a device synchronization at both ends. One JSON line per
loop and one with the ratio ``ganbench / plain`` are printed. Extra arguments after ``--`` go to the
config parser, e.g. ``-- --model.init_args.width 32``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from typing import Any

import torch

from ganbench import GanbenchError


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(config: str, overrides: list[str]):
    """The model and data module exactly as ``ganbench fit --config`` would build them."""
    from ganbench.cli import GanbenchCLI

    cli = GanbenchCLI(args=["--config", config, "--run.wandb", "false", *overrides], run=False)
    return cli.model, cli.datamodule


def random_batches(model, dm, device: torch.device, n: int = 4) -> torch.Tensor:
    per_step = dm.batch_size * model.n_critic
    return torch.randn(n * per_step, *model.data_shape, device=device).clamp_(-1, 1)


def plain_loop(model, data: torch.Tensor, steps: int, warmup: int, batch_size: int, device: torch.device) -> float:
    """The hand-written reference: n_critic D updates then one G update, nothing else."""
    g, d = copy.deepcopy(model.generator).to(device), copy.deepcopy(model.discriminator).to(device)
    g_opt = model._make_optimizer(model.optimizer_factories[0], g.parameters())
    d_opt = model._make_optimizer(model.optimizer_factories[1], d.parameters())
    obj, n_critic, nz = model.objective, model.n_critic, model.latent_dim
    g_bs = model.hparams.g_batch_size or batch_size
    chunks = data.split(batch_size)

    def iteration(i: int) -> None:
        for k in range(n_critic):
            x = chunks[(i * n_critic + k) % len(chunks)]
            with torch.no_grad():
                fake = g(torch.randn(batch_size, nz, device=device))
            ld = obj.d(d(x), d(fake))
            d_opt.zero_grad(set_to_none=True)
            ld.backward()
            d_opt.step()
        lg = obj.g(d(g(torch.randn(g_bs, nz, device=device))))
        g_opt.zero_grad(set_to_none=True)
        lg.backward()
        g_opt.step()

    for i in range(warmup):
        iteration(i)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        iteration(i)
    _sync(device)
    return steps / (time.perf_counter() - t0)


def ganbench_loop(model, data: torch.Tensor, steps: int, warmup: int, batch_size: int, device: torch.device) -> float:
    """The real ganbench path: the family module inside a Lightning Trainer (manual optimization)."""
    import lightning as L

    from ganbench.data import TensorLoader

    class Timer(L.Callback):
        t0 = dt = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == warmup:
                _sync(device)
                self.t0 = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            _sync(device)
            self.dt = time.perf_counter() - self.t0

    labels = torch.zeros(len(data), dtype=torch.long, device=device)
    loader = TensorLoader(data, labels, batch_size=batch_size * model.n_critic, seed=0)
    timer = Timer()
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=warmup + steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
        max_epochs=-1,
    )
    trainer.fit(model, train_dataloaders=loader)
    return steps / timer.dt


def main(argv: list[str]) -> int:
    if "--" in argv:
        i = argv.index("--")
        argv, overrides = argv[:i], argv[i + 1 :]
    else:
        overrides = []
    ap = argparse.ArgumentParser(prog="ganbench bench", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls/convolutions (both loops)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GanbenchError("--device cuda was asked for but torch sees no CUDA device")
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    model, dm = build(args.config, overrides)
    torch.manual_seed(0)
    data = random_batches(model, dm, device)
    results: dict[str, Any] = {
        "config": args.config,
        "device": str(torch.cuda.get_device_name(device)) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "batch_size": dm.batch_size,
        "n_critic": model.n_critic,
        "steps": args.steps,
    }
    plain = plain_loop(model, data, args.steps, args.warmup, dm.batch_size, device)
    print(json.dumps({"loop": "plain", "g_it_per_s": round(plain, 3)}), flush=True)
    ours = ganbench_loop(model, data, args.steps, args.warmup, dm.batch_size, device)
    print(json.dumps({"loop": "ganbench_eager", "g_it_per_s": round(ours, 3)}), flush=True)
    results.update(plain_g_it_per_s=round(plain, 3), ganbench_g_it_per_s=round(ours, 3), ratio=round(ours / plain, 3))
    print(json.dumps(results), flush=True)
    return 0
