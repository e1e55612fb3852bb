"""How far the comparison's numbers can be trusted: a Wilson interval for a success rate measured on n episodes, and
a bootstrap interval for a mean over training seeds.

The comparison's held-out success rates are counts of won episodes out of a few dozen, where a difference of two wins
is noise. Reporting each rate with its 95% interval says so in the table itself. Wilson's interval (rather than the
normal approximation p ± z·sqrt(p(1-p)/n)) stays inside [0, 1] and is not empty at 0 or n wins, which is where
small agent evaluations often are.

Over training seeds (three to five runs per method) the question is how far the mean gain could move with other
seeds: `bootstrap_interval` resamples the seeds with scipy's `stats.bootstrap` (percentile method, a fixed random
generator, so a report is reproducible). With so few seeds the interval is coarse, and it says so by being wide.
"""

from __future__ import annotations

import math

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval


def wilson_interval(wins: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval (low, high) for `wins` successes in `n` trials."""
    if n < 1 or not 0 <= wins <= n:
        raise ValueError(f"wilson_interval needs 0 <= wins <= n and n >= 1, got wins={wins}, n={n}")
    p, z2 = wins / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(values: list[float], confidence: float = 0.95, resamples: int = 9999, seed: int = 0):
    """The percentile bootstrap interval (low, high) of the mean of `values` (scipy.stats.bootstrap); None for fewer
    than 2 values."""
    if len(values) < 2:
        return None
    import numpy as np
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=float)
    if np.all(data == data[0]):  # every seed agrees: nothing to resample
        return float(data[0]), float(data[0])
    result = bootstrap((data,), np.mean, confidence_level=confidence, n_resamples=resamples, method="percentile",
                       rng=np.random.default_rng(seed))  # fmt: skip
    return float(result.confidence_interval.low), float(result.confidence_interval.high)
