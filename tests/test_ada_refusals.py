"""ADA steers its probability with r_t = E[sign D(x_real)]: families whose D has no such sign refuse it
in one line with the reason, and StackGAN's own D loss feeds it."""

import pytest
import torch

from ganbench import GanbenchError
from ganbench.models import BEGAN, EBGAN, MAGAN, MMDGAN, LossSensitiveGAN, StackGAN


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
    m.d_loss(real, labels)
    assert len(seen) == 1 and seen[0].shape[0] == 4
