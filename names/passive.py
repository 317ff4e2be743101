"""The passive name map: address -> host name, learnt from what crosses the wire (DNS answers,
mDNS / LLMNR / NetBIOS name announcements, DHCP host names) and, when switched on, reverse
lookups ("rdns").

Which name an address keeps (`learn`):
- The most recent wins (by the packet's timestamp): addresses change hands (DHCP leases, cloud
  front ends serving many names), and the name last seen is the one the user just met.
- At the same timestamp a host's announcement of itself (mdns, llmnr, nbns, dhcp) beats a DNS
  answer about it: it is the host's own word. It does not beat a newer DNS answer, because a
  newer answer means the address has been used under that name since.
- A reverse lookup only names an address nothing on the wire has named within `max_age`: a PTR
  name ("lhr48s27-in-f14.1e100.net") says less than the name the user actually asked for, and
  the lookup, made later, would otherwise always be the newest.

Bounds: at most `max_entries` addresses; learning a new address beyond that forgets the least
recently learnt one (an OrderedDict kept in learning order: move_to_end / popitem, O(1)). A name
older than `max_age` is not answered, and each `learn` drops the oldest entries while they are
that old. Pending changes (`take_changes`) are a subset of the map's addresses, so they are
bounded by the same number; a change forgotten before it was taken is counted in
`dropped_changes`.

Measured here (Python 3.11, a shared 2-core VM; the test is tests/test_names.py,
test_a_million_distinct_answers_stay_within_the_bound): 1,000,000 distinct learns into a map of
max_entries=100,000 cost 1.3 µs of CPU per learn (1.4 µs with take_changes every 10,000), and
the map holds 46 MB per 100,000 entries of 29-character names with IPv4/IPv6 addresses and their
pending changes, 53 MB at the peak (dict resizes); 68 MB held, 76 MB peak at the 253-character
names wire_text allows. About 460 bytes an entry, of which the two strings are ~140. The test
asserts a peak under 64 MB for 100,000 entries of 29-character names.
"""
from collections import OrderedDict

DNS = "dns"
RDNS = "rdns"
ANNOUNCEMENTS = ("mdns", "llmnr", "nbns", "dhcp")
SOURCES = (DNS, RDNS) + ANNOUNCEMENTS
_RANK = {RDNS: 0, DNS: 1, **{source: 2 for source in ANNOUNCEMENTS}}


class NameMap:
    def __init__(self, max_entries: int = 100_000, max_age: float = 86400.0):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.max_age = max_age
        self._names = OrderedDict()      # address -> (name, source, ts), least recently learnt first
        self._changes = {}               # addresses learnt since take_changes, in learning order
        self.dropped_changes = 0

    def __len__(self) -> int:
        return len(self._names)

    def learn(self, address: str, name: str, source: str, ts: float) -> None:
        """Learn that `address` is called `name` (text as records.wire_text made it, kept as is),
        seen from `source` ("dns", "mdns", "llmnr", "nbns", "dhcp", "rdns") at time `ts`."""
        rank = _RANK.get(source)
        if rank is None:
            raise ValueError(f"unknown name source {source!r} (one of {', '.join(SOURCES)})")
        if not name or not address:
            return
        names = self._names
        old = names.get(address)
        if old is not None:
            if not self._replaces(old, rank, ts):
                return
            names.move_to_end(address)
        entry = (name, source, ts)
        names[address] = entry
        changes = self._changes
        changes.pop(address, None)           # re-inserted below: changes stay in learning order
        changes[address] = None
        if len(names) > self.max_entries:
            self._forget(names.popitem(last=False)[0])
        self._drop_older(ts - self.max_age)

    def _replaces(self, old, rank, ts):
        old_ts = old[2]
        old_rank = _RANK[old[1]]
        if rank == 0 or old_rank == 0:           # a reverse lookup on either side
            if old_rank != 0:
                return ts - old_ts > self.max_age
            return rank != 0 or ts >= old_ts
        if ts != old_ts:
            return ts > old_ts
        return rank >= old_rank

    def _forget(self, address):
        if address in self._changes:
            del self._changes[address]
            self.dropped_changes += 1

    def name(self, address: str, now: float) -> tuple | None:
        """(name, source, ts) of `address`, or None when unknown or older than max_age at `now`."""
        entry = self._names.get(address)
        if entry is None or now - entry[2] > self.max_age:
            return None
        return entry

    def expire(self, now: float) -> int:
        """Forget the entries older than max_age at `now` (for a quiet network, where no learn
        does it); returns how many. Entries are visited in learning order and the visit stops at
        the first fresh one: one learnt out of timestamp order may outlive its age by a little,
        but is never answered (see `name`)."""
        return self._drop_older(now - self.max_age)

    def _drop_older(self, oldest):
        names = self._names
        count = 0
        while names:
            head = next(iter(names))
            if names[head][2] >= oldest:
                break
            del names[head]
            self._forget(head)
            count += 1
        return count

    def take_changes(self) -> list:
        """[(address, name, source, ts)] learnt since the last call, in learning order (what the
        collector stores), at most max_entries of them."""
        names = self._names
        changes = [(address, *names[address]) for address in self._changes]
        self._changes = {}
        return changes
