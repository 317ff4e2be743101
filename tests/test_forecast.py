"""foresight/forecast.py, pure: hourly series from stored buckets, the weekly-profile forecast and
its bands, exact on series whose future is known, and the backtest of bench/forecast.py on two
generated histories (issue 16: beat seasonal-naive on MAPE, the 95% band covering 90-98%)."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from foresight.forecast import MIN_HOURS, TooLittleHistory, forecast, hourly, mape, point, seasonal_naive

T0 = 1_788_739_200          # 2026-09-07 00:00 UTC, a Monday


def weekly_pattern(weeks, scale_last_week=1.0):
    """Each hour of the week its own value (1 + hour of week), repeated exactly."""
    base = np.tile(np.arange(1, 169, dtype=float), weeks)
    base[-168:] *= scale_last_week
    return pd.Series(base, index=pd.date_range(pd.Timestamp(T0, unit="s", tz="UTC"), periods=len(base), freq="h"))


def test_hourly_fills_hours_without_rows_with_zero_and_adds_up_a_bucket():
    s = hourly([T0 + 3600, T0 + 3600, T0 + 3 * 3600], [5, 7, 1], T0, T0 + 5 * 3600)
    assert s.tolist() == [0.0, 12.0, 0.0, 1.0, 0.0]
    assert s.index[0] == pd.Timestamp(T0, unit="s", tz="UTC") and len(s) == 5


def test_too_little_history_says_how_much_more_is_needed():
    with pytest.raises(TooLittleHistory) as e:
        forecast(weekly_pattern(1).iloc[:50], 24)
    assert (e.value.have, e.value.needed) == (50, MIN_HOURS - 50)
    assert "a forecast needs 72 (22 more)" in str(e.value)


def test_an_exactly_weekly_series_is_forecast_exactly_with_a_band_of_no_width():
    f = forecast(weekly_pattern(5), 48)
    assert f["forecast"].tolist() == list(np.arange(1, 49, dtype=float))         # Monday 00:00 on
    for band in ("lo80", "hi80", "lo95", "hi95"):
        assert f[band].tolist() == f["forecast"].tolist()
    assert f.index[0] == pd.Timestamp(T0 + 5 * 7 * 86400, unit="s", tz="UTC")


def test_the_level_follows_the_last_week_and_one_odd_week_does_not_move_the_profile():
    doubled = point(weekly_pattern(5, scale_last_week=2.0), 24)
    assert doubled.tolist() == list(2.0 * np.arange(1, 25))        # median profile x the last week's level
    odd = weekly_pattern(6)
    odd.iloc[3 * 168:4 * 168] *= 0.3                                 # a holiday week, two weeks back
    assert point(odd, 24).tolist() == list(np.arange(1.0, 25.0))


def test_with_less_than_two_weeks_the_profile_is_daily():
    days = pd.Series(np.tile(np.arange(24, dtype=float) + 1, 5),
                     index=pd.date_range(pd.Timestamp(T0, unit="s", tz="UTC"), periods=120, freq="h"))
    assert forecast(days, 24)["forecast"].tolist() == list(np.arange(1.0, 25.0))
    assert seasonal_naive(days, 30).tolist() == list(np.arange(1.0, 25.0)) + list(np.arange(1.0, 7.0))


def test_mape_counts_only_hours_with_traffic():
    assert mape([10, 0, 20], [12, 5, 10]) == pytest.approx((0.2 + 0.5) / 2)


def test_backtest_beats_seasonal_naive_and_the_95_band_covers_90_to_98_percent():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import forecast as bench
    for seed in (1, 2):
        model, naive, inside80, inside95 = bench.backtest(bench.history(8, seed))
        assert model < naive and 0.90 <= inside95 <= 0.98 and 0.70 <= inside80 <= 0.90, (seed, model, naive,
                                                                                          inside80, inside95)
