"""GAN families: one LightningModule each, registered in :data:`FAMILIES`."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from ganbench import GanbenchError
from ganbench.models.base import GANModule
from ganbench.models.sngan import SNGAN

#: family name → LightningModule class
FAMILIES: dict[str, type[GANModule]] = {cls.family: cls for cls in (SNGAN,)}


def load_module(ckpt_path: str | Path, map_location: str | torch.device = "cpu") -> GANModule:
    """Load any family's checkpoint written by ganbench."""
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
    return cls.load_from_checkpoint(path, map_location=map_location)


__all__ = ["FAMILIES", "GANModule", "SNGAN", "load_module"]
