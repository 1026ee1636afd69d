"""The rooms of :class:`~ganbench.models.base.GANModule`, one concern each (see docs/architecture.md).

- :mod:`.players`: building G and D (one per replica), sampling, virtual-batch-norm references, device placement;
- :mod:`.d_input`: what D sees (augmentation, instance noise, packing) and the values the host writes;
- :mod:`.objective`: the penalty, D's and G's losses, the regularizers of D's scores, top-k;
- :mod:`.optimizers`: optimizers (per replica when a population overrides them) and schedulers;
- :mod:`.executors`: the eager, direct and graph ways of running :meth:`GANModule.iteration`;
- :mod:`.finish`: what follows every iteration on every executor (counting, ``after_g_step``, the watch, the log);
- :mod:`.divergence`: the divergence watch and the freezing of diverged replicas;
- :mod:`.population`: seeds, per-replica values, random streams, per-replica losses and logs;
- :mod:`.checks`: settings, levers and batch-norm counts, each checked with one line naming the key;
- :mod:`.checkpoint`: what a checkpoint holds besides the state dict.

Each room is a class :class:`GANModule` inherits: a family overrides any of its methods as before.
"""
