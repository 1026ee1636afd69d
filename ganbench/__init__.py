"""ganbench: a Lightning experiment framework for Generative Adversarial Networks."""

from __future__ import annotations

from collections.abc import Iterator

__version__ = "0.1.0"


class GanbenchError(Exception):
    """An error caused by the user's input (config, data, paths) or by the file system.

    The command line prints its message on one line and exits non-zero, without a traceback.
    Some libraries re-wrap exceptions raised inside them (jsonargparse reports a failed class
    instantiation as a ``ValueError`` raised ``from`` the original); :func:`find_user_error` follows
    that chain of causes back to the GanbenchError.
    """


def exception_chain(err: BaseException | None) -> Iterator[BaseException]:
    """``err`` and the exceptions it was raised from: its ``__cause__``, or its ``__context__`` unless
    suppressed (``raise … from None``)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        yield err
        seen.add(id(err))
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)


def find_user_error(err: BaseException | None) -> GanbenchError | None:
    """The GanbenchError that ``err`` is or was raised from, or None: an error never stands for an
    unrelated one raised (and handled) earlier."""
    return next((e for e in exception_chain(err) if isinstance(e, GanbenchError)), None)
