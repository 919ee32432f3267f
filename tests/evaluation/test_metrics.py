"""pass@k against brute-force enumeration of every k-subset, its edge cases, and the averages with their
standard errors."""

from __future__ import annotations

import itertools
import math
import re
import statistics
from fractions import Fraction

import pytest

from distill.evaluation.metrics import mean_pass_at_k, paired_difference, pass_at_1_from_samples, pass_at_k, sign_test


def brute_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """Exact share of the k-subsets of n samples (the first c correct) holding at least one correct."""
    subsets = list(itertools.combinations(range(n), k))
    hits = sum(any(i < c for i in s) for s in subsets)
    return Fraction(hits, len(subsets))


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_enumeration_of_all_subsets(n: int) -> None:
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(float(brute_pass_at_k(n, c, k)), rel=1e-12, abs=1e-15)


def test_pass_at_k_edge_cases() -> None:
    assert pass_at_k(10, 0, 1) == 0.0  # nothing correct
    assert pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0  # everything correct
    assert pass_at_k(10, 3, 10) == 1.0  # k = n: the draw holds every sample
    assert pass_at_k(10, 1, 10) == 1.0
    assert pass_at_k(10, 3, 8) == 1.0  # only 7 wrong samples, 8 draws
    assert pass_at_k(1, 1, 1) == 1.0
    assert pass_at_k(1, 0, 1) == 0.0


@pytest.mark.parametrize(("n", "c"), [(1, 0), (4, 1), (16, 5), (200, 37), (1000, 999)])
def test_pass_at_1_is_c_over_n(n: int, c: int) -> None:
    assert pass_at_k(n, c, 1) == pytest.approx(c / n, rel=1e-12)


def test_pass_at_k_known_values_and_large_n() -> None:
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    # Large n: the binomials would overflow a float, the product does not; compare with exact integers.
    n, c, k = 2000, 3, 100
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)
    assert 0.0 < pass_at_k(10_000, 1, 5000) <= 1.0


@pytest.mark.parametrize(
    ("n", "c", "k", "text"),
    [
        (4, 1, 5, "k=5 is more than the n=4"),
        (4, 5, 1, "c (correct samples) must lie in [0, n=4]"),
        (4, -1, 1, "c (correct samples)"),
        (4, 1, 0, "k must be at least 1"),
        (0, 0, 1, "n (samples per problem) must be at least 1"),
        (4.0, 1, 1, "n must be an integer"),
        (4, True, 1, "c must be an integer"),
    ],
)
def test_pass_at_k_rejects_impossible_counts(n, c, k, text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(text)):
        pass_at_k(n, c, k)


def test_mean_pass_at_k_and_standard_error() -> None:
    counts = [(4, 0), (4, 1), (4, 2), (4, 4)]
    values = [float(brute_pass_at_k(n, c, 2)) for n, c in counts]  # 0, 1/2, 5/6, 1
    mean, se = mean_pass_at_k(counts, 2)
    assert mean == pytest.approx(statistics.mean(values))
    assert se == pytest.approx(statistics.stdev(values) / math.sqrt(len(values)))
    # Problems may differ in n; k=1 gives the mean of c/n.
    mean, _ = mean_pass_at_k([(2, 1), (8, 2)], 1)
    assert mean == pytest.approx((0.5 + 0.25) / 2)


def test_mean_pass_at_k_errors_and_single_problem() -> None:
    with pytest.raises(ValueError, match="no problems"):
        mean_pass_at_k([], 1)
    with pytest.raises(ValueError, match="k=4 is more than the n=2"):
        mean_pass_at_k([(8, 1), (2, 1)], 4)
    mean, se = mean_pass_at_k([(4, 2)], 1)
    assert mean == 0.5 and math.isnan(se)  # no spread from one problem


def test_pass_at_1_from_samples() -> None:
    samples = [[True, False, False, False], [True, True, True, True], [False, False, False, False], [1, 0, 1, 0]]
    mean, se = pass_at_1_from_samples(samples)
    rates = [0.25, 1.0, 0.0, 0.5]
    assert mean == pytest.approx(statistics.mean(rates))
    assert se == pytest.approx(statistics.stdev(rates) / math.sqrt(4))
    # The same as mean pass@1 over (n, c) counts.
    assert (mean, se) == pytest.approx(mean_pass_at_k([(len(s), sum(map(bool, s))) for s in samples], 1))
    # One sample per problem: accuracy and the binomial standard error sqrt(p(1-p)/(m-1)).
    mean, se = pass_at_1_from_samples([[True], [False], [True], [True]])
    assert mean == 0.75
    assert se == pytest.approx(math.sqrt(0.75 * 0.25 / 3))
    # A mapping's values work as well as a list; k may differ per problem.
    mean, _ = pass_at_1_from_samples({"a": [True], "b": [False, True]}.values())
    assert mean == pytest.approx(0.75)


def test_pass_at_1_from_samples_errors() -> None:
    with pytest.raises(ValueError, match="no problems"):
        pass_at_1_from_samples([])
    with pytest.raises(ValueError, match="problem 1 has no samples"):
        pass_at_1_from_samples([[True], []])


@pytest.mark.parametrize(("wins", "losses"), [(0, 0), (1, 0), (10, 2), (2, 10), (7, 7), (30, 12), (0, 9)])
def test_sign_test_against_enumerating_every_outcome(wins: int, losses: int) -> None:
    # two-sided: the probability, under a fair coin, of an outcome no more likely than the one observed
    m = wins + losses
    probs = [Fraction(math.comb(m, i), 2**m) for i in range(m + 1)]
    observed = probs[wins]
    exact = sum(p for p in probs if p <= observed)
    assert sign_test(wins, losses) == pytest.approx(float(min(exact, 1)), abs=1e-12)


def test_paired_difference_sees_what_two_separate_errors_hide() -> None:
    # 150 problems; B solves everything A solves and 12 more: separately 0.30 +- 0.037 vs 0.38 +- 0.040 (the
    # intervals overlap), pairwise +0.08 with 12 wins and no loss, p = 2 / 2**12
    a = [1.0] * 45 + [0.0] * 105
    b = [1.0] * 57 + [0.0] * 93
    r = paired_difference(a, b)
    assert r["diff"] == pytest.approx(0.08) and (r["b_better"], r["a_better"]) == (12, 0)
    assert r["p_value"] == pytest.approx(2 / 2**12)
    assert 0 < r["ci_low"] < 0.08 < r["ci_high"] < 0.16
    assert r["stderr"] == pytest.approx(statistics.stdev([x - y for x, y in zip(b, a, strict=True)]) / math.sqrt(150))
    assert paired_difference(a, b) == r  # seeded bootstrap
    swapped = paired_difference(b, a)
    assert swapped["diff"] == pytest.approx(-0.08) and (swapped["b_better"], swapped["a_better"]) == (0, 12)


def test_paired_difference_with_k_samples_and_bad_input() -> None:
    r = paired_difference([0.25, 0.5, 1.0], [0.5, 0.5, 0.75])
    assert r["diff"] == pytest.approx(0.0) and (r["b_better"], r["a_better"]) == (1, 1) and r["p_value"] == 1.0
    with pytest.raises(ValueError, match="same problems"):
        paired_difference([1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="no problems"):
        paired_difference([], [])
