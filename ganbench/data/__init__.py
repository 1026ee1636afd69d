"""Data sets for GAN training: images in [-1, 1] and 2-D toy mixtures, behind one ``GANDataModule``."""

from ganbench.data.catalog import DATASETS, DatasetInfo
from ganbench.data.datamodule import DatasetName, GANDataModule, to_resolution
from ganbench.data.loader import TensorLoader
from ganbench.data.sources import read_idx
from ganbench.data.toy import SwissRoll, ToyMixture, grid25, make_toy, ring8

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetName",
    "GANDataModule",
    "SwissRoll",
    "TensorLoader",
    "ToyMixture",
    "grid25",
    "make_toy",
    "read_idx",
    "ring8",
    "to_resolution",
]
