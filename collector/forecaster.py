"""`run.py forecast SUBJECT`: the next 24 hours (hourly) or 7 days of one subject's traffic, with
80% and 95% bands, forecast from the database's hour tier (foresight/forecast.py, pandas)."""
import json
import sys
import time

from runtime.exits import EXIT_OK, UsageError
from storage.db import DatabaseError, connect
from storage.forecasts import history_end, hourly_bytes, parse_subject

def run_forecast(settings, args, now=None):
    """Prints the forecast of args["subject"] over args["horizon"] (text or JSON). Returns the exit status."""
    from foresight.forecast import TooLittleHistory, horizon_points, hourly    # pandas: only this command loads it
    try:
        kind, key = parse_subject(args["subject"])
        con = connect(settings.db, readonly=True)
    except (ValueError, DatabaseError) as e:
        raise UsageError(str(e)) from None
    try:
        now = time.time() if now is None else now
        # whole hours only (the one in progress is not history yet), up to the data's end for an import
        until = history_end(con, now, settings.retention_seconds)
        first, rows = hourly_bytes(con, kind, key, until)
    finally:
        con.close()
    if first is None:
        raise UsageError(f"{args['subject']}: no traffic stored before {time.strftime('%Y-%m-%dT%H:00Z', time.gmtime(until))}")
    series = hourly([b for b, _ in rows], [v for _, v in rows], first, until)
    try:
        out = horizon_points(series, args["horizon"], until)
    except TooLittleHistory as e:
        raise UsageError(f"{args['subject']}: {e}") from None
    if args["format"] == "json":
        json.dump({"subject": args["subject"], "horizon": args["horizon"], "history_hours": len(series),
                   "forecast": out}, sys.stdout)
        sys.stdout.write("\n")
        return EXIT_OK
    step = "%Y-%m-%d" if args["horizon"] == "7d" else "%Y-%m-%dT%H:00Z"
    print(f"{args['subject']}: bytes per {'day' if args['horizon'] == '7d' else 'hour'}, from {len(series)} hours "
          "of history (UTC)")
    print(f"{'start':<18} {'forecast':>14} {'80% band':>29} {'95% band':>29}")
    for r in out:
        print(f"{time.strftime(step, time.gmtime(r['start'])):<18} {r['forecast']:>14,} "
              f"{r['lo80']:>14,}-{r['hi80']:<14,} {r['lo95']:>14,}-{r['hi95']:<14,}")
    return EXIT_OK
