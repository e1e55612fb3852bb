"""How far a success rate measured on n episodes can be trusted: the Wilson score interval of a binomial proportion.

The comparison's held-out success rates are counts of won episodes out of a few dozen, where a difference of two wins
is noise. Reporting each rate with its 95% interval says so in the table itself. Wilson's interval (rather than the
normal approximation p ± z·sqrt(p(1-p)/n)) stays inside [0, 1] and is not empty at 0 or n wins, which is where
small agent evaluations often are.
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
