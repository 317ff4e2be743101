"""What a forecast covers and what it needs, without pandas: the API and the command line check
and word these without loading the model (foresight/forecast.py)."""

DAY_HOURS, WEEK_HOURS = 24, 168
HORIZONS = {"24h": 24, "7d": 7 * 24}     # hours ahead; 7d is then given as whole days
MIN_HOURS = 3 * DAY_HOURS          # three days: a daily profile, and a day of errors for its band


class TooLittleHistory(Exception):
    """Not enough hours to forecast from: `needed` more hours of traffic are wanted."""

    def __init__(self, have, needed):
        super().__init__(f"{have} hours of history; a forecast needs {MIN_HOURS} ({needed} more)")
        self.have, self.needed = have, needed
