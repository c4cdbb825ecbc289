"""Holt's linear exponential smoothing with a prediction interval, and its back-test.

``holt_forecast`` fits level and trend by grid search on one-step squared error and forecasts
``horizon`` steps with an approximate 95 % interval (Hyndman & Athanasopoulos, FPP3 §8.7: the
h-step variance of Holt's method is ``sigma^2 * (1 + sum_{j<h} (alpha + alpha*beta*j)^2)``).
``backtest`` replays the history with rolling origins and compares the mean absolute error of
Holt against the naive "tomorrow = today" forecast (the value 24 steps earlier), so users can
see whether to trust the forecast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

GRID = tuple(round(0.1 * i, 1) for i in range(1, 10))
Z95 = 1.96


@dataclass(frozen=True)
class HoltFit:
    alpha: float
    beta: float
    level: float
    trend: float
    sigma: float


def fit_holt(series: list[float]) -> HoltFit:
    """The (alpha, beta) on a 0.1 grid with the least one-step squared error."""
    if len(series) < 2:
        value = series[0] if series else 0.0
        return HoltFit(0.5, 0.1, value, 0.0, 0.0)
    best: tuple[float, HoltFit] | None = None
    for alpha in GRID:
        for beta in GRID:
            sse, level, trend = _run(series, alpha, beta)
            if best is None or sse < best[0]:
                sigma = math.sqrt(sse / max(1, len(series) - 2))
                best = (sse, HoltFit(alpha, beta, level, trend, sigma))
    assert best is not None
    return best[1]


def _run(series: list[float], alpha: float, beta: float) -> tuple[float, float, float]:
    level, trend = series[0], series[1] - series[0]
    sse = 0.0
    for value in series[1:]:
        predicted = level + trend
        sse += (value - predicted) ** 2
        new_level = alpha * value + (1 - alpha) * predicted
        trend = beta * (new_level - level) + (1 - beta) * trend
        level = new_level
    return sse, level, trend


def holt_forecast(
    series: list[float],
    horizon: int,
    *,
    lower_bound: float | None = None,
    upper_bound: float | None = None,
) -> dict[str, Any]:
    """Point forecasts and 95 % intervals for ``horizon`` steps, clipped to the given bounds."""
    fit = fit_holt(series)
    points, lows, highs = [], [], []
    spread = 0.0
    for h in range(1, horizon + 1):
        if h > 1:
            spread += (fit.alpha + fit.alpha * fit.beta * (h - 1)) ** 2
        half = Z95 * fit.sigma * math.sqrt(1 + spread)
        mean = fit.level + h * fit.trend
        points.append(_clip(mean, lower_bound, upper_bound))
        lows.append(_clip(mean - half, lower_bound, upper_bound))
        highs.append(_clip(mean + half, lower_bound, upper_bound))
    return {
        "forecast": points,
        "lower": lows,
        "upper": highs,
        "alpha": fit.alpha,
        "beta": fit.beta,
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
    lower_bound: float | None = None,
    upper_bound: float | None = None,
) -> dict[str, Any]:
    """Rolling-origin MAE of Holt and of the naive forecast over the last ``max_origins`` days."""
    origins = list(range(len(series) - horizon, min_train - 1, -horizon))[:max_origins]
    if not origins:
        return {"origins": 0, "mae_holt": None, "mae_naive": None, "skill": None, "trust": False}
    holt_err = naive_err = 0.0
    count = 0
    for origin in origins:
        train, actual = series[:origin], series[origin : origin + horizon]
        predicted = holt_forecast(train, horizon, lower_bound=lower_bound, upper_bound=upper_bound)[
            "forecast"
        ]
        naive = train[-horizon:]
        for a, p, n in zip(actual, predicted, naive, strict=True):
            holt_err += abs(a - p)
            naive_err += abs(a - n)
            count += 1
    mae_holt, mae_naive = holt_err / count, naive_err / count
    if mae_naive > 0:
        skill: float | None = 1 - mae_holt / mae_naive
    else:
        skill = 0.0 if mae_holt == 0 else None
    return {
        "origins": len(origins),
        "mae_holt": round(mae_holt, 6),
        "mae_naive": round(mae_naive, 6),
        "skill": None if skill is None else round(skill, 4),
        "trust": mae_holt <= mae_naive,
    }
