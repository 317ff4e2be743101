"""Per-second points of the live view's now and peak, from the directions that sent in one second:
each marked direction's growth (its bytes now less its bytes when the second began) becomes a
flow-side point and credits the sender's host as tx and the receiver's as rx. Pure."""
from records import ip_text


def points(second, touched):
    """(second, host points [(second, ip, tx, rx)], flow-side points [(second, proto, src, sport,
    dst, dport, bytes)]) of `touched` [(key, direction)], text addresses; None if none grew."""
    hosts, flows, text = {}, [], {}
    for key, c in touched:
        n = c[0] - c[8]
        if n <= 0:
            continue
        proto, src, sport, dst, dport = key
        a = text.get(src)
        if a is None:
            a = text[src] = ip_text(src)
        b = text.get(dst)
        if b is None:
            b = text[dst] = ip_text(dst)
        flows.append((second, proto, a, sport, b, dport, n))
        h = hosts.get(a)
        if h is None:
            h = hosts[a] = [0, 0]
        h[0] += n
        h = hosts.get(b)
        if h is None:
            h = hosts[b] = [0, 0]
        h[1] += n
    if not flows:
        return None
    return second, [(second, ip, tx, rx) for ip, (tx, rx) in hosts.items()], flows
