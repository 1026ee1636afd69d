import os
import tempfile

# a fixed torch thread count (torch's own default, one per core): fits in a test compare results bit
# for bit, so ganbench's load-dependent choice (ganbench/callbacks/threads.py) stays off here
os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))

import pytest  # noqa: E402

os.environ.setdefault("WANDB_MODE", "offline")
# feature nets and reference statistics: a cache of the test session's own, so what a user has
# trained or cached under ~/.cache/ganbench never changes what the tests see
os.environ.setdefault("GANBENCH_CACHE", tempfile.mkdtemp(prefix="ganbench-test-cache-"))
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")

FMNIST = "/usr/share/datasets/fashion-mnist"


def have_fmnist() -> bool:
    try:
        from ganbench.data import GANDataModule

        GANDataModule("fashion_mnist", download=False)
        return True
    except Exception:
        return False


needs_fmnist = pytest.mark.skipif(
    not have_fmnist(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
