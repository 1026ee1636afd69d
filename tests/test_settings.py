"""The model's settings are one read-only object built once (``GANModule.cfg``)."""

import copy
import pickle

import pytest
import torch

from ganbench.models import WGAN, GANModule


def test_settings_are_read_only_and_survive_copies():
    m = GANModule(data_shape=(2,), latent_dim=3, width=8, n_critic=2)
    for write in (lambda c: setattr(c, "n_critic", 5), lambda c: c.__setitem__("n_critic", 5),
                  lambda c: c.update(n_critic=5), lambda c: c.pop("n_critic"), lambda c: delattr(c, "loss"),
                  lambda c: c.setdefault("new", 1), lambda c: c.clear()):
        with pytest.raises(TypeError, match="read-only"):
            write(m.cfg)
    assert m.cfg.n_critic == m.cfg["n_critic"] == m.n_critic == 2 and m.latent_dim == 3 and m.population == 1
    for other in (copy.deepcopy(m).cfg, pickle.loads(pickle.dumps(m.cfg)), copy.copy(m.cfg)):
        assert other == m.cfg and type(other) is type(m.cfg)
        with pytest.raises(TypeError, match="read-only"):
            other.n_critic = 5


def test_a_family_reads_its_own_setting_from_cfg():
    """WGAN's clipping bound is read from cfg where the critic update clips, not from a copy."""
    torch.manual_seed(0)
    m = WGAN(data_shape=(2,), latent_dim=2, width=8, clip=0.003)
    assert m.cfg.clip == 0.003 and "clip" not in vars(m)
    m.after_d_step()
    assert max(p.abs().max().item() for p in m.discriminator.parameters()) == pytest.approx(0.003)
