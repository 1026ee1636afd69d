"""Callbacks: everything that watches training without being part of the step."""

from ganbench.callbacks.log import LogStep, ParameterSummary, log_evaluation
from ganbench.callbacks.run import GANCheckpoint, GIterationBar, RunSummary, write_json_atomic
from ganbench.callbacks.samples import SampleGrid, save_grid, save_scatter

__all__ = ["GANCheckpoint", "GIterationBar", "LogStep", "ParameterSummary", "RunSummary", "log_evaluation",
           "SampleGrid", "save_grid", "save_scatter",
           "write_json_atomic"]
