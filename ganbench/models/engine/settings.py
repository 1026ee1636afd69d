"""The run's settings: one read-only object built once, when the module is constructed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from lightning.pytorch.utilities.parsing import AttributeDict


class Settings(AttributeDict):
    """Every setting of a fit — the base's arguments and the family's own (BEGAN's gamma, CycleGAN's
    pool_size) — read as ``cfg.key`` or ``cfg["key"]``. Built once from the constructor's arguments
    (which LightningCLI has already checked against their annotations) and read-only afterwards, so
    every part of a step reads the same values: a value that changes in training is state, not a
    setting. Copies (``copy``, ``deepcopy``, pickling) are read-only too."""

    def __init__(self, values: Mapping[str, Any] = ()) -> None:
        dict.__init__(self, values)

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("the model's settings (cfg) are read-only; pass the value to the model's constructor "
                        "(a --model.init_args key) instead")

    __setitem__ = __delitem__ = __setattr__ = __delattr__ = _read_only
    update = pop = popitem = setdefault = clear = _read_only  # type: ignore[assignment]

    def __ior__(self, other: Any) -> NoReturn:
        self._read_only()

    def __reduce__(self) -> tuple[type, tuple[dict[str, Any]]]:
        return type(self), (dict(self),)

    def __copy__(self) -> Settings:
        return self

    def __deepcopy__(self, memo: dict) -> Settings:
        import copy

        return type(self)(copy.deepcopy(dict(self), memo))
