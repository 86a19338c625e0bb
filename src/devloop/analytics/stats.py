"""The statistics the reports and autotune share, in one place.

* :func:`theil_sen`, :func:`theil_sen_rows`: the Theil-Sen slope (the median of the pairwise
  slopes, robust to a third of outliers) and Kendall's tau-a, for ``health``'s leak trends and
  autotune's leak check;
* :func:`weighted_percentile`: the value at a percentile of weighted values (autotune's decayed
  histograms).

Percentiles over a report's ticks are DuckDB's ``quantile_cont`` (linear interpolation), in
SQL; ``_series.quantiles_from_counts_sql`` gives the same from per-value counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


def theil_sen(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> tuple[float, float]:
    """The Theil-Sen slope of ``y`` on ``x`` and Kendall's tau-a of the pair (0, 0 for < 2
    distinct x)."""
    import numpy as np

    i, j = np.triu_indices(len(x), k=1)
    dx = x[j] - x[i]
    dy = y[j] - y[i]
    keep = dx != 0
    if not keep.any():
        return 0.0, 0.0
    slope = float(np.median(dy[keep] / dx[keep]))
    signs = np.sign(dx[keep]) * np.sign(dy[keep])
    tau = float(signs.sum() / keep.sum())
    return slope, tau


#: Rows :func:`theil_sen_rows` fits at once (few, so the pairwise slopes stay in the CPU's
#: caches).
_BATCH = 16


def theil_sen_rows(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """:func:`theil_sen` of each row of the 2-D ``x`` against the same row of each series in
    ``y`` (shape ``(..., rows, points)``, e.g. ``(2, rows, points)`` for two series per row):
    the slopes and the taus, each of shape ``y.shape[:-1]``, exactly what :func:`theil_sen`
    gives row by row."""
    import numpy as np

    count, width = x.shape
    series = y.reshape(int(np.prod(y.shape[:-2])), count, width)
    slopes = np.zeros(series.shape[:2])
    taus = np.zeros(series.shape[:2])
    i, j = np.triu_indices(width, k=1)
    pairs = len(i)
    half = pairs // 2
    for lo in range(0, count if pairs else 0, _BATCH):
        hi = min(lo + _BATCH, count)
        dx = x[lo:hi, j] - x[lo:hi, i]
        rising = bool((dx > 0).all())
        if not rising and not (dx != 0).all():
            # equal x somewhere: those pairs are left out, row by row
            for k in range(lo, hi):
                for s in range(len(series)):
                    slopes[s, k], taus[s, k] = theil_sen(x[k], series[s, k])
            continue
        for s in range(len(series)):
            rows = series[s, lo:hi]
            dy = rows[:, j] - rows[:, i]
            ratios = dy / dx
            if pairs % 2 or np.isnan(ratios).any():
                slopes[s, lo:hi] = np.median(ratios, axis=1)
            else:
                # np.median's (a + b) / 2 of the middle two, with one partition instead of two
                part = np.partition(ratios, half, axis=1)
                slopes[s, lo:hi] = (part[:, :half].max(axis=1) + part[:, half]) / 2
            signs = np.sign(dy) if rising else np.sign(dx) * np.sign(dy)
            taus[s, lo:hi] = signs.sum(axis=1) / pairs
    shape = y.shape[:-1]
    return slopes.reshape(shape), taus.reshape(shape)


def weighted_percentile(
    values: npt.NDArray[np.int64], weights: npt.NDArray[np.float64], q: float
) -> int | None:
    """The smallest of ``values`` at which the cumulative weight (values ascending) reaches
    ``q`` percent (0-100) of the total; None when no weight is positive."""
    import numpy as np

    keep = weights > 0
    if not keep.any():
        return None
    values, weights = values[keep], weights[keep]
    order = np.argsort(values, kind="stable")
    unique, first = np.unique(values[order], return_index=True)
    cumulative = np.cumsum(np.add.reduceat(weights[order], first))
    target = q / 100.0 * cumulative[-1]
    index = int(np.searchsorted(cumulative, target * (1 - 1e-12), side="left"))
    return int(unique[min(index, len(unique) - 1)])
