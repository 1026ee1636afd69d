"""Throughput of the fd_fmnist measurement path: uint8 quantisation, feature net, streaming FD update.

    .venv/bin/python scripts/bench_features.py [--n 10000] [--batch-size 500] [--features fmnist]

Prints one JSON line with samples/s. Uses real Fashion-MNIST test images at the data module's
resolution (32 by default) when available, else random images of that shape.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from ganbench.metrics import load_feature_net, streaming_fd


def images(n: int, resolution: int) -> tuple[torch.Tensor, str]:
    try:
        from ganbench.data import GANDataModule

        dm = GANDataModule("fashion_mnist", resolution=resolution, download=False)
        return dm.real_samples(n, split="test"), "fashion_mnist/test"
    except Exception:
        return torch.rand(n, 1, resolution, resolution) * 2 - 1, "random"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--features", default="fmnist")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    net = load_feature_net(args.features, device=args.device)
    x, source = images(args.n, args.resolution)
    fd = streaming_fd(net.num_features).to(args.device)
    net.extract(x[: args.batch_size])  # warm-up
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for chunk in x.split(args.batch_size):
        fd.update(net.extract(chunk.to(args.device))["features"], real=False)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "features": args.features,
                "n": args.n,
                "batch_size": args.batch_size,
                "resolution": args.resolution,
                "images": source,
                "device": args.device,
                "threads": torch.get_num_threads(),
                "cpus": os.cpu_count(),
                "machine": platform.processor() or platform.machine(),
                "seconds": round(seconds, 3),
                "samples_per_s": round(args.n / seconds, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
