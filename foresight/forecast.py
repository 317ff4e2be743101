"""Hourly traffic forecasts with prediction bands: pure, a pandas Series of bytes per hour in
(complete, hourly, UTC), a forecast frame out. No I/O, no clock: the caller reads the stored tier
and says when "now" is.

The model is a weekly profile: each hour of the week forecast as the median of that hour over the
last PROFILE_WEEKS weeks (robust to one odd week: a holiday, an outage), times the level of the
last 7 days against the profile's weeks (the trend). With less than two weeks of history it is a
daily profile over the last days instead. The band comes from the model's own errors: it is
walked forward over the history it has (forecasting each past day from the days before it), and
the errors' quantiles, relative to the forecast, give the 80% and 95% bands.

The baseline the model must beat is seasonal-naive: each hour forecast as the same hour a week
(or a day) before. bench/forecast.py backtests both (docs/FORESIGHT.md).
"""
import pandas as pd

from foresight.horizons import DAY_HOURS, HORIZONS, MIN_HOURS, WEEK_HOURS, TooLittleHistory

HOUR = pd.Timedelta(hours=1)
PROFILE_WEEKS = 4
ERROR_DAYS = 7                     # the last week of walked-forward errors makes the band (every weekday once)
LEVELS = {"80": (0.10, 0.90), "95": (0.025, 0.975)}


def hourly(buckets, values, start, end):
    """The complete hourly series [start, end) from stored (bucket start, bytes) pairs: hours
    without a row are hours without traffic (0), as the tiers store them."""
    index = pd.date_range(pd.Timestamp(start, unit="s", tz="UTC"), pd.Timestamp(end, unit="s", tz="UTC"),
                          freq="h", inclusive="left")
    given = pd.Series(values, index=pd.to_datetime(list(buckets), unit="s", utc=True), dtype="float64")
    return given.groupby(level=0).sum().reindex(index, fill_value=0.0)


def seasonal_naive(history, hours):
    """The baseline: each hour as the same hour one season before (a week with two weeks of
    history, else a day)."""
    season = WEEK_HOURS if len(history) >= 2 * WEEK_HOURS else DAY_HOURS
    last = history.iloc[-season:].to_numpy()
    values = [last[k % season] for k in range(hours)]
    return pd.Series(values, index=_ahead(history, hours), dtype="float64")


def point(history, hours):
    """The model's forecast of the next `hours` hours (a Series on their hourly index)."""
    weekly = len(history) >= 2 * WEEK_HOURS
    season = WEEK_HOURS if weekly else DAY_HOURS
    seasons = min(PROFILE_WEEKS if weekly else 7, len(history) // season)
    recent = history.iloc[-seasons * season:]
    slot = _slot(recent.index, weekly)
    profile = recent.groupby(slot).median()
    # the level: the last week (or days) against the profile over the same hours of the season
    tail = history.iloc[-min(len(history), WEEK_HOURS if weekly else season):]
    expected = profile.reindex(_slot(tail.index, weekly)).to_numpy().sum()
    level = tail.sum() / expected if expected > 0 else 1.0
    ahead = _ahead(history, hours)
    return pd.Series(profile.reindex(_slot(ahead, weekly)).to_numpy() * level, index=ahead, dtype="float64")


def forecast(history, hours):
    """A frame on the next `hours` hours: `forecast` and the bands `lo80`, `hi80`, `lo95`,
    `hi95` (bytes per hour, never below 0). TooLittleHistory below MIN_HOURS."""
    if len(history) < MIN_HOURS:
        raise TooLittleHistory(len(history), MIN_HOURS - len(history))
    mid = point(history, hours)
    errors = _relative_errors(history)
    out = pd.DataFrame({"forecast": mid})
    for name, (lo, hi) in LEVELS.items():
        out[f"lo{name}"] = (mid * (1 + errors.quantile(lo))).clip(lower=0.0)
        out[f"hi{name}"] = (mid * (1 + errors.quantile(hi))).clip(lower=0.0)
    return out


def _relative_errors(history, days=ERROR_DAYS):
    """(actual - forecast) / forecast of the model walked forward day by day over the last
    `days` days it can forecast from what came before them."""
    errors = []
    first = max(MIN_HOURS - DAY_HOURS, len(history) - days * DAY_HOURS)
    for end in range(first, len(history) - DAY_HOURS + 1, DAY_HOURS):
        mid = point(history.iloc[:end], DAY_HOURS)
        actual = history.iloc[end:end + DAY_HOURS].to_numpy()
        mask = mid.to_numpy() > 0
        errors.extend((actual[mask] - mid.to_numpy()[mask]) / mid.to_numpy()[mask])
    return pd.Series(errors if errors else [0.0], dtype="float64")


def _slot(index, weekly):
    """Hour of the week (0-167) or of the day (0-23) of each timestamp."""
    return index.day_of_week * DAY_HOURS + index.hour if weekly else index.hour


def _ahead(history, hours):
    return pd.date_range(history.index[-1] + HOUR, periods=hours, freq="h")


def mape(actual, predicted):
    """Mean absolute percentage error over the hours with traffic."""
    actual, predicted = pd.Series(actual).to_numpy(), pd.Series(predicted).to_numpy()
    mask = actual > 0
    return float(abs((actual[mask] - predicted[mask]) / actual[mask]).mean()) if mask.any() else 0.0



def horizon_points(history, horizon, until):
    """The forecast of `history` (ending at the whole hour `until`, epoch seconds) over `horizon`
    ("24h": the next 24 hours; "7d": the next 7 whole UTC days, from the coming midnight), as
    [{start, forecast, lo80, hi80, lo95, hi95}] in whole bytes. TooLittleHistory as forecast()."""
    skip = (24 - until // 3600 % 24) % 24 if horizon == "7d" else 0
    frame = forecast(history, skip + HORIZONS[horizon]).iloc[skip:]
    if horizon == "7d":
        # a day's figures are its hours' sums; its band is then wider than a daily model's would
        # be (the hours' errors partly cancel over a day): on the safe side
        frame = frame.resample("D").sum()
    return [{"start": int(t.timestamp()), **{k: round(float(v)) for k, v in row.items()}}
            for t, row in frame.iterrows()]
