"""capture/tcp_health.py's implementations against each other, on random segment sequences built
around the next expected numbers (so the short ways are taken often): `see` (with its short ways)
against `_see` (tshark's steps), and the compiled `see`/`_see` (capture/_tcp_health.c) against the
Python reference, every field of both halves after every segment. Apart from tests/test_tcp_health.py,
whose every test runs once per implementation: these compare the implementations themselves."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capture import tcp_health
from tests.tcp_scenarios import ACK, FIN, PSH, RST, SYN

_segment = st.tuples(st.sampled_from("cs"),
                     st.sampled_from([ACK, ACK, ACK, PSH | ACK, SYN, SYN | ACK, FIN | ACK, RST, RST | ACK, 0]),
                     st.integers(-3, 3), st.integers(-3, 3), st.sampled_from([0, 1, 100, 1448, 65535]),
                     st.sampled_from([0, 0, 1, 2, 100, 1448]),
                     # gaps around the 3 ms out-of-order and 20 ms fast-retransmission windows too
                     st.one_of(st.floats(0, 0.05), st.sampled_from([0.0, 0.0029, 0.0031, 0.0099, 0.0101])))


FIELDS = tcp_health.PyHalf.__slots__


def _state(half):
    return [getattr(half, k) for k in FIELDS]


def _replay(segments, isn, ways):
    """Feeds the same segments to each of `ways` [(pair, see-like(h, p, ...))], sequence and
    acknowledgement numbers built around the next expected ones so the short ways are taken
    often, and checks after every segment that all leave the same state."""
    pairs = [pair() for pair, _ in ways]
    ts = 0.0
    for side, flags, dseq, dack, win, n, dt in segments:
        ts += dt
        h0, p0 = pairs[0] if side == "c" else pairs[0][::-1]
        seq = ((h0.nextseq or isn) + dseq * 100) & tcp_health.M
        ack = ((p0.nextseq or isn) + dack * 100) & tcp_health.M
        for (c, s), (_, see) in zip(pairs, ways):
            h, p = (c, s) if side == "c" else (s, c)
            see(h, p, ts, flags, seq, ack, win, n)
        for c, s in pairs[1:]:
            assert (_state(c), _state(s)) == (_state(pairs[0][0]), _state(pairs[0][1]))
    assert len({tcp_health.rtts(c, s) for c, s in pairs}) == 1


def _py_pair():
    return tcp_health.PyHalf(), tcp_health.PyHalf()


_SEQUENCES = (st.lists(_segment, max_size=60), st.sampled_from([0, 1000, 0xFFFFFF00, 0xFFFFFFFF]))


@settings(max_examples=300, deadline=None)
@given(*_SEQUENCES)
def test_short_ways_agree_with_every_step(segments, isn):
    """`see` (with its short ways) and `_see` (tshark's steps) leave the same state."""
    _replay(segments, isn, [(_py_pair, lambda h, p, *seg: tcp_health.py_see((h, p), *seg)),
                            (_py_pair, tcp_health.py_every_step)])


@pytest.mark.skipif(tcp_health.compiled is None, reason="capture/_tcp_health.c is not built (make builds it)")
@settings(max_examples=500, deadline=None)
@given(*_SEQUENCES)
def test_compiled_leaves_every_field_as_python_does(segments, isn):
    """The compiled `see` and `_see` against the Python reference, field by field."""
    c = tcp_health.compiled

    def c_pair():
        return c.Half(), c.Half()

    _replay(segments, isn, [(_py_pair, tcp_health.py_every_step),
                            (c_pair, lambda h, p, *seg: c.see((h, p), *seg)),
                            (c_pair, c._see)])
