#!/usr/bin/env python3
"""Forecast backtest (issue 16): the weekly-profile model (foresight/forecast.py) against
seasonal-naive on a generated 8-week hourly history, walked forward day by day over the last two
weeks: each midnight, the next 24 hours are forecast from everything before them.

  python bench/forecast.py [--seed N] [--weeks 8]

The history: a daily shape (quiet nights, a working-day hump, an evening peak), weekends at 40%,
a trend of +1% a week, multiplicative noise (sd 15%), and a holiday week (week 5 of 8, at 35%):
the week seasonal-naive copies into the week after it. Prints the MAPE of both over the last two
weeks and how many actual hours fell inside the 80% and 95% bands (issue 16 asks for 90-98% in
the 95% band). Figures: docs/FORESIGHT.md.
"""
import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from foresight.forecast import DAY_HOURS, forecast, mape, seasonal_naive  # noqa: E402

START = pd.Timestamp("2026-09-07", tz="UTC")      # a Monday


def history(weeks=8, seed=1, holiday_week=4):
    """Bytes per hour: daily and weekly shape, trend, noise and one holiday week."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(START, periods=weeks * 7 * DAY_HOURS, freq="h")
    hour, day = index.hour.to_numpy(), index.day_of_week.to_numpy()
    shape = 0.15 + 0.6 * np.exp(-((hour - 11) / 3.5) ** 2) + 0.9 * np.exp(-((hour - 20.5) / 2.0) ** 2)
    weekly = np.where(day >= 5, 0.4, 1.0)
    weeks_in = np.arange(len(index)) / (7 * DAY_HOURS)
    trend = 1.01 ** weeks_in
    holiday = np.where(np.floor(weeks_in) == holiday_week, 0.35, 1.0)
    noise = rng.lognormal(mean=0.0, sigma=0.15, size=len(index))
    return pd.Series(2e9 * shape * weekly * trend * holiday * noise, index=index)


def backtest(series, days=14):
    model, naive, inside80, inside95, hours = [], [], 0, 0, 0
    for k in range(days, 0, -1):
        end = len(series) - k * DAY_HOURS
        past, actual = series.iloc[:end], series.iloc[end:end + DAY_HOURS]
        f = forecast(past, DAY_HOURS)
        model.append(mape(actual, f["forecast"]))
        naive.append(mape(actual, seasonal_naive(past, DAY_HOURS)))
        a = actual.to_numpy()
        inside80 += int(((a >= f["lo80"].to_numpy()) & (a <= f["hi80"].to_numpy())).sum())
        inside95 += int(((a >= f["lo95"].to_numpy()) & (a <= f["hi95"].to_numpy())).sum())
        hours += len(a)
    return float(np.mean(model)), float(np.mean(naive)), inside80 / hours, inside95 / hours


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bench/forecast.py", description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=10, help="histories to backtest (seeds seed..seed+N-1)")
    ap.add_argument("--weeks", type=int, default=8)
    args = ap.parse_args(argv)
    rows = []
    for seed in range(args.seed, args.seed + args.seeds):
        rows.append(backtest(history(args.weeks, seed)))
        m, n, c80, c95 = rows[-1]
        print(f"seed {seed}: MAPE model {m:.1%}, seasonal-naive {n:.1%}; inside the 80% band {c80:.1%}, "
              f"the 95% band {c95:.1%}", flush=True)
    m, n, c80, c95 = (float(np.mean([r[i] for r in rows])) for i in range(4))
    beats = sum(r[0] < r[1] for r in rows)
    print(f"\nmean over {len(rows)} histories: MAPE model {m:.1%} against seasonal-naive {n:.1%} "
          f"(the model better on {beats} of {len(rows)}); inside the 80% band {c80:.1%}, the 95% band {c95:.1%}")
    print(f"issue 16: beats seasonal-naive on MAPE: {'met' if beats == len(rows) else 'NOT met'}; "
          f"95% band covers 90-98%: {'met' if 0.90 <= c95 <= 0.98 and all(0.90 <= r[3] <= 0.98 for r in rows) else 'NOT met'}")
    return 0 if not math.isnan(m) else 1


if __name__ == "__main__":
    sys.exit(main())
