"""ganbench.augment: DiffAugment's and ADA's operations against their closed forms, computed from the
same random draws (a twin ReplicaRNG with the same seeds replays them)."""

import pytest
import torch

from ganbench import GanbenchError
from ganbench.augment import (
    ADA_OPS,
    AdaptiveAugment,
    check_policy,
    cutout,
    diff_augment,
    rand_brightness,
    rand_contrast,
    rand_cutout,
    rand_saturation,
    rand_translation,
    translate,
)
from ganbench.nn.population import ReplicaRNG


def rng(*seeds: int) -> ReplicaRNG:
    return ReplicaRNG(list(seeds) or [0])


def images(r: int, c: int, h: int, w: int | None = None, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(r, c, h, w or h, generator=g) * 2 - 1


# ------------------------------------------------------------------------------------- translation
def test_translate_moves_a_pixel_by_minus_the_shift_with_zeros_padded():
    x = torch.zeros(5, 2, 8, 8)
    x[:, :, 3, 5] = 7.0
    dh, dw = torch.tensor([2, -1, 0, -5, 3]), torch.tensor([-3, 1, 0, 0, 3])
    out = translate(x, dh, dw)
    for b in range(5):
        expected = torch.zeros(2, 8, 8)
        i, j = 3 - int(dh[b]), 5 - int(dw[b])
        if 0 <= i < 8 and 0 <= j < 8:
            expected[:, i, j] = 7.0
        assert torch.equal(out[b], expected), b
    assert out[3].abs().sum() == 0  # shifted out of the image: nothing left


def test_translate_reflect_mirrors_about_the_edge_pixel():
    x = (torch.arange(6.0)[:, None] * 10 + torch.arange(6.0)[None, :]).expand(1, 1, 6, 6).clone()
    out = translate(x, torch.tensor([2]), torch.tensor([-3]), reflect=True)
    rows = [2, 3, 4, 5, 4, 3]  # out[i] = x[i + 2], index 6 reads 4, 7 reads 3
    cols = [3, 2, 1, 0, 1, 2]  # out[j] = x[j - 3], index -1 reads 1, -3 reads 3
    expected = torch.tensor([[10.0 * i + j for j in cols] for i in rows])
    assert torch.equal(out[0, 0], expected)


@pytest.mark.parametrize("size, span", [(28, 4), (32, 4), (16, 2)])
def test_rand_translation_equals_the_shift_of_its_draws(size, span):
    x = images(64, 3, size)
    out = rand_translation(x, rng(3))
    twin = rng(3)
    dh = twin.randint(2 * span + 1, 64, x.device) - span
    dw = twin.randint(2 * span + 1, 64, x.device) - span
    for b in range(64):
        expected = torch.zeros(3, size, size)
        for i in range(size):
            for j in range(size):
                si, sj = i + int(dh[b]), j + int(dw[b])
                if 0 <= si < size and 0 <= sj < size:
                    expected[:, i, j] = x[b, :, si, sj]
        assert torch.equal(out[b], expected), b


def test_rand_translation_covers_exactly_the_reference_range_at_28_pixels():
    # int(28 * 0.125 + 0.5) = 4: shifts -4..4, every one of them, nothing beyond
    x = torch.zeros(600, 1, 28, 28)
    x[:, :, 14, 14] = 1.0
    out = rand_translation(x, rng(1))
    flat = out.reshape(600, -1)
    assert torch.equal(flat.sum(1), torch.ones(600))
    pos = flat.argmax(1)
    shifts = {(14 - int(p) // 28, 14 - int(p) % 28) for p in pos}
    assert {s for s, _ in shifts} == set(range(-4, 5))
    assert {s for _, s in shifts} == set(range(-4, 5))


# ------------------------------------------------------------------------------------------ cutout
def test_cutout_zeroes_exactly_the_rectangle_inside_the_image():
    x = torch.ones(3, 2, 8, 8)
    out = cutout(x, torch.tensor([2, -2, 6]), torch.tensor([1, 5, -1]), (4, 4))
    for b, (rows, cols) in enumerate([(range(2, 6), range(1, 5)), (range(0, 2), range(5, 8)),
                                      (range(6, 8), range(0, 3))]):
        expected = torch.ones(2, 8, 8)
        for i in rows:
            for j in cols:
                expected[:, i, j] = 0
        assert torch.equal(out[b], expected), b


@pytest.mark.parametrize("size, k", [(28, 14), (32, 16), (9, 5)])
def test_rand_cutout_zeroes_the_clamped_square_of_its_draws(size, k):
    x = images(64, 3, size)
    out = rand_cutout(x, rng(4))
    twin = rng(4)
    oh = twin.randint(size + (1 - k % 2), 64, x.device)
    ow = twin.randint(size + (1 - k % 2), 64, x.device)
    for b in range(64):
        mask = torch.ones(size, size)  # the reference's scatter of zeros at clamped indices
        for a in range(k):
            for c in range(k):
                i = min(max(int(oh[b]) - k // 2 + a, 0), size - 1)
                j = min(max(int(ow[b]) - k // 2 + c, 0), size - 1)
                mask[i, j] = 0
        assert torch.equal(out[b], x[b] * mask), b
    inside = (oh >= k // 2) & (oh - k // 2 + k <= size) & (ow >= k // 2) & (ow - k // 2 + k <= size)
    assert inside.any()
    assert torch.equal((out[inside, 0] == 0).sum((1, 2)), torch.full((int(inside.sum()),), k * k))


# ------------------------------------------------------------------------------------------- color
def test_brightness_adds_u_minus_half_per_sample():
    x = torch.full((16, 3, 4, 4), 0.25)
    out = rand_brightness(x, rng(2))
    u = rng(2).rand(16, 1, 1, 1, like=x)
    assert torch.equal(out, x + (u - 0.5))
    assert out.amin() >= 0.25 - 0.5 and out.amax() < 0.25 + 0.5


def test_saturation_scales_the_distance_to_the_channel_mean_by_2u():
    x = torch.tensor([0.5, -0.1, 0.2]).reshape(1, 3, 1, 1).expand(16, 3, 4, 4)
    out = rand_saturation(x, rng(2))
    u = rng(2).rand(16, 1, 1, 1, like=x)
    m = torch.tensor(0.2)  # (0.5 - 0.1 + 0.2) / 3
    torch.testing.assert_close(out, (x - m) * 2 * u + m, rtol=0, atol=1e-6)
    assert not torch.allclose(out, x)


def test_saturation_is_the_identity_on_one_channel_and_still_draws():
    x = images(8, 1, 6)
    r = rng(2)
    assert torch.equal(rand_saturation(x, r), x)
    twin = rng(2)
    twin.rand(8, 1, 1, 1, like=x)
    assert torch.equal(r.rand(8, like=x), twin.rand(8, like=x))  # the same stream consumed


def test_contrast_scales_the_distance_to_the_image_mean_by_u_plus_half():
    x = torch.zeros(16, 3, 4, 4)
    x[:, 0, :2], x[:, 0, 2:] = 0.8, -0.4  # channel means 0.2, 0.5, -0.1: the image's mean is 0.2
    x[:, 1], x[:, 2] = 0.5, -0.1
    out = rand_contrast(x, rng(5))
    u = rng(5).rand(16, 1, 1, 1, like=x)
    torch.testing.assert_close(out, (x - 0.2) * (u + 0.5) + 0.2, rtol=0, atol=1e-6)
    const = torch.full((4, 3, 4, 4), 0.3)
    assert torch.equal(rand_contrast(const, rng(5)), const)


def test_color_policy_is_brightness_then_saturation_then_contrast():
    x = images(8, 3, 6)
    out = diff_augment(x, ["color"], rng(6))
    r = rng(6)
    assert torch.equal(out, rand_contrast(rand_saturation(rand_brightness(x, r), r), r))


# --------------------------------------------------------------------------------------- gradients
def test_brightness_gradient_is_ones():
    x = images(4, 3, 8).requires_grad_(True)
    rand_brightness(x, rng(0)).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_translation_gradient_counts_the_pixels_read():
    x = images(1, 1, 8).requires_grad_(True)
    translate(x, torch.tensor([2]), torch.tensor([-1])).sum().backward()
    expected = torch.zeros(8, 8)
    expected[2:, :7] = 1  # out[i, j] = x[i + 2, j - 1]
    assert torch.equal(x.grad[0, 0], expected)


@pytest.mark.parametrize("channels", [1, 3])
def test_every_policy_passes_gradients_to_the_images(channels):
    x = images(8, channels, 16).requires_grad_(True)
    out = diff_augment(x, ["color", "translation", "cutout"], rng(1))
    (out * torch.randn_like(out)).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad != 0).any()


def test_ada_passes_gradients_to_the_images():
    aug = AdaptiveAugment(ops=ADA_OPS, p=1.0)
    x = images(8, 3, 16).requires_grad_(True)
    out = aug(x, rng(1))
    (out * torch.randn_like(out)).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad != 0).any()


# ------------------------------------------------------------------------------------------ policy
def test_check_policy_names_the_key_and_the_valid_names():
    assert check_policy(["color", "cutout"], "model.augment") == ("color", "cutout")
    assert check_policy("color,translation", "model.augment") == ("color", "translation")
    with pytest.raises(GanbenchError, match=r"model\.augment: unknown augmentation 'colour'.*"
                                            r"color, translation, cutout"):
        check_policy(["colour", "cutout"], "model.augment")
    with pytest.raises(GanbenchError, match="xflip, rotate90"):
        AdaptiveAugment(ops=["flip"])


def test_an_empty_policy_returns_the_images():
    x = images(2, 3, 8)
    assert diff_augment(x, [], rng(0)) is x


# -------------------------------------------------------------------------------------- population
def test_a_population_draws_each_replica_as_its_own_fit():
    xa, xb = images(6, 3, 16, seed=1), images(6, 3, 16, seed=2)
    policy = ["color", "translation", "cutout"]
    both = diff_augment(torch.cat([xa, xb]), policy, rng(11, 12))
    assert torch.equal(both, torch.cat([diff_augment(xa, policy, rng(11)), diff_augment(xb, policy, rng(12))]))

    aug = AdaptiveAugment(replicas=2, ops=ADA_OPS)
    aug.p.copy_(torch.tensor([0.7, 0.4]))
    both = aug(torch.cat([xa, xb]), rng(11, 12))
    one = [AdaptiveAugment(ops=ADA_OPS, p=p) for p in (0.7, 0.4)]
    assert torch.equal(both, torch.cat([one[0](xa, rng(11)), one[1](xb, rng(12))]))
    assert not torch.equal(both[:6], xa) and not torch.equal(both[6:], xb)


# --------------------------------------------------------------------------------------------- ADA
@pytest.mark.parametrize("channels", [1, 3])
def test_ada_with_p_zero_is_the_identity(channels):
    x = images(16, channels, 12)
    assert torch.equal(AdaptiveAugment(ops=ADA_OPS, p=0.0)(x, rng(0)), x)


def test_ada_xflip_flips_where_its_draw_says():
    x = images(32, 3, 8)
    out = AdaptiveAugment(ops=["xflip"], p=1.0)(x, rng(3))
    twin = rng(3)
    flip = torch.floor(twin.rand(32, like=x) * 2) == 1
    assert flip.any() and (~flip).any()
    assert torch.equal(out[flip], x[flip].flip(3))
    assert torch.equal(out[~flip], x[~flip])


def test_ada_gate_applies_an_operation_where_its_draw_is_below_p():
    x = images(64, 3, 4)
    out = AdaptiveAugment(ops=["brightness"], p=0.3)(x, rng(8))
    twin = rng(8)
    b = twin.randn(64, like=x) * 0.2
    on = twin.rand(64, like=x) < 0.3
    assert on.any() and (~on).any()
    assert torch.equal(out[~on], x[~on])
    assert torch.equal(out[on], x[on] + b[on].reshape(-1, 1, 1, 1))


def test_ada_rotate90_turns_by_its_draw():
    x = images(32, 3, 8)
    out = AdaptiveAugment(ops=["rotate90"], p=1.0)(x, rng(4))
    k = torch.floor(rng(4).rand(32, like=x) * 4).long()
    assert set(k.tolist()) == {0, 1, 2, 3}
    for b in range(32):
        assert torch.equal(out[b], torch.rot90(x[b], int(k[b]), dims=(1, 2))), b
    # one quarter turn: the top row, read left to right, becomes the left column read bottom to top
    assert torch.equal(torch.rot90(x[:1], 1, dims=(2, 3))[0, :, :, 0], x[0, :, 0, :].flip(1))


def test_ada_xint_shifts_by_its_draw_with_reflection():
    x = images(32, 1, 16)
    out = AdaptiveAugment(ops=["xint"], p=1.0)(x, rng(5))
    t = (rng(5).rand(32, 2, like=x) * 2 - 1) * 0.125
    tx, ty = torch.round(t[:, 0] * 16).long(), torch.round(t[:, 1] * 16).long()
    assert tx.abs().max() == 2 and ty.abs().max() == 2

    def refl(i: int) -> int:
        return -i if i < 0 else 30 - i if i > 15 else i

    for b in range(32):  # content moves by +t: out(y, x) = in(y - ty, x - tx)
        expected = torch.tensor([[float(x[b, 0, refl(i - int(ty[b])), refl(j - int(tx[b]))]) for j in range(16)]
                                 for i in range(16)])
        assert torch.equal(out[b, 0], expected), b


def test_ada_color_closed_forms():
    x = images(16, 3, 4)
    twin = rng(6)
    b = twin.randn(16, like=x).reshape(-1, 1, 1, 1) * 0.2
    twin.rand(16, like=x)
    c = torch.exp2(twin.randn(16, like=x).reshape(-1, 1, 1, 1) * 0.5)
    twin.rand(16, like=x)
    flip = (torch.floor(twin.rand(16, like=x) * 2) == 1).reshape(-1, 1, 1, 1)
    twin.rand(16, like=x)
    s = torch.exp2(twin.randn(16, like=x).reshape(-1, 1, 1, 1))
    out = AdaptiveAugment(ops=["brightness", "contrast", "lumaflip", "saturation"], p=1.0)(x, rng(6))
    y = (x + b) * c
    y = torch.where(flip, y - 2 * y.mean(1, keepdim=True), y)
    m = y.mean(1, keepdim=True)
    torch.testing.assert_close(out, m + (y - m) * s, rtol=0, atol=1e-5)
    assert flip.any() and (~flip).any()


def test_ada_lumaflip_negates_one_channel_and_saturation_leaves_it_alone():
    x = images(32, 1, 4)
    out = AdaptiveAugment(ops=["lumaflip", "saturation"], p=1.0)(x, rng(7))
    twin = rng(7)
    flip = torch.floor(twin.rand(32, like=x) * 2) == 1
    assert torch.equal(out[flip], -x[flip]) and torch.equal(out[~flip], x[~flip])
    twin.rand(32, like=x)  # the gate; saturation draws nothing on one channel
    r = rng(7)
    AdaptiveAugment(ops=["lumaflip", "saturation"], p=1.0)(x, r)
    assert torch.equal(r.rand(4, like=x), twin.rand(4, like=x))


def test_ada_cutout_zeroes_pixels_within_a_quarter_of_its_centre():
    x = images(16, 3, 8)
    out = AdaptiveAugment(ops=["cutout"], p=1.0)(x, rng(9))
    twin = rng(9)
    twin.rand(16, like=x)
    centre = twin.rand(16, 2, like=x)
    for b in range(16):
        mask = torch.ones(8, 8)
        for i in range(8):
            for j in range(8):
                if abs((i + 0.5) / 8 - float(centre[b, 1])) < 0.25 and abs((j + 0.5) / 8 - float(centre[b, 0])) < 0.25:
                    mask[i, j] = 0
        assert torch.equal(out[b], x[b] * mask), b
    assert (out == 0).any()


# ------------------------------------------------------------------------------------ ADA's p update
def test_p_rises_by_one_step_when_reals_look_real():
    aug = AdaptiveAugment(target=0.6, kimg=500, interval=4)
    aug.accumulate(torch.full((64, 1), 3.0))
    aug.adjust(batch_size=64)
    assert torch.equal(aug.p, torch.tensor([64 * 4 / 500_000], dtype=torch.float32))
    assert torch.equal(aug.rt, torch.tensor([1.0]))
    assert aug.count.sum() == 0 and aug.signs.abs().sum() == 0  # accumulators reset
    aug.adjust(batch_size=64)  # nothing accumulated since: p and rt stay
    assert torch.equal(aug.p, torch.tensor([64 * 4 / 500_000], dtype=torch.float32))
    assert torch.equal(aug.rt, torch.tensor([1.0]))


def test_p_stays_clamped_at_zero_and_one():
    aug = AdaptiveAugment()
    aug.accumulate(-torch.ones(32))
    aug.adjust(batch_size=32)
    assert torch.equal(aug.p, torch.zeros(1)) and torch.equal(aug.rt, torch.tensor([-1.0]))
    aug.p.fill_(0.9999)
    aug.accumulate(torch.ones(32))
    aug.adjust(batch_size=32)
    assert torch.equal(aug.p, torch.ones(1))


def test_p_moves_per_replica_with_its_own_signs():
    aug = AdaptiveAugment(replicas=3, p=0.5, kimg=100, interval=2)
    d = torch.ones(12, 5)  # replica r's rows are 4r..4r+3; five outputs per image (a patch D)
    d[4:8].view(-1)[:15] = -2.0  # replica 1: 15 of 20 negative, r_t = -0.5
    d[8:12].view(-1)[:4] = -0.5  # replica 2: 4 of 20 negative, r_t = 0.6 = target: p stays
    aug.accumulate(d[:, :3])  # two calls add up: 12 then 8 outputs per replica
    aug.accumulate(d[:, 3:])
    aug.adjust(batch_size=50)
    step = 50 * 2 / 100_000
    assert torch.equal(aug.rt, torch.tensor([1.0, -0.5, 0.6]))
    assert torch.equal(aug.p, torch.tensor([0.5, 0.5, 0.5]) + torch.tensor([step, -step, 0.0]))


def test_state_dict_round_trip_resumes_exactly():
    aug = AdaptiveAugment(replicas=2, ops=ADA_OPS, p=0.25)
    aug.accumulate(torch.tensor([1.0, -1.0, 1.0, 1.0]))
    aug.adjust(batch_size=2)
    aug.accumulate(torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    state = aug.state_dict()
    assert set(state) == {"p", "rt", "signs", "count"}
    back = AdaptiveAugment(replicas=2, ops=ADA_OPS)
    back.load_state_dict(state)
    for name in state:
        assert torch.equal(getattr(back, name), getattr(aug, name)), name
    x = images(8, 3, 8)
    assert torch.equal(back(x, rng(1, 2)), aug(x, rng(1, 2)))
    aug.adjust(batch_size=2)
    back.adjust(batch_size=2)
    assert torch.equal(back.p, aug.p) and torch.equal(back.rt, aug.rt)


# ------------------------------------------------------------------------------------ no host sync
def test_nothing_reads_a_tensor_value_back_to_python(monkeypatch):
    x = images(8, 3, 16).requires_grad_(True)
    aug = AdaptiveAugment(replicas=2, ops=ADA_OPS, p=0.5)

    def refuse(*args, **kwargs):
        raise AssertionError("a tensor's value was read back to Python")

    for name in ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    out = diff_augment(x, ["color", "translation", "cutout"], rng(1, 2)) + aug(x, rng(1, 2))
    out.sum().backward()
    aug.accumulate(out.mean((1, 2, 3)))
    aug.adjust(batch_size=4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_synchronization_on_cuda():
    x = images(8, 3, 16).cuda().requires_grad_(True)
    aug = AdaptiveAugment(replicas=2, ops=ADA_OPS, p=0.5).cuda()
    r = ReplicaRNG([1, 2], device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = diff_augment(x, ["color", "translation", "cutout"], r) + aug(x, r)
        out.sum().backward()
        aug.accumulate(out.detach().mean((1, 2, 3)))
        aug.adjust(batch_size=4)
    finally:
        torch.cuda.set_sync_debug_mode("default")
