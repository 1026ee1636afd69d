"""What a checkpoint holds besides the state dict: the family, D steps, the replicas' seeds, random
streams and divergence, and the historical averages."""

from __future__ import annotations

from typing import Any, ClassVar

from ganbench import GanbenchError


class CheckpointState:
    """Checkpoint state of :class:`~ganbench.models.base.GANModule`."""

    #: a family's entries of ``checkpoint["ganbench"]`` kept one per replica in a population (a list, or a
    #: dict of lists), so that replica k loads as an ordinary fit with entry k (:func:`ganbench.models.load_module`)
    replica_entries: ClassVar[tuple[str, ...]] = ()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ganbench"] = {
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "family": self.family,
            "d_steps": self._d_steps,
            "population": self.population,
            "replica_seeds": self.replica_seeds,
            "rng": self.rng.state_dict(),
            "alive": self.alive,
            "replica_divergence": self.replica_divergence,
            "hist_g": self.hist_g.state_dict() if self.hist_g is not None else None,
            "hist_d": self.hist_d.state_dict() if self.hist_d is not None else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("ganbench", {})
        self._d_steps = state.get("d_steps", 0)
        if state.get("population", 1) != self.population:
            raise GanbenchError(f"the checkpoint holds a population of {state.get('population', 1)} replicas; "
                                f"model.population is {self.population}")
        if "rng" in state:
            self._rng_state, self._rng = state["rng"], None
            self.replica_seeds = list(state.get("replica_seeds", self.replica_seeds))
            self.alive = list(state.get("alive", self.alive))
            self.replica_divergence = list(state.get("replica_divergence", self.replica_divergence))
        for name in ("hist_g", "hist_d"):
            if getattr(self, name) is not None and state.get(name) is not None:
                getattr(self, name).load_state_dict(state[name])
