"""Density and coverage (Naeem et al. 2020): hand-counted balls, limiting cases, and a loop-based
reference on random points."""

import math

import pytest
import torch

import ganbench.metrics.knn as knn
from ganbench.metrics.knn import density_coverage


def loop_density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int) -> tuple[float, float]:
    """The definitions written out: NND_k(X_i) is the k-th smallest distance from X_i to the *other*
    real samples; Y_j is in the ball of X_i when its distance is below that radius (open ball)."""
    real, fake = real.tolist(), fake.tolist()
    radius = [sorted(math.dist(x, y) for j, y in enumerate(real) if j != i)[k - 1] for i, x in enumerate(real)]
    inside = [[math.dist(x, y) < radius[i] for y in fake] for i, x in enumerate(real)]
    density = sum(sum(row) for row in inside) / (k * len(fake))
    coverage = sum(any(row) for row in inside) / len(real)
    return density, coverage


LINE = torch.arange(10.0).unsqueeze(1)  # real samples 0, 1, ..., 9 on a line
# 5th-nearest-other distances: 5 4 3 3 3 3 3 3 4 5, so the open balls are
# (-5,5) (-3,5) (-1,5) (0,6) (1,7) (2,8) (3,9) (4,10) (4,12) (4,14)


@pytest.mark.parametrize(("fake", "density", "coverage"), [
    # 0.5 lies in the balls of 0, 1, 2, 3; 9.5 in those of 7, 8, 9; 20 in none:
    # density (4 + 3 + 0) / (5 * 3); the balls of 4, 5, 6 hold no fake: coverage 7/10
    ([0.5, 9.5, 20.0], 7 / 15, 0.7),
    # 4.5 lies in all ten balls
    ([4.5], 10 / 5, 1.0),
    # 5 is on the boundary of the balls of 0, 1 and 2 and outside them (open balls): 7 balls
    ([5.0], 7 / 5, 0.7),
])
def test_density_and_coverage_on_a_line_counted_by_hand(fake, density, coverage):
    assert density_coverage(LINE, torch.tensor(fake).unsqueeze(1), k=5) == (pytest.approx(density, abs=1e-15),
                                                                           coverage)
    assert loop_density_coverage(LINE, torch.tensor(fake).unsqueeze(1), 5) == pytest.approx((density, coverage))


SQUARE = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # k = 2: every radius is 1


@pytest.mark.parametrize(("fake", "density", "coverage"), [
    ([[0.5, 0.5]], 4 / 2, 1.0),  # the centre is 0.71 from every corner
    ([[1.5, 1.0], [2.0, 0.0]], 1 / 4, 1 / 4),  # (1.5, 1) only in the ball of (1, 1); (2, 0) on the boundary of (1, 0)'s
])
def test_density_and_coverage_in_the_plane_counted_by_hand(fake, density, coverage):
    assert density_coverage(SQUARE, torch.tensor(fake), k=2) == (density, coverage)


def test_a_set_against_itself_has_density_and_coverage_one():
    # each open ball holds its centre and the k - 1 nearer neighbours: k fakes per ball, k N in all
    real = torch.randn(300, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert density_coverage(real, real) == (1.0, 1.0)
    assert density_coverage(real, real, k=3) == (1.0, 1.0)


def test_far_away_fakes_have_density_and_coverage_zero():
    g = torch.Generator().manual_seed(1)
    assert density_coverage(torch.randn(100, 4, generator=g), torch.randn(80, 4, generator=g) + 100.0) == (0.0, 0.0)


@pytest.mark.parametrize("k", [5, 3])
def test_density_and_coverage_agree_with_the_loop_reference(monkeypatch, k):
    g = torch.Generator().manual_seed(2)
    real = torch.randn(70, 3, generator=g, dtype=torch.float64)
    fake = 0.8 * torch.randn(50, 3, generator=g, dtype=torch.float64) + 0.4
    expected = loop_density_coverage(real, fake, k)
    assert 0 < expected[1] < 1 and expected[0] > 0  # neither limiting case
    assert density_coverage(real, fake, k) == pytest.approx(expected, abs=1e-15)
    # the same counts when the distances come in chunks of one row
    monkeypatch.setattr(knn, "CHUNK_ELEMENTS", 1)
    assert density_coverage(real, fake, k) == pytest.approx(expected, abs=1e-15)
    # float32 features are measured in float64
    assert density_coverage(real.float(), fake.float(), k) == density_coverage(real.float().double(),
                                                                               fake.float().double(), k)


def test_too_few_real_samples_for_k():
    with pytest.raises(ValueError, match="k = 5 needs at least 6 points, got 5"):
        density_coverage(torch.randn(5, 2), torch.randn(3, 2))


def test_samples_of_the_real_distribution_have_the_expected_density_and_coverage():
    """For X and Y from one continuous distribution the other samples, ordered by distance to X_i, are
    real or generated in a uniformly random order, so E[density] = 1 and E[coverage] = 1 - C(N-1, k) /
    C(N-1+M, k). A radius off by one neighbour would give E[density] = (k -/+ 1) / k."""
    g = torch.Generator().manual_seed(3)
    n, k, repeats = 200, 5, 100
    runs = torch.tensor([density_coverage(torch.randn(n, 8, generator=g, dtype=torch.float64),
                                          torch.randn(n, 8, generator=g, dtype=torch.float64), k)
                         for _ in range(repeats)])
    mean, se = runs.mean(0), runs.std(0) / math.sqrt(repeats)
    expected = torch.tensor([1.0, 1 - math.comb(n - 1, k) / math.comb(2 * n - 1, k)])
    assert se[0] < 0.01 and se[1] < 0.002
    assert torch.all((mean - expected).abs() < 4 * se), (mean, se, expected)
