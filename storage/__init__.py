"""The only package that knows SQL. Writing: db (connections, schema, transactions), writer (the
single writer thread), tiers (minute/hour/day rollups), retention, backlog. Reading, one module per
question: hosts, flows, processes, history, interfaces, traffic_types, coverage, alert_log (the
alerts table and what rules measure); they read the tiers through reads (only alert_log's
new-device probes look at the tier tables directly). export renders CSV and JSON; timerange
parses user times."""
