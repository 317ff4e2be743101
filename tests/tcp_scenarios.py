"""Hand-made TCP segment sequences with the numbers tshark 4.0 gives them, for the analyzer's
exact tests (tests/test_tcp_health.py) and for tshark itself to confirm (the oracle test writes
them to a pcap and reads tshark's analysis back).

A scenario is (segments, expected): segments [(t, side, flags, seq, ack, window, payload length)]
with side "c" (the client, which sends first) or "s"; expected {rtt_ms, retransmits,
out_of_order, zero_windows, resets}.
"""
import struct

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
C_ISN, S_ISN = 1000, 5000
M = 0xFFFFFFFF


def handshake(rtt_half=0.030, c_isn=C_ISN, s_isn=S_ISN, t0=0.0):
    """SYN at t0, SYN-ACK rtt_half later, the ACK 0.1 ms after that."""
    return [(t0, "c", SYN, c_isn, 0, 64240, 0),
            (t0 + rtt_half, "s", SYN | ACK, s_isn, (c_isn + 1) & M, 65160, 0),
            (t0 + rtt_half + 0.0001, "c", ACK, (c_isn + 1) & M, (s_isn + 1) & M, 502, 0)]


def _data(t, side, seq, ack, n=100, win=502):
    return (t, side, PSH | ACK, seq & M, ack & M, win, n)


def _ack(t, side, seq, ack, win=509):
    return (t, side, ACK, seq & M, ack & M, win, 0)


def _scenarios():
    c, s = C_ISN + 1, S_ISN + 1
    hs = handshake()
    out = {}
    out["clean"] = (hs + [_data(0.031, "c", c, s), _ack(0.061, "s", s, c + 100),
                          (0.062, "c", FIN | ACK, c + 100, s, 502, 0), (0.092, "s", FIN | ACK, s, c + 101, 509, 0),
                          _ack(0.0921, "c", c + 101, s + 1)],
                    dict(rtt_ms=30.1, retransmits=0, out_of_order=0, zero_windows=0, resets=0))
    out["timeout_retransmission"] = (
        hs + [_data(0.031, "c", c, s), _data(0.032, "c", c + 100, s), _ack(0.061, "s", s, c + 100),
              _data(0.300, "c", c + 100, s), _ack(0.330, "s", s, c + 200)],
        dict(rtt_ms=30.1, retransmits=1, out_of_order=0, zero_windows=0, resets=0))
    out["fast_retransmission"] = (
        hs + [_data(0.031 + i * 0.0001, "c", c + 100 * i, s) for i in range(5)]
        + [_ack(0.0610, "s", s, c + 100), _ack(0.0612, "s", s, c + 100), _ack(0.0613, "s", s, c + 100),
           _ack(0.0614, "s", s, c + 100), _data(0.0620, "c", c + 100, s), _ack(0.0920, "s", s, c + 500)],
        dict(rtt_ms=30.1, retransmits=1, out_of_order=0, zero_windows=0, resets=0))
    out["spurious_retransmission"] = (
        hs + [_data(0.031, "c", c, s), _ack(0.061, "s", s, c + 100), _data(0.200, "c", c, s)],
        dict(rtt_ms=30.1, retransmits=1, out_of_order=0, zero_windows=0, resets=0))
    out["out_of_order"] = (
        hs + [_data(0.031, "c", c + 100, s), _data(0.0312, "c", c, s), _ack(0.062, "s", s, c + 200)],
        dict(rtt_ms=30.1, retransmits=0, out_of_order=1, zero_windows=0, resets=0))
    out["zero_window"] = (
        hs + [_data(0.031, "c", c, s), _ack(0.061, "s", s, c + 100, win=0),
              _data(0.300, "c", c + 100, s, n=1),                   # a zero window probe
              _ack(0.330, "s", s, c + 100, win=0),                  # its ACK, still zero
              _ack(0.500, "s", s, c + 100, win=509),                # the window opens
              _data(0.501, "c", c + 100, s, n=100), _ack(0.531, "s", s, c + 200)],
        dict(rtt_ms=30.1, retransmits=0, out_of_order=0, zero_windows=2, resets=0))
    out["reset"] = (hs + [_data(0.031, "c", c, s), (0.061, "s", RST | ACK, s, c + 100, 0, 0)],
                    dict(rtt_ms=30.1, retransmits=0, out_of_order=0, zero_windows=0, resets=1))
    wrap = M - 49                                               # the client's sequence numbers wrap
    out["wraparound"] = (
        handshake(c_isn=wrap) + [_data(0.031, "c", wrap + 1, s, n=1000), _data(0.032, "c", wrap + 1001, s, n=1000),
                                 _ack(0.062, "s", s, wrap + 2001), _data(0.063, "c", wrap + 2001, s, n=1000),
                                 _data(0.400, "c", wrap + 2001, s, n=1000), _ack(0.430, "s", s, wrap + 3001)],
        dict(rtt_ms=30.1, retransmits=1, out_of_order=0, zero_windows=0, resets=0))
    out["mid_stream"] = (
        [_data(10.0, "c", 77777, 99999), _ack(10.02, "s", 99999, 77877), _data(10.021, "c", 77877, 99999),
         _data(10.3, "c", 77877, 99999)],
        dict(rtt_ms=None, retransmits=1, out_of_order=0, zero_windows=0, resets=0))
    out["syn_retransmitted"] = (
        [(0.0, "c", SYN, C_ISN, 0, 64240, 0)] + handshake(t0=1.0),
        dict(rtt_ms=30.1, retransmits=1, out_of_order=0, zero_windows=0, resets=0))
    out["half_open"] = ([(0.0, "c", SYN, C_ISN, 0, 64240, 0), (0.03, "s", SYN | ACK, S_ISN, C_ISN + 1, 65160, 0)],
                        dict(rtt_ms=None, retransmits=0, out_of_order=0, zero_windows=0, resets=0))
    out["keepalive"] = (
        hs + [_data(0.031, "c", c, s), _ack(0.061, "s", s, c + 100),
              _ack(60.0, "c", c + 99, s), _ack(60.03, "s", s, c + 100),               # keep-alive and its ACK
              (120.0, "c", PSH | ACK, c + 99, s, 502, 1), _ack(120.03, "s", s, c + 100)],
        dict(rtt_ms=30.1, retransmits=0, out_of_order=0, zero_windows=0, resets=0))
    out["ports_reused"] = (
        hs + [_data(0.031, "c", c, s), _ack(0.061, "s", s, c + 100), (0.062, "c", RST | ACK, c + 100, s, 0, 0)]
        + handshake(rtt_half=0.010, c_isn=900_000, s_isn=800_000, t0=5.0)
        + [_data(5.011, "c", 900_001, 800_001)],
        dict(rtt_ms=30.1, retransmits=0, out_of_order=0, zero_windows=0, resets=1))
    out["missing_segments"] = (
        hs + [_data(0.031, "c", c, s), _data(0.032, "c", c + 300, s),                 # 200 bytes never captured
              _ack(0.062, "s", s, c + 100), _ack(0.063, "s", s, c + 100), _data(0.5, "c", c + 100, s, n=200),
              _ack(0.53, "s", s, c + 400)],
        dict(rtt_ms=30.1, retransmits=1, out_of_order=0, zero_windows=0, resets=0))
    return out


SCENARIOS = _scenarios()
SYN_FLOOD = {f"flood{i:02d}": [(i * 0.001, "c", SYN, (i * 7919) & M, 0, 1024, 0)] for i in range(50)}


def pcap(path, flows, t0=1_700_000_000.0):
    """Writes flows {name: segments} to an Ethernet/IPv4 pcap, each flow its own client port."""
    records = []
    for port, (_name, segments) in enumerate(sorted(flows.items()), start=20000):
        for t, side, flags, seq, ack, win, n in segments:
            src, dst, sport, dport = ((b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", port, 80) if side == "c" else
                                      (b"\x0a\x00\x00\x02", b"\x0a\x00\x00\x01", 80, port))
            tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 0x50, flags, win, 0, 0)
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + n, 0, 0x4000, 64, 6, 0, src, dst)
            frame = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + tcp + bytes(n)
            records.append((t0 + t, frame))
    records.sort(key=lambda r: r[0])
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1))        # nanosecond pcap
        for ts, frame in records:
            sec = int(ts)
            f.write(struct.pack("<IIII", sec, round((ts - sec) * 1e9), len(frame), len(frame)) + frame)
