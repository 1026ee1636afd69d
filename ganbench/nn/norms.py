"""Normalization as a parameter of every network.

Two kinds of normalization exist and both are selected by one name:

* *weight re-parametrizations* (``spectral``, ``weight``) wrap a linear/conv layer
  (:func:`wrap`), using ``torch.nn.utils.parametrizations`` so the power-iteration vectors are
  buffers that are checkpointed and broadcast under DDP;
* *activation normalizations* (``batch``, ``layer``, ``instance``, ``virtual_batch``) are layers
  placed after a linear/conv layer (:func:`feature_norm`).

A network asks for both with the same name, so ``norm="spectral"`` gives spectrally normalized
convolutions and identity feature norms, and ``norm="batch"`` gives plain convolutions followed by
BatchNorm.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch.nn as nn
from torch.nn.utils import parametrizations

Norm = Literal["none", "batch", "layer", "instance", "spectral", "weight", "virtual_batch"]
NORMS: tuple[str, ...] = get_args(Norm)

#: norms that compute statistics over the batch: they make one sample's output depend on the
#: others, which is wrong for critics whose penalty is defined per sample (WGAN-GP, DRAGAN, R1).
BATCH_DEPENDENT: frozenset[str] = frozenset({"batch"})


def wrap(layer: nn.Module, norm: str) -> nn.Module:
    """Apply a weight re-parametrization to ``layer`` when ``norm`` is one; otherwise return it."""
    if norm == "spectral":
        return parametrizations.spectral_norm(layer)
    if norm == "weight":
        return parametrizations.weight_norm(layer)
    return layer


def feature_norm(norm: str, channels: int, spatial: bool = True) -> nn.Module:
    """The activation normalization named ``norm`` for ``channels`` features.

    ``spatial`` selects the 2-D (N, C, H, W) or the 1-D (N, C) version. ``layer`` normalizes each
    sample over all its features (GroupNorm with one group for feature maps); ``instance`` over each
    feature map of each sample and so exists only for feature maps.
    """
    if norm == "batch":
        return nn.BatchNorm2d(channels) if spatial else nn.BatchNorm1d(channels)
    if norm == "layer":
        return nn.GroupNorm(1, channels) if spatial else nn.LayerNorm(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True) if spatial else nn.Identity()
    if norm == "virtual_batch":
        from ganbench.nn.layers import VirtualBatchNorm

        return VirtualBatchNorm(channels)
    return nn.Identity()


def conv(norm: str, *args, **kwargs) -> nn.Module:
    """``nn.Conv2d(*args, **kwargs)`` with the weight re-parametrization of ``norm``."""
    return wrap(nn.Conv2d(*args, **kwargs), norm)


def deconv(norm: str, *args, **kwargs) -> nn.Module:
    """``nn.ConvTranspose2d(*args, **kwargs)`` with the weight re-parametrization of ``norm``."""
    return wrap(nn.ConvTranspose2d(*args, **kwargs), norm)


def linear(norm: str, *args, **kwargs) -> nn.Module:
    """``nn.Linear(*args, **kwargs)`` with the weight re-parametrization of ``norm``."""
    return wrap(nn.Linear(*args, **kwargs), norm)
