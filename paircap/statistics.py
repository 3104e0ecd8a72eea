"""Small-sample statistics for caption probes: Wilson intervals of shares, paired bootstrap intervals of differences,
and McNemar's exact test of paired yes/no outcomes (numpy and the standard library only)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist

import numpy as np


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a binomial share `successes / n` at `confidence`."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n and n >= 1, got {successes} of {n}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    share = successes / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    statistic: Callable[[np.ndarray], float] = np.mean,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """
    `statistic(a) - statistic(b)` over paired per-item scores (the same items, in the same order), and its percentile
    bootstrap interval: the items are resampled with replacement, each keeping its pair.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(
            f"paired_bootstrap needs two equally long, non-empty 1-d score lists, got {a.shape}, {b.shape}"
        )
    difference = float(statistic(a) - statistic(b))
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(a), size=(resamples, len(a)))
    differences = np.array([statistic(a[rows]) - statistic(b[rows]) for rows in samples])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return difference, float(low), float(high)


def mcnemar_p(a_only: int, b_only: int) -> float:
    """McNemar's exact two-sided p-value: the discordant pairs (yes for a only, yes for b only) against a fair coin."""
    if a_only < 0 or b_only < 0:
        raise ValueError(f"mcnemar_p needs counts >= 0, got {a_only}, {b_only}")
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1)) / 2**n
    return min(1.0, 2 * tail)


__all__ = ["mcnemar_p", "paired_bootstrap", "wilson_interval"]
