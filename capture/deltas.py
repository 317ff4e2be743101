"""A flow's counters since the last drain become a records.FlowDelta (with its health fields and,
unnamed, a port guess marked as such), credit both hosts, and start again from zero. Pure."""
from capture import tcp_later
from capture.peek import port_guess
from records import FlowDelta, Rollup, ip_text


def take(flow, closed, hosts, guess_ports):
    """The FlowDelta of `flow` (a capture/flows.py Flow); adds its bytes and frames to `hosts`
    {address: [tx bytes, rx bytes, tx frames, rx frames]} and resets its counters."""
    orig, resp = flow.orig, flow.resp
    proto, a, ap, b, bp = flow.key
    a, b = ip_text(a), ip_text(b)
    app, source = flow.app, "dpi"
    if not app:
        app = port_guess(proto, ap, bp) if guess_ports else ""
        source = "port" if app else ""
    delta = FlowDelta(proto, a, ap, b, bp, flow.first_seen, max(orig[2], resp[2]),
                      orig[0], orig[1], resp[0], resp[1], orig[3] | resp[3], flow.iface, closed,
                      None, None, None, None, app, source, flow.server_name, "", "",
                      *tcp_later.fields(flow))
    for host, tx, rx in ((a, orig, resp), (b, resp, orig)):
        h = hosts.get(host)
        if h is None:
            h = hosts[host] = [0, 0, 0, 0]
        h[0] += tx[0]
        h[1] += rx[0]
        h[2] += tx[1]
        h[3] += rx[1]
    orig[8] -= orig[0]          # the open second's growth (bytes - bytes_before) outlives the reset
    resp[8] -= resp[0]
    orig[0] = orig[1] = orig[3] = resp[0] = resp[1] = resp[3] = 0
    flow.flushed = True
    return delta


def flows_only(bucket, flows, hosts):
    """A rollup of flow deltas and their hosts alone (its own dicts, not the shared defaults)."""
    return Rollup(bucket, flows, hosts, {}, {}, {}, {}, {}, {}, {}, [])
