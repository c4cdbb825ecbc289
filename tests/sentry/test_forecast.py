"""Exponential smoothing forecasts, their intervals and their back-test against naive."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tools.sentry.forecast import backtest, forecast, holt_forecast
from tools.sentry.health import prediction

RECORDED = json.loads((Path(__file__).parent / "data" / "latency_hourly.json").read_text())[
    "latency_ms"
]


def test_holt_follows_a_trend_and_its_interval_widens() -> None:
    series = [100 + 2 * h for h in range(48)]
    result = holt_forecast(series, 24)
    assert abs(result["forecast"][0] - 196) < 1 and abs(result["forecast"][23] - 242) < 1
    noisy = [100 + 2 * h + (5 if h % 3 else -5) for h in range(72)]
    result = holt_forecast(noisy, 24)
    widths = [hi - lo for lo, hi in zip(result["lower"], result["upper"], strict=True)]
    assert widths == sorted(widths) and widths[-1] > widths[0] > 0
    triples = zip(result["lower"], result["forecast"], result["upper"], strict=True)
    assert all(lo <= f <= hi for lo, f, hi in triples)


def test_bounds_clip_forecasts() -> None:
    falling = [1.0 - 0.05 * h for h in range(20)]
    result = holt_forecast(falling, 24, lower_bound=0.0, upper_bound=1.0)
    assert min(result["lower"]) == 0.0 and max(result["upper"]) <= 1.0


def test_backtest_on_the_recorded_series_against_an_independent_naive_error() -> None:
    origins = (144, 120, 96, 72, 48)
    errors = [abs(RECORDED[o + k] - RECORDED[o - 24 + k]) for o in origins for k in range(24)]
    naive_mae = sum(errors) / len(errors)

    holt = backtest(RECORDED)
    seasonal = backtest(RECORDED, seasonal=True)
    for report in (holt, seasonal):
        assert report["origins"] == 5
        assert math.isclose(report["mae_naive"], naive_mae, rel_tol=1e-5)
        assert math.isclose(report["skill"], 1 - report["mae_model"] / naive_mae, abs_tol=1e-3)
    # A trend-only model extrapolates the daily swing; it must not be trusted on this series.
    assert holt["trust"] is False and holt["mae_model"] > naive_mae
    assert seasonal["trust"] is True and seasonal["mae_model"] < naive_mae

    chosen = forecast(RECORDED)
    assert chosen["method"] == "holt_winters" and chosen["backtest"] == seasonal
    assert chosen["candidates"] == {
        "holt": holt["mae_model"],
        "holt_winters": seasonal["mae_model"],
    }


def test_backtest_prefers_holt_on_a_trend_and_naive_on_a_pure_cycle() -> None:
    trend = [50 + 3 * h for h in range(120)]
    report = backtest(trend)
    assert report["trust"] is True and report["skill"] > 0.9
    cycle = [100 + 40 * math.sin(2 * math.pi * h / 24) for h in range(120)]
    flat = backtest(cycle)  # the naive forecast is exact: Holt cannot beat it
    assert flat["trust"] is False and flat["skill"] is None and flat["mae_model"] > 1


def test_prediction_needs_history() -> None:
    assert prediction([1.0] * 3, [10.0] * 3)["method"] == "insufficient_data"
    full = prediction([1.0] * 96, RECORDED[:96])
    assert full["horizon_hours"] == 24 and full["hours_of_history"] == 96
    assert full["availability"]["expected"] == 1.0
    latency = full["latency_ms"]
    assert latency["lower"] <= latency["expected"] <= latency["upper"]
    assert latency["backtest"]["origins"] == 2 and len(latency["hourly_upper"]) == 24
