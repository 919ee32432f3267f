"""Sampling metrics for reasoning evals: the unbiased pass@k estimator and pass@1 with its standard error.

pass@k is the chance that at least one of k samples, drawn without replacement from the n samples of a
problem of which c are correct, is correct: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021, "Evaluating Large
Language Models Trained on Code"). It is unbiased, unlike 1 - (1 - c/n)^k, and it is computed here as a
product of factors in [0, 1], so it never forms the huge binomials that overflow floats for large n.

Scores are averaged over problems; the standard error is the sample standard deviation over problems
divided by sqrt(number of problems): the spread expected from the choice of problems, which is what
decides whether two checkpoints really differ.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

import numpy as np


def _check(n: int, c: int, k: int) -> None:
    """Reject counts that describe no possible draw, with a message naming the bad value."""
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"pass@k: {name} must be an integer, got {value!r}")
    if n < 1:
        raise ValueError(f"pass@k: n (samples per problem) must be at least 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k: c (correct samples) must lie in [0, n={n}], got c={c}")
    if k < 1:
        raise ValueError(f"pass@k: k must be at least 1, got {k}")
    if k > n:
        raise ValueError(f"pass@k: k={k} is more than the n={n} samples of a problem; draw k <= n")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    C(n-c, k) / C(n, k) (every one of the k drawn samples is wrong) equals both
    prod_{j<k} (n-c-j) / (n-j) and prod_{n-c<i<=n} (1 - k/i); the shorter product is used. Each factor lies
    in [0, 1], so the result is accurate for any n. Raises ValueError when k > n, c > n or a count is
    out of range."""
    _check(n, c, k)
    if n - c < k:  # fewer wrong samples than draws: some draw is always correct
        return 1.0
    all_wrong = 1.0
    if k <= c:
        for j in range(k):
            all_wrong *= (n - c - j) / (n - j)
    else:
        for i in range(n - c + 1, n + 1):
            all_wrong *= 1.0 - k / i
    return 1.0 - all_wrong


def _mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample std / sqrt(len)); the error is NaN for a single value, where no
    spread can be estimated."""
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, statistics.stdev(values) / math.sqrt(len(values))


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> tuple[float, float]:
    """pass@k averaged over problems, and its standard error over problems.

    counts holds one (n, c) pair per problem (n samples, c of them correct); problems may have different n,
    but each needs n >= k. The standard error is NaN when there is only one problem."""
    counts = list(counts)
    if not counts:
        raise ValueError("pass@k: no problems to average over")
    return _mean_and_stderr([pass_at_k(n, c, k) for n, c in counts])


def pass_at_1_from_samples(samples: Iterable[Sequence[bool]]) -> tuple[float, float]:
    """pass@1 from the verdicts of k samples per problem: the share of correct samples of each problem,
    averaged over problems, with its standard error over problems (NaN for a single problem).

    samples holds one sequence of verdicts (bools, or 0/1) per problem; k may differ between problems.
    With one sample per problem this is plain accuracy and its binomial standard error."""
    rates = []
    for i, verdicts in enumerate(samples):
        verdicts = list(verdicts)
        if not verdicts:
            raise ValueError(f"pass@1: problem {i} has no samples")
        rates.append(sum(bool(v) for v in verdicts) / len(verdicts))
    if not rates:
        raise ValueError("pass@1: no problems to average over")
    return _mean_and_stderr(rates)


def paired_difference(
    a: Sequence[float], b: Sequence[float], resamples: int = 10_000, seed: int = 0
) -> dict[str, float | int]:
    """How model B differs from model A on the SAME problems: a[i] and b[i] are the two models' pass@1 on
    problem i (0/1 for one greedy sample, a share of correct samples for k > 1).

    Two models scored on one problem set share the problems' difficulty, so the difference of their means has
    a much smaller error than the two separate standard errors suggest; testing it pairwise is what tells
    "trained on verified traces" from "trained on unfiltered ones" at a few percent. Returned:
    - diff: mean(b) - mean(a); stderr: the standard error of the per-problem differences;
    - ci_low/ci_high: a 95% paired bootstrap interval of diff (problems resampled with replacement, seeded);
    - b_better/a_better: problems on which B (A) scores higher: the discordant pairs;
    - p_value: the exact two-sided sign test on those discordant problems, which for 0/1 scores is McNemar's
      exact test (ties carry no information about which model is better and are left out).
    Raises ValueError when the lists differ in length or are empty."""
    if len(a) != len(b):
        raise ValueError(f"paired comparison: {len(a)} scores against {len(b)}; both models need the same problems")
    if not a:
        raise ValueError("paired comparison: no problems")
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    n = d.size
    diff, stderr = _mean_and_stderr(d.tolist())
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # bounded memory: 1000 resamples of n problems at a time
        stop = min(start + 1000, resamples)
        means[start:stop] = d[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    b_better, a_better = int((d > 0).sum()), int((d < 0).sum())
    return {
        "n": n,
        "diff": diff,
        "stderr": stderr,
        "ci_low": float(np.quantile(means, 0.025)),
        "ci_high": float(np.quantile(means, 0.975)),
        "b_better": b_better,
        "a_better": a_better,
        "p_value": sign_test(b_better, a_better),
    }


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided binomial test of wins vs losses under p = 1/2 (McNemar's exact test on discordant
    pairs): the chance of a split at least this uneven if neither side were better. 1.0 with no pairs."""
    m = wins + losses
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(wins, losses) + 1)) / 2.0**m
    return min(1.0, 2.0 * tail)
