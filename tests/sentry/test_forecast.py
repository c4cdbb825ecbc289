"""Holt's forecast, its interval and its back-test against the naive forecast."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tools.sentry.forecast import backtest, holt_forecast
from tools.sentry.health import prediction

RECORDED = json.loads((Path(__file__).parent / "data" / "latency_hourly.json").read_text())[
    "latency_ms"
]


def test_holt_follows_a_trend_and_its_interval_widens() -> None:
    series = [100 + 2 * h for h in range(48)]
    result = holt_forecast(series, 24)
    assert abs(result["forecast"][0] - 196) < 1 and abs(result["forecast"][23] - 242) < 1
    widths = [hi - lo for lo, hi in zip(result["lower"], result["upper"], strict=True)]
    assert widths == sorted(widths)
    assert all(
        lo <= f <= hi
        for lo, f, hi in zip(result["lower"], result["forecast"], result["upper"], strict=True)
    )


def test_bounds_clip_forecasts() -> None:
    falling = [1.0 - 0.05 * h for h in range(20)]
    result = holt_forecast(falling, 24, lower_bound=0.0, upper_bound=1.0)
    assert min(result["lower"]) == 0.0 and max(result["upper"]) <= 1.0


def test_backtest_on_the_recorded_series_matches_an_independent_naive_error() -> None:
    report = backtest(RECORDED, horizon=24, min_train=48)
    assert report["origins"] == 5  # origins at hours 144, 120, 96, 72, 48
    errors = [
        abs(RECORDED[o + k] - RECORDED[o - 24 + k])
        for o in (48, 72, 96, 120, 144)
        for k in range(24)
    ]
    assert math.isclose(report["mae_naive"], sum(errors) / len(errors), rel_tol=1e-5)
    assert report["mae_holt"] > 0
    assert report["trust"] == (report["mae_holt"] <= report["mae_naive"])
    assert math.isclose(report["skill"], 1 - report["mae_holt"] / report["mae_naive"], abs_tol=1e-3)


def test_backtest_prefers_holt_on_a_trend_and_naive_on_a_daily_cycle() -> None:
    trend = [50 + 3 * h for h in range(120)]
    assert backtest(trend)["trust"] is True and backtest(trend)["skill"] > 0.9
    cycle = [100 + 40 * math.sin(2 * math.pi * h / 24) for h in range(120)]
    report = backtest(cycle)
    assert report["trust"] is False and report["mae_naive"] < 1e-9 < report["mae_holt"]


def test_prediction_needs_history() -> None:
    assert prediction([1.0] * 3, [10.0] * 3)["method"] == "insufficient_data"
    full = prediction([1.0] * 72, RECORDED[:72])
    assert full["method"] == "holt" and full["horizon_hours"] == 24
    assert full["availability"]["expected"] == 1.0
    assert (
        full["latency_ms"]["lower"] <= full["latency_ms"]["expected"] <= full["latency_ms"]["upper"]
    )
    assert full["latency_ms"]["backtest"]["origins"] == 1
