"""ganbench: a Lightning experiment framework for Generative Adversarial Networks."""

from __future__ import annotations

__version__ = "0.1.0"


class GanbenchError(Exception):
    """An error caused by the user's input (config, data, paths).

    The command line prints its message on one line and exits non-zero, without a traceback.
    Some libraries re-wrap exceptions raised inside them (jsonargparse reports a failed class
    instantiation as a ``ValueError`` of its own); the most recent GanbenchError is kept in
    :attr:`last` so the command line can still report it as it was raised.
    """

    last: GanbenchError | None = None

    def __init__(self, *args: object):
        super().__init__(*args)
        GanbenchError.last = self
