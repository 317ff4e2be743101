"""Foresight (issue 16): forecasts of hourly traffic from the stored tiers, with pandas."""
