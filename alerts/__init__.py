"""Threshold rules evaluated on the rollups; alert history, delivery (log, table, webhook)."""
