"""ganbench: a Lightning experiment framework for Generative Adversarial Networks."""

__version__ = "0.1.0"


class GanbenchError(Exception):
    """An error caused by the user's input (config, data, paths).

    The command line prints its message on one line and exits non-zero, without a traceback.
    """
