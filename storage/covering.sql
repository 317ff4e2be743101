-- Schema version 10 (issue 12): the per-subject indexes of hosts and processes carry the counters
-- (schema.sql, tiers.sql: *_sums), so a page of the hosts or processes list reads its subjects'
-- rows from the index alone; the indexes they replace go.
DROP INDEX IF EXISTS host_minutes_ip;
DROP INDEX IF EXISTS host_hours_ip;
DROP INDEX IF EXISTS process_minutes_process;
DROP INDEX IF EXISTS process_hours_process;
