"""Per-second flow-side points (records.Activity) charged to processes (SecondOwners) and
counted by app (SecondApps), for the live view's "now" and 1-second peak of processes and apps.

The capture hands on each second's bytes per flow side, by 5-tuple, within about a second; the
attribution join decides a flow's processes when its first rollup arrives (every
flush_interval). So the owners of each flow, as the attributed rollups charged them, are kept
by 5-tuple; a point of a flow no rollup has named yet is held until the next rollups are
learnt, then charged or left out (a side still waiting for its socket, attribution/service.py
GRACE, is charged to its process in the tiers by a correction later, not here). A flow
between two local processes credits both, as the process tiers do: each process's tx is what
it sent.
"""

HELD_MAX = 200_000            # points of unnamed flows held at once (a flood of new flows cannot grow it)


class SecondOwners:
    def __init__(self):
        self.owners = {}          # (proto, orig_h, orig_p, resp_h, resp_p) -> (orig ProcessKey | None, resp ...)
        self.by_pid = {}          # pid -> ProcessKey last charged (a delta carries the pid only)
        self._closing = []        # flows whose record ended in the last rollups learnt
        self.held = []            # points of flows not named yet
        self.left_out = 0         # points held and still unnamed at the next rollups, or beyond HELD_MAX

    def learn(self, rollups):
        """Owners from attributed rollups (attribution.join.charge's output); returns the process
        points of the held points this names: [(second, ProcessKey, tx_bytes, rx_bytes)]."""
        owners = self.owners
        for key in self._closing:       # kept one round: points of their last seconds come after them
            owners.pop(key, None)
        self._closing = []
        for r in rollups:
            for key in r.processes:
                self.by_pid[key.pid] = key
            for f in r.flows:
                key = (f.proto, f.orig_h, f.orig_p, f.resp_h, f.resp_p)
                orig = self.by_pid.get(f.orig_pid) if f.orig_pid is not None else None
                resp = self.by_pid.get(f.resp_pid) if f.resp_pid is not None else None
                if orig is not None or resp is not None:
                    owners[key] = (orig, resp)
                if f.closed:
                    self._closing.append(key)
        if len(self.by_pid) > 2 * len(owners) + 1024:
            alive = {k.pid for o in owners.values() for k in o if k is not None}
            self.by_pid = {pid: k for pid, k in self.by_pid.items() if pid in alive}
        held, self.held = self.held, []
        out, unnamed = self._charge(held)
        self.left_out += len(unnamed)
        return out

    def charge(self, points):
        """Process points of flow-side points [(second, proto, src, sport, dst, dport, bytes)];
        points of flows not named yet are held for learn()."""
        out, unnamed = self._charge(points)
        room = HELD_MAX - len(self.held)
        self.held.extend(unnamed[:room])
        self.left_out += max(0, len(unnamed) - room)
        return out

    def _charge(self, points):
        owners, sums, unnamed = self.owners, {}, []
        for point in points:
            second, proto, src, sport, dst, dport, n = point
            o = owners.get((proto, src, sport, dst, dport))
            if o is not None:
                sender, receiver = o
            else:
                o = owners.get((proto, dst, dport, src, sport))
                if o is None:
                    unnamed.append(point)
                    continue
                receiver, sender = o
            if sender is not None:
                _add(sums, (second, sender), n, 0)
            if receiver is not None:
                _add(sums, (second, receiver), 0, n)
        return [(second, key, tx, rx) for (second, key), (tx, rx) in sums.items()], unnamed


def _add(sums, key, tx, rx):
    have = sums.get(key)
    if have is None:
        sums[key] = [tx, rx]
    else:
        have[0] += tx
        have[1] += rx


class SecondApps:
    """Flow-side points -> per-second bytes of apps, keyed (app, service, traffic_class) as the
    app tier is: the labels the flow's labelled rollups carry (names.label.Labeller's output),
    the latest one learnt. A late label from Wireshark (RollupStore.relabel) renames the flow
    record only, as in the app tier, so a row's now and peak count what its bytes count. A point
    of a flow no rollup has carried yet is held until the next rollups are learnt, then counted
    or left out, as SecondOwners does. The map holds the flows of the capture's table (bounded
    by max_flows: a flow leaving it comes with closed set) plus those closed in the last round.
    """

    def __init__(self):
        self.apps = {}            # (proto, orig_h, orig_p, resp_h, resp_p) -> (app, service, traffic_class)
        self._closing = set()     # flows whose record ended in the last rollups learnt
        self.held = []            # points of flows not named yet
        self.left_out = 0         # points held and still unnamed at the next rollups, or beyond HELD_MAX

    def learn(self, rollups):
        """Apps from labelled rollups; returns the app points of the held points this names:
        [(second, app, service, traffic_class, bytes)]."""
        apps = self.apps
        for key in self._closing:       # kept one round: points of their last seconds come after them
            apps.pop(key, None)
        closing = self._closing = set()
        for r in rollups:
            for f in r.flows:
                key = (f.proto, f.orig_h, f.orig_p, f.resp_h, f.resp_p)
                apps[key] = (f.app, f.service, f.traffic_class)
                if f.closed:
                    closing.add(key)
                else:                   # the 5-tuple came back as a new flow
                    closing.discard(key)
        held, self.held = self.held, []
        out, unnamed = self._count(held)
        self.left_out += len(unnamed)
        return out

    def charge(self, points):
        """App points of flow-side points [(second, proto, src, sport, dst, dport, bytes)], both
        sides of a flow adding to its app; points of flows not named yet are held for learn()."""
        out, unnamed = self._count(points)
        room = HELD_MAX - len(self.held)
        self.held.extend(unnamed[:room])
        self.left_out += max(0, len(unnamed) - room)
        return out

    def _count(self, points):
        apps, sums, unnamed = self.apps, {}, []
        for point in points:
            second, proto, src, sport, dst, dport, n = point
            app = apps.get((proto, src, sport, dst, dport)) or apps.get((proto, dst, dport, src, sport))
            if app is None:
                unnamed.append(point)
                continue
            key = (second, *app)
            sums[key] = sums.get(key, 0) + n
        return [(*key, n) for key, n in sums.items()], unnamed
