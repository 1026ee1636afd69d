"""Levers across families: ADA steers its probability with r_t = E[sign D(x_real)], so families whose D
score has no sign refuse it in one line with the reason, and StackGAN's own D loss feeds it; cGAN's two
modes apply the levers on D's scores to their adversarial logits."""

import pytest
import torch

from ganbench import GanbenchError
from ganbench.models import BEGAN, EBGAN, MAGAN, MMDGAN, LossSensitiveGAN, StackGAN
from ganbench.models.base import Batch


@pytest.mark.parametrize("family, words", [(EBGAN, "non-negative reconstruction energy"),
                                           (BEGAN, "non-negative reconstruction energy"),
                                           (MAGAN, "non-negative reconstruction energy"),
                                           (LossSensitiveGAN, "learned loss"), (MMDGAN, "feature vector")])
def test_families_without_a_signed_score_refuse_ada_with_the_reason(family, words):
    with pytest.raises(GanbenchError, match=f"model.augment=ada is not supported by {family.family}: .*{words}"):
        family(data_shape=(1, 16, 16), latent_dim=4, width=4, augment="ada")
    family(data_shape=(1, 16, 16), latent_dim=4, width=4, augment="diffaugment")  # a fixed policy is fine


def test_stackgan_feeds_ada_the_logits_of_its_real_pairs():
    torch.manual_seed(0)
    m = StackGAN(data_shape=(1, 16, 16), num_classes=3, conditional=True, latent_dim=4, width=4, augment="ada")
    seen = []
    m.ada.accumulate = seen.append
    real, labels = torch.randn(4, 1, m.low_resolution, m.low_resolution), torch.tensor([0, 1, 2, 0])
    m.d_loss(Batch(real, labels))
    assert len(seen) == 1 and seen[0].shape[0] == 4


@pytest.mark.parametrize("mode", ["projection", "acgan"])
def test_cgan_applies_lecam_to_its_adversarial_logits(mode):
    """First step: the anchors are the batch means of the logits, the term
    mean relu(d_real − α_F)² + mean relu(α_R − d_fake)², added to D's loss with its weight."""
    from ganbench.models import CGAN

    torch.manual_seed(0)
    kw = {"data_shape": (1, 16, 16), "num_classes": 3, "latent_dim": 4, "width": 4,
          "arch": "cnn", "mode": mode}
    m = CGAN(lecam_weight=0.5, **kw)
    real, labels = torch.randn(6, 1, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2])
    loss, logs = m.d_loss(Batch(real, labels))
    d_real, d_fake = logs["d_real"].float(), logs["d_fake"].float()
    lecam = torch.relu(d_real - d_fake.mean()).pow(2).mean() + torch.relu(d_real.mean() - d_fake).pow(2).mean()
    torch.testing.assert_close(logs["lecam"], lecam.reshape(1), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(logs["d_losses"], (loss.detach()).reshape(1))
    torch.manual_seed(0)
    plain, _ = CGAN(**kw).d_loss(Batch(real, labels))  # the same draws without the term
    torch.testing.assert_close(loss.detach() - plain.detach(), 0.5 * lecam, rtol=1e-5, atol=1e-6)
