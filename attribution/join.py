"""The join of flows to processes. Pure: plain values in, plain values out.

Each side of a flow (orig, resp) is a *local endpoint* when its address is one of this host's own
(all interfaces of the capturing network namespace, IPv4 and IPv6). A decision for a side is
  - a records.ProcessKey: the process owning the socket; its tx is what that side sent;
  - a reason string (records.REASONS): local, but not charged to a process;
  - None: not a local endpoint.

Accounting, per flow delta (bytes = orig_bytes + resp_bytes, likewise packets):
  - a charged side adds [tx_bytes, rx_bytes, tx_packets, rx_packets] to its process and the
    delta's bytes to `attributed`;
  - an uncharged local side adds the delta's bytes to its reason;
  - a delta with no local side adds its bytes to `no_local_endpoint`, once.
A flow between two local processes (over lo) is charged to both. So `attributed` always equals
the sum of tx_bytes + rx_bytes over processes, and coverage is
attributed / (attributed + every reason but no_local_endpoint).
"""
from records import ATTRIBUTED, NO_LOCAL_ENDPOINT, ProcessKey

from attribution.table import candidate_keys

LOCAL, OTHER = "local", "other"


def side_places(delta, own, other_ns):
    """(orig place, resp place): LOCAL for an address of this namespace, OTHER for one of
    another network namespace on this host, else None."""
    return (_place(delta.orig_h, own, other_ns), _place(delta.resp_h, own, other_ns))


def _place(addr, own, other_ns):
    if addr in own:
        return LOCAL
    if addr in other_ns:
        return OTHER
    return None


def endpoint(delta, side):
    """(proto, local addr, local port, remote addr, remote port) of side 0 (orig) or 1 (resp)."""
    if side == 0:
        return delta.proto, delta.orig_h, delta.orig_p, delta.resp_h, delta.resp_p
    return delta.proto, delta.resp_h, delta.resp_p, delta.orig_h, delta.orig_p


def find_owner(lookup, proto, laddr, lport, raddr, rport):
    """The first value `lookup(key)` gives for the endpoint's candidate keys (connected socket,
    then bound/listening ones), or None."""
    for key in candidate_keys(proto, laddr, lport, raddr, rport):
        found = lookup(key)
        if found is not None:
            return found
    return None


def charge(rollup, decisions):
    """`rollup` with pids and process names on its flow deltas, `processes` and `attribution`
    filled. `decisions[i]` is (orig decision, resp decision) for rollup.flows[i]."""
    processes, attribution, flows = {}, {}, []
    for delta, (orig, resp) in zip(rollup.flows, decisions):
        nbytes = delta.orig_bytes + delta.resp_bytes
        npackets = delta.orig_packets + delta.resp_packets
        changes = {}
        if orig is None and resp is None:
            if npackets:
                _add(attribution, NO_LOCAL_ENDPOINT, nbytes, npackets)
            flows.append(delta)
            continue
        for side, decision in ((0, orig), (1, resp)):
            if decision is None:
                continue
            if isinstance(decision, ProcessKey):
                name = "orig" if side == 0 else "resp"
                changes[f"{name}_pid"] = decision.pid
                changes[f"{name}_process"] = decision.name
                if npackets:
                    _add_process(processes, decision, side_counters(delta, side))
                    _add(attribution, ATTRIBUTED, nbytes, npackets)
            elif npackets:
                _add(attribution, decision, nbytes, npackets)
        flows.append(delta._replace(**changes) if changes else delta)
    return rollup._replace(flows=flows, processes=processes, attribution=attribution)


def side_counters(delta, side):
    """[tx_bytes, rx_bytes, tx_packets, rx_packets] of one side of a flow delta."""
    if side == 0:
        return [delta.orig_bytes, delta.resp_bytes, delta.orig_packets, delta.resp_packets]
    return [delta.resp_bytes, delta.orig_bytes, delta.resp_packets, delta.orig_packets]


def moved(rollup_type, bucket, moves):
    """A correction rollup for one past bucket: bytes first counted under a reason that were
    later found to belong to a process. `moves` is [(ProcessKey, reason, counters, flow delta
    stub)]: the process gains the counters, `attributed` gains their bytes and the reason loses
    them; the stub (a zero-count FlowDelta with the flow's key) carries the pid to the flow row."""
    processes, attribution, flows = {}, {}, []
    for key, reason, counters, stub in moves:
        _add_process(processes, key, counters)
        nbytes, npackets = counters[0] + counters[1], counters[2] + counters[3]
        _add(attribution, ATTRIBUTED, nbytes, npackets)
        _add(attribution, reason, -nbytes, -npackets)
        flows.append(stub)
    return rollup_type(bucket, flows, {}, {}, {}, processes, attribution)


def coverage(attribution):
    """Attributed share of local bytes, from an attribution dict; None without local bytes."""
    local = sum(v[0] for k, v in attribution.items() if k != NO_LOCAL_ENDPOINT)
    return attribution.get(ATTRIBUTED, [0, 0])[0] / local if local else None


def _add(attribution, reason, nbytes, npackets):
    c = attribution.get(reason)
    if c is None:
        attribution[reason] = [nbytes, npackets]
    else:
        c[0] += nbytes
        c[1] += npackets


def _add_process(processes, key, counters):
    c = processes.get(key)
    if c is None:
        processes[key] = list(counters)
    else:
        for i in range(4):
            c[i] += counters[i]

