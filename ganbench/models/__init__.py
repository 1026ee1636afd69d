"""GAN families: one LightningModule each.

Every module in this package is imported here, and every subclass of :class:`GANModule` that sets
its own ``family`` name is registered in :data:`FAMILIES` — adding a family is adding a file.
"""

from __future__ import annotations

import importlib
import io
import pkgutil
from pathlib import Path

import torch

from ganbench import GanbenchError
from ganbench.models.base import GANModule

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        _module = importlib.import_module(f"{__name__}.{_info.name}")
        for _name in getattr(_module, "__all__", []):
            globals()[_name] = getattr(_module, _name)


def _families() -> dict[str, type[GANModule]]:
    found: dict[str, type[GANModule]] = {}
    stack: list[type[GANModule]] = list(GANModule.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if "family" in vars(cls) and cls.__module__.startswith(__name__ + "."):
            found[cls.family] = cls
    return dict(sorted(found.items()))


#: family name → LightningModule class
FAMILIES: dict[str, type[GANModule]] = _families()


def load_module(ckpt_path: str | Path, map_location: str | torch.device = "cpu",
                replica: int | None = None) -> GANModule:
    """Load any family's checkpoint written by ganbench. A population's checkpoint needs ``replica``:
    that replica is loaded as the ordinary (``population 1``) module it is."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise GanbenchError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # truncated or not a checkpoint
        raise GanbenchError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err})") from None
    info = ckpt.get("ganbench") if isinstance(ckpt, dict) else None
    if not info:
        raise GanbenchError(f"checkpoint {path} was not written by ganbench (no 'ganbench' entry)")
    module_name, _, cls_name = info["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    population = int(info.get("population", 1))
    if population == 1:
        if replica not in (None, 0):
            raise GanbenchError(f"--replica {replica}: checkpoint {path} holds one fit, not a population")
        return cls.load_from_checkpoint(path, map_location=map_location)
    if replica is None or not 0 <= replica < population:
        raise GanbenchError(f"checkpoint {path} holds a population of {population} replicas: pass --replica K "
                            f"with K in 0..{population - 1}" + ("" if replica is None else f" (got {replica})"))
    return cls.load_from_checkpoint(_replica_checkpoint(ckpt, replica), map_location=map_location)


def _replica_checkpoint(ckpt: dict, k: int) -> io.BytesIO:
    """Replica ``k`` of a population checkpoint as the checkpoint of the ordinary fit it is: every
    stacked tensor's slice ``k`` under the same key, ``population 1``, its own random stream."""
    from ganbench.nn.population import unstack_state

    one = dict(ckpt)
    one["state_dict"] = unstack_state(ckpt["state_dict"], k)
    one["hyper_parameters"] = {**ckpt.get("hyper_parameters", {}), "population": 1, "population_overrides": None,
                               "population_seeds": None}
    info = dict(ckpt["ganbench"])
    info.update(population=1, replica_seeds=[info["replica_seeds"][k]], rng=[info["rng"][k]],
                alive=[info["alive"][k]], replica_divergence=[info["replica_divergence"][k]])
    for key in info.pop("per_replica", ()):  # a family's own entries, one per replica (CycleGAN's pools)
        info[key] = info[key][k]
    one["ganbench"] = info
    buffer = io.BytesIO()
    torch.save(one, buffer)
    buffer.seek(0)
    return buffer
