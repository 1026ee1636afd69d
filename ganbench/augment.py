"""Differentiable augmentation of the discriminator's inputs: DiffAugment and ADA.

Both augment every image D sees — reals and fakes alike — with operations that are differentiable
in the pixels, so G's gradient passes through the augmentation of its samples. They run on the
images' device without a host synchronization (no ``.item()``, no Python branch on a random value),
so a step that calls them can be captured in a CUDA graph.

* :func:`diff_augment` — DiffAugment (Zhao, Liu, Lin, Zhu & Han, "Differentiable Augmentation for
  Data-Efficient GAN Training", NeurIPS 2020): a fixed policy of ``color``, ``translation`` and
  ``cutout`` applied to every sample. Reference: github.com/mit-han-lab/data-efficient-gans,
  ``DiffAugment_pytorch.py`` at commit 0b63395 (cited below as ``DA:<line>``).
* :class:`AdaptiveAugment` — ADA (Karras, Aittala, Hellsten, Laine, Lehtinen & Aila, "Training
  Generative Adversarial Networks with Limited Data", NeurIPS 2020): each operation applied to a
  sample with probability ``p``, and ``p`` steered so that ``E[sign(D(x_real))]`` stays near a
  target. Reference: github.com/NVlabs/stylegan2-ada-pytorch at commit d72cc7d,
  ``training/augment.py`` (``AP:<line>``) and ``training/training_loop.py`` (``TL:<line>``).

Images are ``(R, C, H, W)``. In a population the replicas are folded into the rows (replica ``r``
owns rows ``[r·B, (r+1)·B)``) and every random number is drawn through a
:class:`~ganbench.nn.population.ReplicaRNG`, so replica ``r`` draws from its own stream and a
population of one draws exactly what an ordinary fit draws.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ganbench import GanbenchError
from ganbench.nn.population import ReplicaRNG


def translate(x: Tensor, dh: Tensor, dw: Tensor, reflect: bool = False) -> Tensor:
    """Integer shift per sample: ``out[b, :, i, j] = x[b, :, i + dh[b], j + dw[b]]``.

    The content moves by ``(-dh, -dw)``. Where ``i + dh`` falls outside the image the value is 0
    (DiffAugment's zero padding, DA:48-51), or with ``reflect`` the image mirrored about its edge
    pixel (``F.pad(mode="reflect")``: index -1 reads 1, index H reads H-2; ADA's padding, AP:286),
    which needs ``|dh| < H`` and ``|dw| < W``. ``dh`` and ``dw`` are integer tensors of shape
    ``(R,)``. A gather by index, so the gradient reaches ``x``.
    """
    r, _, h, w = x.shape
    i = torch.arange(h, device=x.device) + dh.reshape(r, 1)
    j = torch.arange(w, device=x.device) + dw.reshape(r, 1)
    if reflect:
        i = (h - 1) - ((h - 1) - i.abs()).abs()
        j = (w - 1) - ((w - 1) - j.abs()).abs()
        src = x
    else:  # index 0 and H+1 of the padded image are the zeros
        i, j = (i + 1).clamp(0, h + 1), (j + 1).clamp(0, w + 1)
        src = F.pad(x, [1, 1, 1, 1])
    b = torch.arange(r, device=x.device).reshape(r, 1, 1)
    return src.permute(0, 2, 3, 1)[b, i[:, :, None], j[:, None, :]].permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------------------------ DiffAugment
def rand_brightness(x: Tensor, rng: ReplicaRNG) -> Tensor:
    """``x + (u - 0.5)``, ``u ~ U[0, 1)`` per sample (DA:22-24)."""
    return x + (rng.rand(x.shape[0], 1, 1, 1, like=x) - 0.5)


def rand_saturation(x: Tensor, rng: ReplicaRNG) -> Tensor:
    """``(x - m)·2u + m`` with ``m`` the mean over channels, ``u ~ U[0, 1)`` per sample (DA:27-30).

    On a 1-channel image ``m = x``, so the result is ``x`` exactly (``0·2u + x``); the draw is still
    made, as the reference makes it, so the stream is the same whatever the channel count.
    """
    m = x.mean(dim=1, keepdim=True)
    return (x - m) * (rng.rand(x.shape[0], 1, 1, 1, like=x) * 2) + m


def rand_contrast(x: Tensor, rng: ReplicaRNG) -> Tensor:
    """``(x - m)·(u + 0.5) + m`` with ``m`` the mean over C, H, W, ``u ~ U[0, 1)`` per sample (DA:33-36)."""
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * (rng.rand(x.shape[0], 1, 1, 1, like=x) + 0.5) + m


def _span(size: int, ratio: float) -> int:
    """``int(size·ratio + 0.5)``: the reference's rounding of a relative size (DA:40, DA:56)."""
    return int(size * ratio + 0.5)


def rand_translation(x: Tensor, rng: ReplicaRNG, ratio: float = 0.125) -> Tensor:
    """Shift by integers ``dh, dw`` uniform in ``[-s, s]``, ``s = int(size·ratio + 0.5)``, zeros
    shifted in (DA:39-52): :func:`translate` with ``dh`` drawn first, then ``dw``. At 28 px
    ``s = 4``, at 32 px 4, at 64 px 8."""
    r, _, h, w = x.shape
    sh, sw = _span(h, ratio), _span(w, ratio)
    dh = rng.randint(2 * sh + 1, r, x.device) - sh
    dw = rng.randint(2 * sw + 1, r, x.device) - sw
    return translate(x, dh, dw)


def cutout(x: Tensor, top: Tensor, left: Tensor, size: tuple[int, int]) -> Tensor:
    """Zero rows ``[top, top + size[0])`` × columns ``[left, left + size[1])`` of each sample (the
    part inside the image); ``top``/``left`` are integer tensors ``(R,)``, possibly negative."""
    r, _, h, w = x.shape
    i = torch.arange(h, device=x.device) - top.reshape(r, 1)
    j = torch.arange(w, device=x.device) - left.reshape(r, 1)
    inside = ((i >= 0) & (i < size[0]))[:, :, None] & ((j >= 0) & (j < size[1]))[:, None, :]
    return x * (~inside).to(x.dtype).unsqueeze(1)


def rand_cutout(x: Tensor, rng: ReplicaRNG, ratio: float = 0.5) -> Tensor:
    """Zero a ``k_h×k_w`` square, ``k_h = int(H·ratio + 0.5)``, centred at offsets ``o_h`` uniform
    in ``[0, H + 1 - k_h mod 2)`` (then ``o_w`` likewise): rows ``[o_h - k_h//2, o_h - k_h//2 + k_h)``
    clipped to the image, columns likewise (DA:55-69). The reference scatters zeros at the clamped indices; the clamped
    square is exactly this rectangle intersected with the image, which a comparison mask gives
    without a scatter."""
    r, _, h, w = x.shape
    kh, kw = _span(h, ratio), _span(w, ratio)
    oh = rng.randint(h + (1 - kh % 2), r, x.device)
    ow = rng.randint(w + (1 - kw % 2), r, x.device)
    return cutout(x, oh - kh // 2, ow - kw // 2, (kh, kw))


#: DiffAugment's policies and the operations each applies, in order (DA:72-76)
DIFF_AUGMENT: dict[str, tuple[Callable[[Tensor, ReplicaRNG], Tensor], ...]] = {
    "color": (rand_brightness, rand_saturation, rand_contrast),
    "translation": (rand_translation,),
    "cutout": (rand_cutout,),
}


def check_policy(policy: str | Sequence[str], key: str, valid: Iterable[str] = DIFF_AUGMENT) -> tuple[str, ...]:
    """The names of ``policy`` (a list, or a comma-separated string as the reference takes, DA:13),
    or a GanbenchError naming the config ``key`` and the valid names."""
    names = tuple(n.strip() for n in (policy.split(",") if isinstance(policy, str) else policy))
    valid = tuple(valid)
    bad = [n for n in names if n not in valid]
    if bad:
        raise GanbenchError(f"{key}: unknown augmentation {', '.join(map(repr, bad))}; "
                            f"valid names: {', '.join(valid)}")
    return names


def diff_augment(x: Tensor, policy: str | Sequence[str], rng: ReplicaRNG) -> Tensor:
    """DiffAugment (DA:9-19): the operations of each policy in turn, e.g. ``["color", "translation",
    "cutout"]`` (the policy the paper uses with limited data), every sample augmented. An empty policy
    returns ``x`` itself. Apply it to reals and fakes alike, in D's and G's steps."""
    for name in check_policy(policy, "policy"):
        for op in DIFF_AUGMENT[name]:
            x = op(x, rng)
    return x


def cr_transform(x: Tensor, rng: ReplicaRNG, ratio: float = 0.125) -> Tensor:
    """The transform ``T`` of consistency regularization: a horizontal flip with probability ½, then
    :func:`rand_translation` by up to ``ratio`` of the side with zeros shifted in — "flipping the
    image horizontally and shifting it by a few pixels" (Zhang et al. 2020, §3; the same ``T`` in
    Zhao et al. 2021 §3). Per sample, drawn from ``rng`` (flip draws first)."""
    flip = (rng.rand(x.shape[0], like=x) < 0.5).reshape(-1, 1, 1, 1)
    return rand_translation(torch.where(flip, x.flip(3), x), rng, ratio)


# --------------------------------------------------------------------------------------------- ADA
#: ADA's operations this module implements, in the order they are applied (AP:196-218, AP:311-350,
#: AP:414-427). The reference's default pipeline "bgc" also has arbitrary rotation, scaling,
#: fractional translation and hue rotation, which need resampling; they are left out.
ADA_OPS = ("xflip", "rotate90", "xint", "brightness", "contrast", "lumaflip", "saturation", "cutout")


class AdaptiveAugment(nn.Module):
    """ADA: each operation of ``ops`` applied to a sample with probability ``p`` (its replica's).

    ``ops`` defaults to all of :data:`ADA_OPS` but ``cutout``. ``target`` (0.6, the reference's for
    ``--aug=ada``, train.py:233), ``kimg`` (500, TL:111) and ``interval`` (4 generator iterations,
    TL:110) drive :meth:`adjust`; ``p`` is the starting probability (TL:108).

    Operations, with the reference's parameters (``u ~ U[0, 1)``, ``n ~ N(0, 1)``, one draw per
    sample; each gated by a draw ``g ~ U[0, 1)``, applied where ``g < p``):

    * ``xflip`` — mirror left-right where ``floor(2u) = 1``: with ``p = 1`` half the samples are
      flipped, as in the reference (AP:196-202).
    * ``rotate90`` — rotate by ``k·90°``, ``k = floor(4u)`` (``torch.rot90``; square images) (AP:204-210).
      These two are exact permutations of the pixels, the paper's "pixel blitting". The reference
      runs them through its resampling pipeline, whose asymmetric ``sym6`` filter slightly
      low-passes a flipped or turned sample (up to ~0.3 on uniform noise in [-1, 1]); it picks
      the same transform from the same draws.
    * ``xint`` — shift by ``round(t·W)`` columns and ``round(t'·H)`` rows, ``t, t' = (2u - 1)·0.125``,
      content moving by ``+t``, reflection shifted in (AP:212-218; for an integer shift the
      reference's upsample-resample-downsample is the identity on its reflect-padded image).
    * ``brightness`` — ``x + 0.2·n`` (AP:311-317).
    * ``contrast`` — ``x · 2^(0.5·n)``, about 0, not about the mean (AP:319-325).
    * ``lumaflip`` — ``x - 2·m`` where ``floor(2u) = 1``, ``m`` the mean over channels: the Householder
      reflection about the luma axis ``(1,1,1)/√3``; ``-x`` on a 1-channel image (AP:327-334, AP:361-363).
    * ``saturation`` — ``m + (x - m)·2^n`` (AP:344-350); 3-channel images only: on one channel it
      draws nothing and is the identity, as in the reference (``num_channels > 1``).
    * ``cutout`` — zero the pixels whose centres lie within ``0.25`` (half of size 0.5) of a centre
      ``c ~ U[0, 1)²`` in both coordinates, relative to the image size (AP:414-427).

    The operations run in the order of :data:`ADA_OPS` whatever the order of ``ops``, the colour
    operations one after another (the reference composes them into one matrix: the same map). A
    sample not gated for an operation comes out of it bit for bit as it went in, so ``p = 0`` is the
    identity.

    ``p`` is a persistent buffer of shape ``(replicas,)``: it is saved in checkpoints and resume is
    exact. :meth:`accumulate` gathers ``sign(D(x_real))`` per replica between two calls of
    :meth:`adjust`, which moves ``p`` (TL:312-315). With data parallelism, sum the ``signs`` and
    ``count`` buffers over the processes before :meth:`adjust`, as the reference's statistics do.
    """

    XINT_MAX, BRIGHTNESS_STD, CONTRAST_STD, SATURATION_STD, CUTOUT_SIZE = 0.125, 0.2, 0.5, 1.0, 0.5

    p: Tensor
    rt: Tensor
    signs: Tensor
    count: Tensor

    def __init__(self, replicas: int = 1, ops: Sequence[str] = ADA_OPS[:-1], p: float = 0.0,
                 target: float = 0.6, kimg: float = 500.0, interval: int = 4) -> None:
        super().__init__()
        names = set(check_policy(ops, "ops", ADA_OPS))
        self.ops = tuple(op for op in ADA_OPS if op in names)
        self.target, self.kimg, self.interval = float(target), float(kimg), int(interval)
        self.register_buffer("p", torch.full((replicas,), float(p)))
        self.register_buffer("rt", torch.full((replicas,), float("nan")))  # NaN until measured
        self.register_buffer("signs", torch.zeros(replicas))
        self.register_buffer("count", torch.zeros(replicas))

    @property
    def replicas(self) -> int:
        return self.p.shape[0]

    def accumulate(self, d_real: Tensor) -> None:
        """Add ``Σ sign(D(x_real))`` and the number of outputs, per replica (rows folded), to the
        buffers read by :meth:`adjust`; ``d_real`` is D's output on the augmented reals (TL:178,
        loss.py:114)."""
        s = d_real.detach().float().reshape(self.replicas, -1)
        self.signs.add_(s.sign().sum(1))
        self.count.add_(s.shape[1])

    def adjust(self, batch_size: int) -> None:
        """``r_t = E[sign(D(x_real))]`` over what was accumulated; ``p ← clamp(p + sign(r_t - target)
        · batch_size·interval / (kimg·1000), 0, 1)`` (TL:312-315); then the accumulators reset.

        Call it every ``interval`` generator iterations; ``batch_size`` is one replica's real
        images per iteration. A replica with nothing accumulated keeps its ``p`` and ``rt``. The
        reference clamps at 0 only; above 1 every gate is open already, so the upper clamp changes
        no augmentation and lets ``p`` fall at once when ``r_t`` drops.
        """
        seen = self.count > 0
        rt = self.signs / self.count.clamp_min(1)
        self.rt.copy_(torch.where(seen, rt, self.rt))
        step = batch_size * self.interval / (self.kimg * 1000)
        move = torch.where(seen, torch.sign(rt - self.target), torch.zeros_like(rt))
        self.p.copy_((self.p + move * step).clamp(0, 1))
        self.signs.zero_()
        self.count.zero_()

    def forward(self, x: Tensor, rng: ReplicaRNG) -> Tensor:
        """``x`` ``(R, C, H, W)`` augmented; replica ``r``'s rows gated by ``p[r]``, drawn from ``rng``."""
        r, c, h, w = x.shape
        n = self.replicas
        if len(rng) != n:
            raise ValueError(f"{len(rng)} random streams for {n} replicas")
        p = self.p.repeat_interleave(r // n)  # each row's gate threshold
        ref = self.p  # draws in float32 on the buffers' device, whatever x's dtype

        def gate() -> Tensor:
            """One draw per row: ``(R, 1, 1, 1)``, True where this operation applies."""
            return (rng.rand(r, like=ref) < p).reshape(r, 1, 1, 1)

        ops = self.ops
        if "xflip" in ops:
            i = torch.floor(rng.rand(r, like=ref) * 2).reshape(r, 1, 1, 1)
            x = torch.where(gate() & (i == 1), x.flip(3), x)
        if "rotate90" in ops:
            if h != w:
                raise ValueError(f"rotate90 needs square images, got {h}×{w}")
            k = torch.floor(rng.rand(r, like=ref) * 4).reshape(r, 1, 1, 1)
            k = torch.where(gate(), k, 0)
            out = x
            for turns in (1, 2, 3):
                out = torch.where(k == turns, torch.rot90(x, turns, dims=(2, 3)), out)
            x = out
        if "xint" in ops:
            t = (rng.rand(r, 2, like=ref) * 2 - 1) * self.XINT_MAX
            t = torch.where(gate().reshape(r, 1), t, 0)
            tx, ty = torch.round(t[:, 0] * w).long(), torch.round(t[:, 1] * h).long()
            x = translate(x, -ty, -tx, reflect=True)
        if "brightness" in ops:
            b = rng.randn(r, like=ref).reshape(r, 1, 1, 1) * self.BRIGHTNESS_STD
            x = x + torch.where(gate(), b, 0).to(x.dtype)
        if "contrast" in ops:
            cf = torch.exp2(rng.randn(r, like=ref).reshape(r, 1, 1, 1) * self.CONTRAST_STD)
            x = x * torch.where(gate(), cf, 1).to(x.dtype)
        if "lumaflip" in ops:
            i = torch.floor(rng.rand(r, like=ref) * 2).reshape(r, 1, 1, 1)
            x = torch.where(gate() & (i == 1), x - 2 * x.mean(dim=1, keepdim=True), x)
        if "saturation" in ops and c > 1:
            s = torch.exp2(rng.randn(r, like=ref).reshape(r, 1, 1, 1) * self.SATURATION_STD)
            m = x.mean(dim=1, keepdim=True)
            x = torch.where(gate(), m + (x - m) * s.to(x.dtype), x)
        if "cutout" in ops:
            size = torch.where(gate().reshape(r, 1), self.CUTOUT_SIZE, 0.0)  # (R, 1)
            center = rng.rand(r, 2, like=ref)
            fy = (torch.arange(h, device=x.device) + 0.5) / h
            fx = (torch.arange(w, device=x.device) + 0.5) / w
            keep_y = (fy - center[:, 1:2]).abs() >= size / 2  # (R, H)
            keep_x = (fx - center[:, 0:1]).abs() >= size / 2  # (R, W)
            x = x * (keep_y[:, :, None] | keep_x[:, None, :]).to(x.dtype).unsqueeze(1)
        return x
