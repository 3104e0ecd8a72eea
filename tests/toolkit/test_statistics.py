"""`paircap.statistics` against values worked out by hand or published."""

import numpy as np
import pytest

from paircap.statistics import mcnemar_p, paired_bootstrap, wilson_interval


def test_wilson_interval_known_values():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 20) == pytest.approx((0.0, 0.1611), abs=1e-4)
    assert wilson_interval(20, 20) == pytest.approx((0.8389, 1.0), abs=1e-4)
    assert wilson_interval(5, 10, confidence=0.99)[0] < 0.2366  # wider at higher confidence


@pytest.mark.parametrize("successes, n", [(1, 0), (-1, 5), (6, 5)])
def test_wilson_interval_refuses_impossible_counts(successes, n):
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(successes, n)


def test_mcnemar_exact_by_hand():
    assert mcnemar_p(1, 6) == pytest.approx(2 * (1 + 7) / 2**7)  # P(X <= 1 | n = 7, 1/2), two-sided
    assert mcnemar_p(0, 5) == pytest.approx(2 / 2**5)
    assert mcnemar_p(6, 1) == mcnemar_p(1, 6)
    assert mcnemar_p(3, 3) == 1.0 and mcnemar_p(0, 0) == 1.0


def test_paired_bootstrap_difference_interval_and_determinism():
    a = np.array([1, 1, 1, 0, 1, 0, 1, 1], float)
    b = np.array([0, 0, 1, 0, 1, 0, 0, 1], float)
    difference, low, high = paired_bootstrap(a, b, resamples=500, seed=3)
    assert difference == pytest.approx(0.375) and low <= difference <= high
    assert paired_bootstrap(a, b, resamples=500, seed=3) == (difference, low, high)
    assert paired_bootstrap(a, a) == (0.0, 0.0, 0.0)  # identical pairs never differ
    assert paired_bootstrap(a, b, statistic=np.median, resamples=50)[0] == 1.0


def test_paired_bootstrap_needs_paired_scores():
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap([1, 0], [1])
