"""Exponential smoothing forecasts with prediction intervals, chosen and judged by back-test.

Two models, fitted by grid search on one-step squared error:

* Holt's linear method (level + trend);
* additive Holt-Winters (level + trend + a 24-hour season), once two days of history exist.

Intervals are approximate 95 % ones from the ETS(A,A,N) / ETS(A,A,A) h-step variances in
Hyndman & Athanasopoulos, *Forecasting: Principles and Practice* (3rd ed.), table 5.2 / §8.7.
``backtest`` replays the history with rolling origins and compares a model's mean absolute
error with the naive "tomorrow = today" forecast (the value 24 steps earlier); ``forecast``
keeps whichever model back-tested better and reports that comparison, so users can see
whether to trust it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

PERIOD = 24
HOLT_GRID = [(a / 10, b / 10, 0.0) for a in range(1, 10) for b in range(1, 10)]
HW_GRID = [
    (a, b, g) for a in (0.1, 0.3, 0.5, 0.8) for b in (0.01, 0.05, 0.2) for g in (0.05, 0.2, 0.5)
]
Z95 = 1.96


@dataclass(frozen=True)
class Fit:
    alpha: float
    beta: float
    gamma: float
    level: float
    trend: float
    sigma: float
    season: list[float] = field(default_factory=list)  # next PERIOD seasonal terms, in order


def _smooth(
    series: list[float], alpha: float, beta: float, gamma: float, seasonal: bool
) -> tuple[float, Fit]:
    if seasonal:
        first = sum(series[:PERIOD]) / PERIOD
        second = sum(series[PERIOD : 2 * PERIOD]) / PERIOD
        level, trend = first, (second - first) / PERIOD
        season = [v - first for v in series[:PERIOD]]
        start = PERIOD
    else:
        level, trend, season, start = series[0], series[1] - series[0], [0.0] * PERIOD, 1
    sse = 0.0
    for t in range(start, len(series)):
        value, s = series[t], season[t % PERIOD]
        sse += (value - (level + trend + s)) ** 2
        new_level = alpha * (value - s) + (1 - alpha) * (level + trend)
        trend = beta * (new_level - level) + (1 - beta) * trend
        if seasonal:
            season[t % PERIOD] = gamma * (value - new_level) + (1 - gamma) * s
        level = new_level
    n = len(series)
    upcoming = [season[(n + i) % PERIOD] for i in range(PERIOD)]
    sigma = math.sqrt(sse / max(1, n - start - 1))
    return sse, Fit(alpha, beta, gamma, level, trend, sigma, upcoming if seasonal else [])


def fit(series: list[float], *, seasonal: bool = False) -> Fit:
    """The grid point with the least one-step squared error."""
    if len(series) < 2:
        return Fit(0.5, 0.1, 0.0, series[0] if series else 0.0, 0.0, 0.0)
    grid = HW_GRID if seasonal else HOLT_GRID
    return min((_smooth(series, a, b, g, seasonal) for a, b, g in grid), key=lambda r: r[0])[1]


def _variance_factor(f: Fit, h: int) -> float:
    """sigma_h^2 / sigma^2 for ETS(A,A,N) or ETS(A,A,A) with beta = alpha * beta*."""
    b = f.alpha * f.beta
    factor = 1 + (h - 1) * (f.alpha**2 + f.alpha * b * h + b**2 * h * (2 * h - 1) / 6)
    if f.season:
        k = (h - 1) // PERIOD
        factor += k * f.gamma * (2 * f.alpha + f.gamma + b * PERIOD * (k + 1))
    return factor


def holt_forecast(
    series: list[float],
    horizon: int,
    *,
    seasonal: bool = False,
    lower_bound: float | None = None,
    upper_bound: float | None = None,
) -> dict[str, Any]:
    """Point forecasts and 95 % intervals for ``horizon`` steps, clipped to the given bounds."""
    f = fit(series, seasonal=seasonal)
    points, lows, highs = [], [], []
    for h in range(1, horizon + 1):
        mean = f.level + h * f.trend + (f.season[(h - 1) % PERIOD] if f.season else 0.0)
        half = Z95 * f.sigma * math.sqrt(_variance_factor(f, h))
        points.append(_clip(mean, lower_bound, upper_bound))
        lows.append(_clip(mean - half, lower_bound, upper_bound))
        highs.append(_clip(mean + half, lower_bound, upper_bound))
    return {
        "forecast": points,
        "lower": lows,
        "upper": highs,
        "alpha": f.alpha,
        "beta": f.beta,
        "gamma": f.gamma if seasonal else None,
    }


def _clip(value: float, low: float | None, high: float | None) -> float:
    if low is not None:
        value = max(low, value)
    if high is not None:
        value = min(high, value)
    return round(value, 6)


def backtest(
    series: list[float],
    *,
    horizon: int = 24,
    min_train: int = 48,
    max_origins: int = 7,
    seasonal: bool = False,
    lower_bound: float | None = None,
    upper_bound: float | None = None,
) -> dict[str, Any]:
    """Rolling-origin MAE of the model and of the naive forecast over the last origins."""
    origins = list(range(len(series) - horizon, min_train - 1, -horizon))[:max_origins]
    if not origins:
        return {"origins": 0, "mae_model": None, "mae_naive": None, "skill": None, "trust": False}
    model_err = naive_err = 0.0
    for origin in origins:
        train, actual = series[:origin], series[origin : origin + horizon]
        predicted = holt_forecast(
            train, horizon, seasonal=seasonal, lower_bound=lower_bound, upper_bound=upper_bound
        )["forecast"]
        for a, p, n in zip(actual, predicted, train[-horizon:], strict=True):
            model_err += abs(a - p)
            naive_err += abs(a - n)
    count = len(origins) * horizon
    mae_model, mae_naive = model_err / count, naive_err / count
    # Skill is undefined when the naive forecast is (numerically) perfect.
    skill = round(1 - mae_model / mae_naive, 4) if mae_naive > 1e-9 else None
    return {
        "origins": len(origins),
        "mae_model": round(mae_model, 6),
        "mae_naive": round(mae_naive, 6),
        "skill": skill,
        "trust": mae_model <= mae_naive + 1e-9,
    }


def forecast(
    series: list[float],
    horizon: int = 24,
    *,
    lower_bound: float | None = None,
    upper_bound: float | None = None,
) -> dict[str, Any]:
    """The better-back-tested of Holt and Holt-Winters: its forecast, interval and back-test."""

    def run(seasonal: bool) -> dict[str, Any]:
        return backtest(
            series,
            horizon=horizon,
            seasonal=seasonal,
            lower_bound=lower_bound,
            upper_bound=upper_bound,
        )

    tests = {"holt": run(False)}
    if len(series) >= 2 * PERIOD + horizon:
        tests["holt_winters"] = run(True)
    method = min(tests, key=lambda m: tests[m]["mae_model"] if tests[m]["origins"] else math.inf)
    result = holt_forecast(
        series,
        horizon,
        seasonal=method == "holt_winters",
        lower_bound=lower_bound,
        upper_bound=upper_bound,
    )
    return {
        "method": method,
        **result,
        "backtest": tests[method],
        "candidates": {m: t["mae_model"] for m, t in tests.items()},
    }
