"""The regularizers of D's scores on the families whose D is not a logit: the Loss-Sensitive GAN (D is a
learned loss L_θ, lower = more real) and MMD-GAN (D returns features φ(x), the losses a kernel statistic
of two sets). Each family declares which levers are defined for its D and why not the others; where one
is defined, its value here is computed by hand."""

import pytest
import torch

from ganbench.augment import cr_transform
from ganbench.losses import d_loss_sensitive, d_mmd, ls_margin
from ganbench.models import GAN, MMDGAN, LossSensitiveGAN
from ganbench.models.base import Batch
from tests.test_families_energy import replay

#: the model.* keys of the regularizers of D's scores (those check_levers reads)
SCORE_LEVERS = {"cr_real", "cr_fake", "zcr_dis", "zcr_gen", "lecam_weight", "top_k"}


def test_each_family_declares_the_score_levers_it_cannot_apply_with_a_one_line_reason():
    for family in (LossSensitiveGAN, MMDGAN):
        assert set(family.score_levers_unsupported) <= SCORE_LEVERS
        for reason in family.score_levers_unsupported.values():
            assert len(reason) > 40 and "\n" not in reason
    assert LossSensitiveGAN.score_levers_unsupported == {}
    assert set(MMDGAN.score_levers_unsupported) == {"lecam_weight", "top_k"}  # CR and zCR compare φ


def test_the_loss_sensitive_score_is_the_negated_learned_loss():
    m = LossSensitiveGAN(data_shape=(2,), latent_dim=2, width=8)
    losses = torch.tensor([3.0, -1.0, 2.0, 0.5])
    assert torch.equal(m.score_of(losses), -losses)
    assert torch.equal(GAN(data_shape=(2,), latent_dim=2, width=8).score_of(losses), losses)  # logits as they are


def test_top_k_on_the_loss_sensitive_gan_keeps_the_fakes_with_the_lowest_learned_loss(monkeypatch):
    """k = ⌈0.5¹ · 4⌉ = 2 after one epoch: of L_θ = (3, −1, 2, 0.5) the fakes with −1 and 0.5 update G
    (a GAN's logits (3, −1, 2, 0.5) keep 3 and 2), and G's loss is their mean, −0.25."""
    m = LossSensitiveGAN(data_shape=(2,), latent_dim=2, width=8, top_k=True, top_k_gamma=0.5, top_k_min=0.25)
    monkeypatch.setattr(m, "epochs_done", lambda: 1)
    scores = torch.tensor([3.0, -1.0, 2.0, 0.5])
    assert torch.equal(m.top_k(scores), torch.tensor([-1.0, 0.5]))
    assert m.objective.g(m.top_k(scores)).item() == -0.25
    gan = GAN(data_shape=(2,), latent_dim=2, width=8, top_k=True, top_k_gamma=0.5, top_k_min=0.25)
    monkeypatch.setattr(gan, "epochs_done", lambda: 1)
    assert torch.equal(gan.top_k(scores), torch.tensor([3.0, 2.0]))


def test_top_k_enters_the_loss_sensitive_g_loss(monkeypatch):
    torch.manual_seed(0)
    m = LossSensitiveGAN(data_shape=(2,), latent_dim=2, width=8, top_k=True, top_k_gamma=0.5, top_k_min=0.25)
    monkeypatch.setattr(m, "epochs_done", lambda: 2)  # k = 0.25 · 8 = 2
    again = replay(m)
    loss, _ = m.g_loss(Batch(torch.randn(8, 2)))
    again()
    lowest = m.discriminator(m.generate(8, None)).sort().values[:2]
    torch.testing.assert_close(loss, lowest.mean(), rtol=0, atol=1e-7)


def test_lecam_on_the_loss_sensitive_gan_anchors_the_negated_loss():
    """At the first step the anchors are the batch means of the score s = −L_θ: α_R = mean s(x),
    α_F = mean s(G(z)); the term is w·(mean relu(s(x) − α_F)² + mean relu(α_R − s(G(z)))²)."""
    torch.manual_seed(0)
    m = LossSensitiveGAN(data_shape=(2,), latent_dim=2, width=8, penalty="none", lam=0.7, lecam_weight=0.3)
    real = torch.randn(6, 2)
    again = replay(m)
    loss, logs = m.d_loss(Batch(real))
    again()
    fake = m.generate(6, None)
    l_real, l_fake = m.discriminator(real), m.discriminator(fake)
    s_real, s_fake = -l_real, -l_fake
    a_real, a_fake = s_real.mean(), s_fake.mean()
    lecam = torch.relu(s_real - a_fake).pow(2).mean() + torch.relu(a_real - s_fake).pow(2).mean()
    torch.testing.assert_close(logs["lecam"], lecam.reshape(1), rtol=1e-6, atol=1e-7)
    expected = d_loss_sensitive(l_real, l_fake, ls_margin(real, fake), 0.7) + 0.3 * lecam
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-7)
    # taken on L_θ itself (higher = more real, the wrong way round) the pull would differ
    wrong = torch.relu(l_real - l_fake.mean()).pow(2).mean() + torch.relu(l_real.mean() - l_fake).pow(2).mean()
    assert not torch.allclose(wrong, lecam)


def test_consistency_on_the_mmd_critic_compares_feature_vectors():
    """CR on reals: w·E‖φ(x) − φ(T(x))‖², T the flip-and-shift of CR, added to −MMD²_u."""
    torch.manual_seed(0)
    m = MMDGAN(data_shape=(1, 8, 8), latent_dim=4, width=4, penalty="none", cr_real=2.0)
    real = torch.randn(4, 1, 8, 8)
    again = replay(m)
    loss, logs = m.d_loss(Batch(real))
    again()
    fake = m.generate(4, None)
    phi_real, phi_fake = m.discriminator(real), m.discriminator(fake)
    assert phi_real.shape == (4, 16)
    cr = (phi_real - m.discriminator(cr_transform(real, m.rng))).pow(2).sum(1).mean()
    torch.testing.assert_close(logs["cr_real"], cr.reshape(1), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(loss, d_mmd(phi_real, phi_fake) + 2.0 * cr, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("family, key, value, defined", [
    (LossSensitiveGAN, "lecam_weight", 0.3, True), (MMDGAN, "cr_real", 1.0, True),
    (MMDGAN, "lecam_weight", 0.3, False), (MMDGAN, "top_k", True, False)])
def test_check_levers_reads_the_declaration(family, key, value, defined):
    kw = {"data_shape": (1, 8, 8), "latent_dim": 4, "width": 4, key: value}
    if defined:
        family(**kw)
    else:
        with pytest.raises(Exception, match=family.score_levers_unsupported[key][:30]):
            family(**kw)
