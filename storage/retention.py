"""Retention and housekeeping: build pending tiers, prune each tier past its age in small
batches, and checkpoint the WAL. `maintain` is called periodically by the writer thread (and once
after an import); `now` is passed in, so tests drive it with an injected clock.

Every cutoff is aligned to the next coarser bucket (minutes are pruned in whole hours, hours in
whole days): a coarser bucket is then either fully backed by finer rows or not at all, which is
what lets storage/tiers.py rebuild it exactly.
"""
import logging
import time

from storage import tiers
from storage.db import immediate
from storage.tiers import FAMILIES

log = logging.getLogger("nettally.storage")
BATCH_ROWS = 5000            # rows per delete transaction: the write lock is held a few ms
_FAR_PAST = -2 ** 62
# 1-second points of the live view, all kept retention_seconds (RetentionPolicy.seconds)
_SECONDS = (("iface_seconds", ("iface", "agent")), ("host_seconds", ("ip", "agent")),
            ("process_seconds", ("process_id",)), ("app_seconds", ("app", "service", "traffic_class", "agent")))


def maintain(con, policy, now, budget=0.5, clock=time.monotonic):
    """One round of housekeeping at time `now` (epoch seconds). Works for about `budget` seconds
    of wall time; returns True when there is nothing left to do, False to be called again soon."""
    deadline = clock() + budget
    if not tiers.build_pending(con, deadline, clock):
        return False
    for tier in ("minute", "hour"):
        _raise_watermarks(con, policy, tier, now)
    for family in FAMILIES.values():
        for tier in tiers.TIERS:
            cutoff = policy.cutoff(family.name, tier, now)
            if not _prune(con, tiers.table(family, tier), tier, family.grouped, cutoff, deadline, clock):
                return False
    for name, keys in _SECONDS:
        if not _prune(con, name, "second", keys, int(now - policy.seconds), deadline, clock):
            return False
    flows_cutoff = min(policy.cutoff("flow", t, now) for t in tiers.TIERS)
    if not _prune_rows(con, "DELETE FROM flows WHERE id IN (SELECT id FROM flows WHERE last_seen < ? LIMIT ?)",
                       (flows_cutoff,), deadline, clock, "SELECT 1 FROM flows WHERE last_seen < ? LIMIT 1"):
        return False
    # what is known about addresses ages with the flows: a name or MAC not seen since is dropped
    for table, seen in (("host_names", "seen"), ("host_macs", "last_seen")):
        if not _prune_rows(con, f"DELETE FROM {table} WHERE ip IN (SELECT ip FROM {table} WHERE {seen} < ? LIMIT ?)",
                           (flows_cutoff,), deadline, clock, f"SELECT 1 FROM {table} WHERE {seen} < ? LIMIT 1"):
            return False
    unused = ("DELETE FROM processes WHERE id IN (SELECT p.id FROM processes p WHERE "
              + " AND ".join(f"NOT EXISTS (SELECT 1 FROM {t} x WHERE x.process_id = p.id)"
                             for t in FAMILIES["process"].tables + ("process_seconds",)) + " LIMIT ?)")
    return _prune_rows(con, unused, (), deadline, clock)


def _raise_watermarks(con, policy, tier, now):
    """Moves each family's watermark of `tier` up to its cutoff. In the same transaction, buckets
    still pending below the cutoff are built first, so no finer row is pruned unrolled."""
    coarser = "hour" if tier == "minute" else "day"
    current = tiers.watermarks(con)
    due = {name: policy.cutoff(name, tier, now) for name in FAMILIES}
    due = {name: c for name, c in due.items() if c > current.get((name, tier), _FAR_PAST)}
    if not due:
        return
    below = max(due.values())
    with immediate(con, exclusive=True):
        for built in ("hour", "day")[:1 if coarser == "hour" else 2]:   # hours first: they feed days
            for bucket in tiers.pending(con, built, before=below):
                tiers.rebuild(con, built, bucket, tiers.watermarks(con))
        con.executemany("INSERT INTO tier_watermarks (family, tier, pruned_before) VALUES (?, ?, ?) "
                        "ON CONFLICT (family, tier) DO UPDATE SET pruned_before = excluded.pruned_before",
                        [(name, tier, c) for name, c in due.items()])


def _prune(con, name, column, keys, cutoff, deadline, clock):
    key = ", ".join((column,) + keys)
    sql = f"DELETE FROM {name} WHERE ({key}) IN (SELECT {key} FROM {name} WHERE {column} < ? LIMIT ?)"
    probe = f"SELECT 1 FROM {name} WHERE {column} < ? LIMIT 1"
    return _prune_rows(con, sql, (cutoff,), deadline, clock, probe)


def _prune_rows(con, sql, args, deadline, clock, probe=None):
    if probe is not None and con.execute(probe, args).fetchone() is None:
        return True               # nothing to delete: no write transaction at all
    while True:
        with immediate(con):
            deleted = con.execute(sql, args + (BATCH_ROWS,)).rowcount
        if deleted < BATCH_ROWS:
            return True
        if clock() > deadline:
            return False


def checkpoint(con, wait_ms=200):
    """Copies the WAL back into the database and truncates it, waiting at most `wait_ms` for
    readers. A reader that keeps one snapshot open (a stuck SSE stream) blocks the truncation;
    the result says so instead of the writer waiting on it. Returns (busy, wal_pages, copied)."""
    old = con.execute("PRAGMA busy_timeout").fetchone()[0]
    con.execute(f"PRAGMA busy_timeout = {int(wait_ms)}")
    try:
        busy, pages, copied = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        con.execute(f"PRAGMA busy_timeout = {old}")
    if busy:
        log.warning("storage: WAL checkpoint blocked by a reader (%d pages in the WAL, %d copied)", pages, copied)
    return busy, pages, copied
