"""The collector's naming step: every flow delta gets its service and traffic class, and the host
names the capture saw are learnt into the passive map (and passed on to storage in the rollup).

A flow without a server name of its own (no SNI, no Host: ECH, a flow seen from its middle) is
named by what DNS said its server's address is, so a QUIC or TLS flow to an address the host just
resolved as rr3.googlevideo.com still counts as YouTube.
"""
from names.classes import ClassRules
from names.passive import NameMap
from names.services import ServiceRules
from records import Rollup

_MEMO = 65536           # (server name, address) and (app, service, proto, port) answers kept


class Labeller:
    def __init__(self, services, classes, name_map):
        self.services = services
        self.classes = classes
        self.name_map = name_map
        self._service_memo = {}
        self._class_memo = {}

    @classmethod
    def from_settings(cls, settings):
        """The repository's tables plus the user's (settings.services_file, classes_file);
        ValueError (one line) when a user table is bad."""
        return cls(ServiceRules.load(settings.services_file), ClassRules.load(settings.classes_file),
                   NameMap(max_entries=settings.max_names))

    def label(self, rollups):
        """`rollups` with service and traffic_class on every flow delta (a new list; the deltas
        are replaced, never changed in place)."""
        out = []
        for rollup in rollups:
            for address, (name, source, ts) in rollup.names.items():
                self.name_map.learn(address, name, source, ts)
            flows = [self._label(f, rollup.bucket) for f in rollup.flows]
            out.append(rollup._replace(flows=flows))
        return out

    def unnamed_addresses(self, rollups, now):
        """Addresses of these rollups' flows that no name is known for (for reverse DNS)."""
        known = self.name_map.name
        seen = {a for r in rollups for f in r.flows for a in (f.orig_h, f.resp_h)}
        return [a for a in seen if known(a, now) is None]

    def late_labels(self, labelled):
        """Relabel rows for the writer (RollupStore.relabel) from [(Sample, app)] that Wireshark
        named: the class follows the app (a service, when the flow has one, decides in storage)."""
        return [(*s.key, s.first_seen, app, self.classes.traffic_class(app, "", s.key[0], s.key[4]))
                for s, app in labelled]

    def _label(self, f, now):
        name = f.server_name
        if not name:
            known = self.name_map.name(f.resp_h, now)
            name = known[0] if known else ""
        service = self._service(name, f.resp_h)
        port = f.resp_p
        key = (f.app, service, f.proto, port)
        traffic_class = self._class_memo.get(key)
        if traffic_class is None:
            if len(self._class_memo) >= _MEMO:
                self._class_memo.clear()
            traffic_class = self._class_memo[key] = self.classes.traffic_class(f.app, service, f.proto, port)
        return f._replace(service=service, traffic_class=traffic_class)

    def _service(self, name, address):
        key = (name, address)
        service = self._service_memo.get(key)
        if service is None:
            if len(self._service_memo) >= _MEMO:
                self._service_memo.clear()
            service = self._service_memo[key] = self.services.service(name or None, address)
        return service


def add_vendors(rows, vendors):
    """Host rows (with `mac`) get `vendor`: the MAC's vendor, "" where unknown. The same list."""
    for r in rows:
        mac = r.get("mac")
        r["vendor"] = vendors.vendor(mac) if mac else ""
    return rows


def unnamed_rollup(now, reasons):
    """A rollup that carries only counts of flows left unnamed, by reason, in the minute of `now`."""
    return Rollup(int(now // 60 * 60), [], {}, {}, {}, unnamed=dict(reasons))


def names_rollup(now, names):
    """A rollup that carries only host names {address: (name, source, ts)}, in the minute of `now`."""
    return Rollup(int(now // 60 * 60), [], {}, {}, {}, names=dict(names))
